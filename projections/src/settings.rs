//! The projections worker's settings, read from the environment with working local defaults.

use std::net::SocketAddr;

use messaging::NatsSettings;
use runtime::db::DatabaseSettings;
use runtime::env::{Env, EnvError};
use runtime::telemetry::LogSettings;

use crate::worker::WorkerSettings;

/// Everything the projections binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR` (health and, later, metrics), default `127.0.0.1:8085`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` of the `read` database, `DATABASE_MAX_CONNECTIONS` (default 10).
    pub database: DatabaseSettings,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `PROJECTION_BATCH_SIZE` (default 500), `PROJECTION_FETCH_WAIT_MS` (500),
    /// `PROJECTION_RETRY_DELAY_MS` (200), `PROJECTION_ACK_WAIT_MS` (30000),
    /// `PROJECTION_CONSUMER_PREFIX` (empty).
    pub worker: WorkerSettings,
    /// `FAILPOINTS`, default none.
    pub failpoints: String,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub log: LogSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let defaults = WorkerSettings::default();
        Ok(Self {
            http_addr: env.parse_or("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8085)))?,
            database: DatabaseSettings::from_env(
                env,
                "postgres://projections@127.0.0.1:25432/read",
                10,
            )?,
            nats: NatsSettings::from_env(env)?,
            worker: WorkerSettings {
                batch_size: env.parse_or("PROJECTION_BATCH_SIZE", defaults.batch_size)?,
                fetch_wait: env.millis_or("PROJECTION_FETCH_WAIT_MS", defaults.fetch_wait)?,
                retry_delay: env.millis_or("PROJECTION_RETRY_DELAY_MS", defaults.retry_delay)?,
                ack_wait: env.millis_or("PROJECTION_ACK_WAIT_MS", defaults.ack_wait)?,
                consumer_prefix: env.string_or("PROJECTION_CONSUMER_PREFIX", ""),
                schema: None,
                trace_events: true,
            },
            failpoints: env.string_or("FAILPOINTS", ""),
            log: LogSettings::from_env(env)?,
        })
    }
}
