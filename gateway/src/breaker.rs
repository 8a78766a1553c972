//! A circuit breaker per upstream: after a run of failures the upstream's routes answer 503
//! at once instead of each waiting for a refused connection or a timeout; after a pause one
//! request probes it, and its success closes the circuit again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Where a circuit stands; the numbers are the `gateway_upstream_circuit` gauge's values.
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

/// One upstream's circuit.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(name: &'static str, threshold: u32, open_for: Duration) -> Self {
        let breaker = Self {
            name,
            threshold,
            open_for,
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
                metrics::counter!("gateway_upstream_rejected_total", "upstream" => self.name)
                    .increment(1);
                Err(until
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1))
            }
            State::HalfOpen => {
                metrics::counter!("gateway_upstream_rejected_total", "upstream" => self.name)
                    .increment(1);
                Err(1)
            }
        }
    }

    /// The upstream answered (with anything but 502, 503 or 504).
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if *state != (State::Closed { failures: 0 }) {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!(upstream = self.name, "circuit closed: the upstream answers");
            }
            *state = State::Closed { failures: 0 };
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
                upstream = self.name,
                open_for_ms = self.open_for.as_millis() as u64,
                "circuit opened: the upstream keeps failing"
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
        metrics::gauge!("gateway_upstream_circuit", "upstream" => self.name).set(state.gauge());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_then_probes_once_and_closes_on_success() {
        let b = Breaker::new("orders", 3, Duration::from_secs(5));
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
        let b = Breaker::new("query", 2, Duration::from_secs(3));
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
}
