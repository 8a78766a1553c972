//! The projections worker's settings, read from the environment with working local defaults.

use messaging::NatsSettings;
use service_kit::env::{Env, EnvError};
use service_kit::service::Basics;

use crate::worker::WorkerSettings;

/// Everything the projections binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS` (default 10), `FAILPOINTS`,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub basics: Basics,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `PROJECTION_BATCH_SIZE` (default 500), `PROJECTION_FETCH_WAIT_MS` (500),
    /// `PROJECTION_RETRY_DELAY_MS` (200), `PROJECTION_ACK_WAIT_MS` (30000). The durable
    /// consumers take the names `messaging::durables` declares, which the NATS permissions
    /// give to this service alone.
    pub worker: WorkerSettings,
    /// `DEAD_LETTER_RETENTION_DAYS`, 1 to 3650, default 30: how long a dead letter (with the
    /// message it holds) is kept for an operator to look at.
    pub dead_letter_retention: std::time::Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let defaults = WorkerSettings::default();
        Ok(Self {
            basics: Basics::from_env(env, &topology::PROJECTIONS)?,
            nats: NatsSettings::from_env(env, messaging::Identity::PROJECTIONS)?,
            worker: WorkerSettings {
                // A fetched batch must fit a subscription's buffer (messaging's
                // SUBSCRIPTION_CAPACITY), or NATS would drop part of it.
                batch_size: env.within_or(
                    "PROJECTION_BATCH_SIZE",
                    defaults.batch_size,
                    1..=messaging::settings::MAX_FETCH_BATCH,
                )?,
                fetch_wait: env.millis_or("PROJECTION_FETCH_WAIT_MS", defaults.fetch_wait)?,
                retry_delay: env.millis_or("PROJECTION_RETRY_DELAY_MS", defaults.retry_delay)?,
                ack_wait: env.millis_or("PROJECTION_ACK_WAIT_MS", defaults.ack_wait)?,
                consumer_prefix: String::new(),
                schema: None,
                trace_events: true,
            },
            dead_letter_retention: std::time::Duration::from_secs(
                86_400 * env.within_or("DEAD_LETTER_RETENTION_DAYS", 30u64, 1..=3650)?,
            ),
        })
    }
}
