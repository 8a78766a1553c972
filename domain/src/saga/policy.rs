//! Timing of steps: deadlines, the business deadline and backoff with jitter (`SagaPolicy`),
//! and when a step can next be attempted (`Readiness`, `OrderSaga::readiness`,
//! `OrderSaga::next_wake`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{OrderSaga, Step};

/// Deadlines and retries of saga steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaPolicy {
    /// How long one attempt of a step may take before it counts as timed out.
    pub step_deadline: Duration,
    /// How long after the order was placed a step before the pivot (the payment's capture)
    /// may still be retried: a target that does not answer is waited for until then, and the
    /// order is rejected after. Steps after the pivot and compensations are retried until they
    /// succeed.
    pub business_deadline: Duration,
    /// Backoff before the second attempt; doubles each time, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for SagaPolicy {
    fn default() -> Self {
        Self {
            step_deadline: Duration::from_secs(5),
            business_deadline: Duration::from_secs(15 * 60),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl SagaPolicy {
    /// The wait before attempt `attempt + 1`: exponential, capped, with "equal jitter" (half
    /// fixed, half scaled by `jitter_permille` / 1000) so retries of many sagas spread out.
    pub fn backoff(&self, attempt: u32, jitter_permille: u16) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.backoff_max);
        let half = capped / 2;
        half + half.mul_f64(f64::from(jitter_permille.min(1000)) / 1000.0)
    }
}

/// When a step can next be attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Send it now.
    Ready,
    /// An attempt is in flight until this deadline.
    InFlight(DateTime<Utc>),
    /// The attempt in flight passed its deadline: record the timeout (`Fail`).
    TimedOut,
    /// Waiting for its retry time.
    Waiting(DateTime<Utc>),
}

impl OrderSaga {
    /// When `step` can next be attempted, seen at `now`.
    pub fn readiness(&self, step: &Step, now: DateTime<Utc>) -> Readiness {
        let Some(state) = self.step(step) else {
            return Readiness::Ready;
        };
        if let Some(deadline) = state.deadline {
            return if now >= deadline {
                Readiness::TimedOut
            } else {
                Readiness::InFlight(deadline)
            };
        }
        match state.retry_at {
            Some(at) if now < at => Readiness::Waiting(at),
            _ => Readiness::Ready,
        }
    }

    /// The earliest time something becomes due (a deadline or a retry), if any.
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due_steps()
            .iter()
            .map(|s| match self.readiness(s, now) {
                Readiness::InFlight(at) | Readiness::Waiting(at) => at,
                Readiness::Ready | Readiness::TimedOut => now,
            })
            .min()
    }
}
