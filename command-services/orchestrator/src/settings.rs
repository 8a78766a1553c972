//! The orchestrator's settings: the common service ones and the saga policy.

use std::net::SocketAddr;
use std::time::Duration;

use domain::saga::SagaPolicy;
use messaging::NatsSettings;
use runtime::db::DatabaseSettings;
use runtime::env::{Env, EnvError};
use runtime::telemetry::LogSettings;

/// Everything the orchestrator binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, default `127.0.0.1:8084`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` of the `orchestrator` database, `DATABASE_MAX_CONNECTIONS` (default 20).
    pub database: DatabaseSettings,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `SAGA_STEP_DEADLINE_MS` (5000), `SAGA_MAX_ATTEMPTS` (5), `SAGA_BACKOFF_BASE_MS` (200),
    /// `SAGA_BACKOFF_MAX_MS` (10000).
    pub policy: SagaPolicy,
    /// `SAGA_RECOVERY_INTERVAL_MS`: how often open sagas are re-checked (a safety net behind
    /// the timers, and how a replica takes over the sagas of one that died), default 5000.
    pub recovery_interval: Duration,
    /// `OUTBOX_POLL_INTERVAL_MS`, default 1000.
    pub outbox_poll_interval: Duration,
    /// `FAILPOINTS` (default none) and `FAILPOINT_MARKER_DIR`: see `runtime::failpoint`.
    pub failpoints: String,
    pub failpoint_marker_dir: Option<std::path::PathBuf>,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub log: LogSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let defaults = SagaPolicy::default();
        let max_attempts: u32 = env.parse_or("SAGA_MAX_ATTEMPTS", defaults.max_attempts)?;
        if max_attempts == 0 {
            return Err(EnvError {
                name: "SAGA_MAX_ATTEMPTS".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            http_addr: env.parse_or("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8084)))?,
            database: DatabaseSettings::from_env(
                env,
                "postgres://orchestrator@127.0.0.1:25432/orchestrator",
                20,
            )?,
            nats: NatsSettings::from_env(env)?,
            policy: SagaPolicy {
                step_deadline: env.millis_or("SAGA_STEP_DEADLINE_MS", defaults.step_deadline)?,
                max_attempts,
                backoff_base: env.millis_or("SAGA_BACKOFF_BASE_MS", defaults.backoff_base)?,
                backoff_max: env.millis_or("SAGA_BACKOFF_MAX_MS", defaults.backoff_max)?,
            },
            recovery_interval: env
                .millis_or("SAGA_RECOVERY_INTERVAL_MS", Duration::from_secs(5))?,
            outbox_poll_interval: env
                .millis_or("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(1000))?,
            failpoints: env.string_or("FAILPOINTS", ""),
            failpoint_marker_dir: env.get("FAILPOINT_MARKER_DIR").map(Into::into),
            log: LogSettings::from_env(env)?,
        })
    }
}
