//! The orchestrator's settings: the common service ones and the saga policy.

use std::time::Duration;

use domain::saga::SagaPolicy;
use messaging::NatsSettings;
use service_kit::env::{Env, EnvError};
use service_kit::service::Basics;

/// Everything the orchestrator binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS` (default 20), `FAILPOINTS`,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub basics: Basics,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `SAGA_STEP_DEADLINE_MS` (5000), `SAGA_BUSINESS_DEADLINE_MS` (900000, 15 minutes),
    /// `SAGA_BACKOFF_BASE_MS` (200), `SAGA_BACKOFF_MAX_MS` (10000).
    pub policy: SagaPolicy,
    /// `SAGA_BREAKER_FAILURES` (5), `SAGA_BREAKER_OPEN_MS` (5000),
    /// `SAGA_MAX_IN_FLIGHT_PER_CONTEXT` (64), `SAGA_MAX_IN_FLIGHT_PER_CUSTOMER` (4).
    pub containment: Containment,
    /// `SAGA_RECOVERY_INTERVAL_MS`: how often open sagas are re-checked (a safety net behind
    /// the timers, and how a replica takes over the sagas of one that died), default 5000.
    pub recovery_interval: Duration,
    /// `OUTBOX_POLL_INTERVAL_MS`, default 1000.
    pub outbox_poll_interval: Duration,
    pub failpoint_marker_dir: Option<std::path::PathBuf>,
}

/// How a context that fails or slows down is kept from taking the others with it.
#[derive(Debug, Clone, Copy)]
pub struct Containment {
    /// Failures in a row (no answer, a timeout, `unavailable`) that open a context's circuit:
    /// its steps then wait without sending until it is probed again.
    pub breaker_failures: u32,
    /// How long an open circuit waits before one step probes the context.
    pub breaker_open_for: Duration,
    /// Commands in flight to one context at most, so a slow one (a payment provider that
    /// hangs) cannot hold every step of every saga.
    pub max_in_flight: usize,
    /// Commands in flight to one context for one customer at most, so one customer's slow
    /// sagas cannot hold the places of everyone else's.
    pub max_in_flight_per_customer: usize,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let defaults = SagaPolicy::default();
        Ok(Self {
            basics: Basics::from_env(env, &topology::ORCHESTRATOR)?,
            nats: NatsSettings::from_env(env, messaging::Identity::ORCHESTRATOR)?,
            policy: SagaPolicy {
                step_deadline: env.millis_or("SAGA_STEP_DEADLINE_MS", defaults.step_deadline)?,
                business_deadline: env
                    .millis_or("SAGA_BUSINESS_DEADLINE_MS", defaults.business_deadline)?,
                backoff_base: env.millis_or("SAGA_BACKOFF_BASE_MS", defaults.backoff_base)?,
                backoff_max: env.millis_or("SAGA_BACKOFF_MAX_MS", defaults.backoff_max)?,
            },
            containment: Containment {
                breaker_failures: env.within_or("SAGA_BREAKER_FAILURES", 5, 1..=1000)?,
                breaker_open_for: env.millis_or("SAGA_BREAKER_OPEN_MS", Duration::from_secs(5))?,
                max_in_flight: env.within_or("SAGA_MAX_IN_FLIGHT_PER_CONTEXT", 64, 1..=10_000)?,
                max_in_flight_per_customer: env.within_or(
                    "SAGA_MAX_IN_FLIGHT_PER_CUSTOMER",
                    4,
                    1..=10_000,
                )?,
            },
            recovery_interval: env
                .millis_or("SAGA_RECOVERY_INTERVAL_MS", Duration::from_secs(5))?,
            outbox_poll_interval: env
                .millis_or("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(1000))?,
            failpoint_marker_dir: env.get("FAILPOINT_MARKER_DIR").map(Into::into),
        })
    }
}
