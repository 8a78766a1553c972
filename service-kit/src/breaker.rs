//! A circuit breaker per dependency (the gateway's upstreams, the orchestrator's target
//! contexts): after a run of failures calls are refused at once instead of each waiting for a
//! refused connection or a timeout; after a pause one call probes the dependency, and its
//! success closes the circuit again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Where a circuit stands; the numbers are its state gauge's values (0 closed, 1 open, 2
/// probing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests pass; `failures` in a row so far.
    Closed { failures: u32 },
    /// Requests are refused until `until`.
    Open { until: Instant },
    /// One probe is in flight; everything else is refused until it ends.
    HalfOpen,
}

impl State {
    fn gauge(self) -> f64 {
        match self {
            Self::Closed { .. } => 0.0,
            Self::Open { .. } => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// The metrics a breaker reports under: its state gauge and its refusals counter, each with
/// one label naming the dependency.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    pub state: &'static str,
    pub rejected: &'static str,
    pub label: &'static str,
}

/// The gateway's: `gateway_upstream_circuit{upstream}`, `gateway_upstream_rejected_total`.
pub const UPSTREAM: Metrics = Metrics {
    state: "gateway_upstream_circuit",
    rejected: "gateway_upstream_rejected_total",
    label: "upstream",
};

/// One dependency's circuit.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    open_for: Duration,
    metrics: Metrics,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed circuit for `name` that opens after `threshold` failures in a row, for
    /// `open_for`.
    pub fn new(name: &'static str, threshold: u32, open_for: Duration, metrics: Metrics) -> Self {
        let breaker = Self {
            name,
            threshold,
            open_for,
            metrics,
            state: Mutex::new(State::Closed { failures: 0 }),
        };
        breaker.publish(State::Closed { failures: 0 });
        breaker
    }

    /// May a request go to the upstream now? `Err` holds the seconds to wait.
    pub fn admit(&self) -> Result<(), u64> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                self.publish(*state);
                Ok(())
            }
            State::Open { until } => {
                self.count_refusal();
                Err(until
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1))
            }
            State::HalfOpen => {
                self.count_refusal();
                Err(1)
            }
        }
    }

    /// The upstream answered (with anything but 502, 503 or 504).
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if *state != (State::Closed { failures: 0 }) {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!(dependency = self.name, "circuit closed: it answers again");
            }
            *state = State::Closed { failures: 0 };
            self.publish(*state);
        }
    }

    /// A call was admitted but never made (the work was no longer due): a probe it held is
    /// given back, so the next call probes at once.
    pub fn abandoned(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            *state = State::Open {
                until: Instant::now(),
            };
            self.publish(*state);
        }
    }

    /// The upstream did not answer, or answered that it cannot.
    pub fn failed(&self) {
        let mut state = self.lock();
        let open = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            // A failed probe, or the last straw.
            State::Closed { .. } | State::HalfOpen => true,
            // Requests admitted before the circuit opened end while it is open.
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open {
                until: Instant::now() + self.open_for,
            };
            tracing::warn!(
                dependency = self.name,
                open_for_ms = self.open_for.as_millis() as u64,
                "circuit opened: it keeps failing"
            );
            self.publish(*state);
        }
    }

    pub fn state(&self) -> State {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, state: State) {
        metrics::gauge!(self.metrics.state, self.metrics.label => self.name).set(state.gauge());
    }

    fn count_refusal(&self) {
        metrics::counter!(self.metrics.rejected, self.metrics.label => self.name).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_then_probes_once_and_closes_on_success() {
        let b = Breaker::new("orders", 3, Duration::from_secs(5), UPSTREAM);
        for _ in 0..2 {
            assert_eq!(b.admit(), Ok(()));
            b.failed();
        }
        assert!(matches!(b.state(), State::Closed { failures: 2 }));
        b.failed();
        assert!(matches!(b.state(), State::Open { .. }));
        assert_eq!(b.admit(), Err(5));

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(), Ok(()), "the probe");
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(), Err(1), "one probe at a time");
        b.succeeded();
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert_eq!(b.admit(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_and_a_success_resets_the_count() {
        let b = Breaker::new("query", 2, Duration::from_secs(3), UPSTREAM);
        b.failed();
        b.succeeded();
        b.failed();
        assert!(matches!(b.state(), State::Closed { failures: 1 }));
        b.failed();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(b.admit(), Ok(()));
        b.failed();
        assert!(matches!(b.state(), State::Open { .. }));
        assert_eq!(b.admit(), Err(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_was_never_made_is_given_back() {
        let b = Breaker::new("payments", 1, Duration::from_secs(2), UPSTREAM);
        b.failed();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(), Ok(()), "the probe");
        b.abandoned();
        assert_eq!(b.admit(), Ok(()), "the next call probes at once");
        b.succeeded();
        assert_eq!(b.state(), State::Closed { failures: 0 });
        // Giving back outside a probe changes nothing.
        b.abandoned();
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }
}
