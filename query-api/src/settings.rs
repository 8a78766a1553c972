//! The query API's settings, read from the environment with working local defaults.

use std::time::Duration;

use service_kit::env::{Env, EnvError};
use service_kit::service::Basics;

/// Everything the query API can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS` (default 20), `FAILPOINTS`,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub basics: Basics,
    /// `READ_YOUR_WRITES_TIMEOUT_MS`: longest wait for `min_version`, default 2000.
    pub min_version_timeout: Duration,
    /// `READ_YOUR_WRITES_MAX_AHEAD`, default 1000: how far past the version the read model
    /// holds a `min_version` may be. A version further ahead is not one a command answered
    /// recently, so it is refused at once (400) rather than waited for.
    pub min_version_max_ahead: u64,
    /// `HTTP_REQUEST_TIMEOUT_MS`: longest a read may take, default 10000 (more than the
    /// read-your-writes wait).
    pub request_timeout: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        Ok(Self {
            basics: Basics::from_env(env, &topology::QUERY_API)?,
            min_version_timeout: env
                .millis_or("READ_YOUR_WRITES_TIMEOUT_MS", Duration::from_millis(2000))?,
            min_version_max_ahead: env.within_or(
                "READ_YOUR_WRITES_MAX_AHEAD",
                1000,
                1..=1_000_000_000,
            )?,
            request_timeout: env
                .millis_or("HTTP_REQUEST_TIMEOUT_MS", Duration::from_millis(10_000))?,
        })
    }
}
