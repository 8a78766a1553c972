//! The orders service's settings, read from the environment with working local defaults.

use std::net::SocketAddr;
use std::time::Duration;

use messaging::NatsSettings;
use runtime::db::DatabaseSettings;
use runtime::env::{Env, EnvError};
use runtime::telemetry::LogSettings;

/// Everything the orders binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, default `127.0.0.1:8081`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` (default the `orders` database of `cargo xtask up`),
    /// `DATABASE_MAX_CONNECTIONS` (default 10).
    pub database: DatabaseSettings,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `OUTBOX_RELAY`: whether this replica runs a relay, default true.
    pub outbox_relay: bool,
    /// `OUTBOX_BATCH_SIZE`, 1 to 1000, default 500.
    pub outbox_batch_size: i64,
    /// `OUTBOX_POLL_INTERVAL_MS`, default 1000.
    pub outbox_poll_interval: Duration,
    /// `HTTP_BODY_LIMIT_BYTES`, default 65536.
    pub body_limit_bytes: usize,
    /// `FAILPOINTS`: comma-separated crash points for fault-injection tests, default none.
    pub failpoints: String,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub log: LogSettings,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let batch: i64 = env.parse_or("OUTBOX_BATCH_SIZE", 500)?;
        if !(1..=1000).contains(&batch) {
            return Err(EnvError {
                name: "OUTBOX_BATCH_SIZE".into(),
                reason: format!("{batch} is outside 1..=1000"),
            });
        }
        Ok(Self {
            http_addr: env.parse_or("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database: DatabaseSettings::from_env(
                env,
                "postgres://orders@127.0.0.1:54330/orders",
                10,
            )?,
            nats: NatsSettings::from_env(env)?,
            outbox_relay: env.bool_or("OUTBOX_RELAY", true)?,
            outbox_batch_size: batch,
            outbox_poll_interval: env
                .millis_or("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(1000))?,
            body_limit_bytes: env.parse_or("HTTP_BODY_LIMIT_BYTES", 64 * 1024)?,
            failpoints: env.string_or("FAILPOINTS", ""),
            log: LogSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_locally_and_secrets_stay_hidden() {
        let s = Settings::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            "postgres://orders:s3cret@db/orders",
        )]))
        .unwrap();
        assert_eq!(s.http_addr.port(), 8081);
        assert!(s.outbox_relay);
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn out_of_range_batch_is_refused() {
        let err = Settings::from_env(&Env::from_pairs([("OUTBOX_BATCH_SIZE", "0")])).unwrap_err();
        assert!(err.to_string().contains("OUTBOX_BATCH_SIZE"));
    }
}
