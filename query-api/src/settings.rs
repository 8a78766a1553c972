//! The query API's settings, read from the environment with working local defaults.

use std::net::SocketAddr;
use std::time::Duration;

use runtime::db::DatabaseSettings;
use runtime::env::{Env, EnvError};
use runtime::telemetry::LogSettings;

/// Everything the query API can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` of the `read` database, `DATABASE_MAX_CONNECTIONS` (default 20).
    pub database: DatabaseSettings,
    /// `READ_YOUR_WRITES_TIMEOUT_MS`: longest wait for `min_version`, default 2000.
    pub min_version_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_MS`: longest a read may take, default 10000 (more than the
    /// read-your-writes wait).
    pub request_timeout: Duration,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub log: LogSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        Ok(Self {
            http_addr: env.parse_or("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            database: DatabaseSettings::from_env(
                env,
                "postgres://query_api@127.0.0.1:25432/read",
                20,
            )?,
            min_version_timeout: env
                .millis_or("READ_YOUR_WRITES_TIMEOUT_MS", Duration::from_millis(2000))?,
            request_timeout: env
                .millis_or("HTTP_REQUEST_TIMEOUT_MS", Duration::from_millis(10_000))?,
            log: LogSettings::from_env(env)?,
        })
    }
}
