//! The projections worker's settings, read from the environment with working local defaults.

use std::net::SocketAddr;
use std::time::Duration;

use messaging::streams::StreamSettings;
use messaging::Namespace;
use runtime::env::{Env, EnvError};
use runtime::secret::Secret;
use runtime::telemetry::LogSettings;

use crate::worker::WorkerSettings;

/// Everything the projections binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR` (health and, later, metrics), default `127.0.0.1:8085`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` of the `read` database.
    pub database_url: Secret<String>,
    /// `DATABASE_MAX_CONNECTIONS`, default 10.
    pub db_max_connections: u32,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `NATS_NAMESPACE`, default none.
    pub namespace: Namespace,
    /// `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub stream: StreamSettings,
    /// `PROJECTION_BATCH_SIZE` (default 500), `PROJECTION_FETCH_WAIT_MS` (500),
    /// `PROJECTION_RETRY_DELAY_MS` (200), `PROJECTION_ACK_WAIT_MS` (30000).
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
            database_url: Secret::new(env.string_or(
                "DATABASE_URL",
                "postgres://projections@127.0.0.1:54330/read",
            )),
            db_max_connections: env.parse_or("DATABASE_MAX_CONNECTIONS", 10)?,
            nats_url: env.string_or("NATS_URL", "nats://127.0.0.1:42230"),
            namespace: env.parse_or("NATS_NAMESPACE", Namespace::default())?,
            stream: StreamSettings {
                replicas: env.parse_or("NATS_STREAM_REPLICAS", 1)?,
                duplicate_window: env
                    .millis_or("NATS_DUPLICATE_WINDOW_MS", Duration::from_secs(120))?,
            },
            worker: WorkerSettings {
                batch_size: env.parse_or("PROJECTION_BATCH_SIZE", defaults.batch_size)?,
                fetch_wait: env.millis_or("PROJECTION_FETCH_WAIT_MS", defaults.fetch_wait)?,
                retry_delay: env.millis_or("PROJECTION_RETRY_DELAY_MS", defaults.retry_delay)?,
                ack_wait: env.millis_or("PROJECTION_ACK_WAIT_MS", defaults.ack_wait)?,
            },
            failpoints: env.string_or("FAILPOINTS", ""),
            log: LogSettings::from_env(env)?,
        })
    }
}
