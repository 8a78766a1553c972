//! The notification service's settings, read from the environment with working local defaults.

use std::time::Duration;

use messaging::NatsSettings;
use service_kit::env::{Env, EnvError};
use service_kit::service::Basics;

/// Everything the notifications binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, `DATABASE_URL`, `DATABASE_OWNER_URL`, `DATABASE_MAX_CONNECTIONS` (default
    /// 10), `FAILPOINTS`, `RUST_LOG`, `LOG_FORMAT`.
    pub basics: Basics,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `NOTIFY_NICENESS`, 0 to 19, default 10: the process's CPU niceness. Notifications go
    /// at their own pace: where the service shares CPUs with the order flow (one machine, a
    /// node's pods), the scheduler gives the flow's processes the CPU first.
    pub niceness: i32,
    /// `NOTIFY_WORKER_THREADS`, 1 to 64, default 1: the runtime's threads. A replica's work is
    /// waiting on the network; on one thread it wakes no other thread for each step of it,
    /// which at a few hundred messages a second cost more CPU than the work. Replicas scale it.
    pub worker_threads: usize,
    pub consumer: ConsumerSettings,
    pub webhooks: WebhookSettings,
    pub mail: MailSettings,
}

/// How order emails are sent.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `SMTP_URL` or `SMTP_URL_FILE` (a secret: it may hold a password): `smtp://host:port`
    /// (plain; `?tls=required` for STARTTLS) or `smtps://user:password@host:465`. Unset: no
    /// order emails are recorded or sent (webhooks go on).
    pub smtp_url: Option<service_kit::secret::Secret<String>>,
    /// `MAIL_FROM`, default `streamshop <orders@streamshop.example>`.
    pub from: String,
    /// `MAIL_ORDER_URL`, default `http://127.0.0.1:8000/api/orders/{order_id}`: the link to
    /// the order in its emails (`{order_id}` is replaced).
    pub order_url: String,
    /// `MAIL_SETTINGS_URL`, default `http://127.0.0.1:8000/api/me/notifications`: where a
    /// customer turns order emails off.
    pub settings_url: String,
    /// `MAIL_TIMEOUT_MS`, default 10000: the longest one attempt (opening the address and the
    /// SMTP exchange, each) may take.
    pub timeout: Duration,
    /// `MAIL_RETRY_FOR_SECS`, default 86400: how long an email is retried before it is marked
    /// failed.
    pub retry_for: Duration,
    /// `MAIL_BACKOFF_BASE_MS`, default 1000: the delay after the n-th failed attempt is base ×
    /// 2^(n-1), at most an hour, times a random 0.5 to 1.
    pub backoff_base: Duration,
    /// `MAIL_MAX_IN_FLIGHT`, default 16: emails one replica sends at once (the channel's
    /// bulkhead, apart from the webhooks').
    pub max_in_flight: usize,
    /// `WEBHOOK_POLL_INTERVAL_MS` too: how often due retries are looked for.
    pub poll_interval: Duration,
}

/// How the streams are read.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `NOTIFY_BATCH_SIZE`, 1 to 1000, default 100: events recorded per transaction.
    pub batch_size: usize,
    /// `NOTIFY_FETCH_WAIT_MS`, default 500: how long an idle fetch waits for the next event.
    pub fetch_wait: Duration,
    /// `NOTIFY_LINGER_MS`, default 20: how long the consumer, once an event is in hand, waits
    /// for more to record in the same transaction. Notifications are off the saga's path, so
    /// a few milliseconds here buy one commit for several events at a light load.
    pub linger: Duration,
    /// `NOTIFY_ACK_WAIT_MS`, default 30000: how long JetStream waits for a replica's ack
    /// before it gives the event to another.
    pub ack_wait: Duration,
    /// `NOTIFY_RETRY_DELAY_MS`, default 500: how long an event waits whose aggregate's earlier
    /// event is not recorded yet (another replica holds it), or after a failed batch.
    pub retry_delay: Duration,
    /// Whether order emails are recorded: when `SMTP_URL` is set.
    pub emails: bool,
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_TIMEOUT_MS`, default 10000: the longest one attempt may take.
    pub timeout: Duration,
    /// `WEBHOOK_RETRY_FOR_SECS`, default 86400 (a day): how long a delivery is retried before
    /// it is marked failed (and its endpoint paused).
    pub retry_for: Duration,
    /// `WEBHOOK_BACKOFF_BASE_MS` (1000) and `WEBHOOK_BACKOFF_MAX_MS` (3600000): the delay
    /// after the n-th failed attempt is base × 2^(n-1), at most max, times a random 0.5 to 1.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `WEBHOOK_MAX_IN_FLIGHT`, default 64: attempts one replica makes at once, over all
    /// endpoints (the channel's bulkhead).
    pub max_in_flight: usize,
    /// `WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`, default 4: attempts at once to one endpoint, so
    /// a slow one holds no more than these places.
    pub max_in_flight_per_endpoint: usize,
    /// `WEBHOOK_ALLOW_PRIVATE_ADDRESSES`, default false: whether endpoints may be at loopback,
    /// private or link-local addresses (the tests' receivers are on 127.0.0.1).
    pub allow_private: bool,
    /// `WEBHOOK_SECRET_GRACE_SECS`, default 86400: how long a rotated-out secret still signs.
    pub secret_grace: Duration,
    /// `WEBHOOK_POLL_INTERVAL_MS`, default 200: how often due retries are looked for.
    pub poll_interval: Duration,
    /// `WEBHOOK_DELIVERY_RETENTION_DAYS`, 1 to 3650, default 30: how long a delivered
    /// delivery (with its attempts) stays in the log; pending and failed ones stay.
    pub delivered_retention: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let smtp_url = env.secret("SMTP_URL")?;
        let poll_interval =
            env.millis_or("WEBHOOK_POLL_INTERVAL_MS", Duration::from_millis(200))?;
        Ok(Self {
            basics: Basics::from_env(env, &topology::NOTIFICATIONS)?,
            nats: NatsSettings::from_env(env, messaging::Identity::NOTIFICATIONS)?,
            niceness: env.within_or("NOTIFY_NICENESS", 10, 0..=19)?,
            worker_threads: env.within_or("NOTIFY_WORKER_THREADS", 1, 1..=64)?,
            consumer: ConsumerSettings {
                batch_size: env.within_or("NOTIFY_BATCH_SIZE", 100, 1..=1000)?,
                fetch_wait: env.millis_or("NOTIFY_FETCH_WAIT_MS", Duration::from_millis(500))?,
                linger: env.millis_or("NOTIFY_LINGER_MS", Duration::from_millis(20))?,
                ack_wait: env.millis_or("NOTIFY_ACK_WAIT_MS", Duration::from_secs(30))?,
                retry_delay: env.millis_or("NOTIFY_RETRY_DELAY_MS", Duration::from_millis(500))?,
                emails: smtp_url.is_some(),
            },
            webhooks: WebhookSettings {
                timeout: env.millis_or("WEBHOOK_TIMEOUT_MS", Duration::from_secs(10))?,
                retry_for: Duration::from_secs(env.within_or(
                    "WEBHOOK_RETRY_FOR_SECS",
                    86_400u64,
                    1..=30 * 86_400,
                )?),
                backoff_base: env.millis_or("WEBHOOK_BACKOFF_BASE_MS", Duration::from_secs(1))?,
                backoff_max: env.millis_or("WEBHOOK_BACKOFF_MAX_MS", Duration::from_secs(3600))?,
                max_in_flight: env.within_or("WEBHOOK_MAX_IN_FLIGHT", 64, 1..=10_000)?,
                max_in_flight_per_endpoint: env.within_or(
                    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
                    4,
                    1..=1000,
                )?,
                allow_private: env.bool_or("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", false)?,
                secret_grace: Duration::from_secs(env.within_or(
                    "WEBHOOK_SECRET_GRACE_SECS",
                    86_400u64,
                    0..=30 * 86_400,
                )?),
                poll_interval,
                delivered_retention: Duration::from_secs(
                    86_400 * env.within_or("WEBHOOK_DELIVERY_RETENTION_DAYS", 30u64, 1..=3650)?,
                ),
            },
            mail: MailSettings {
                smtp_url,
                from: env.string_or("MAIL_FROM", "streamshop <orders@streamshop.example>"),
                order_url: env.string_or(
                    "MAIL_ORDER_URL",
                    "http://127.0.0.1:8000/api/orders/{order_id}",
                ),
                settings_url: env.string_or(
                    "MAIL_SETTINGS_URL",
                    "http://127.0.0.1:8000/api/me/notifications",
                ),
                timeout: env.millis_or("MAIL_TIMEOUT_MS", Duration::from_secs(10))?,
                retry_for: Duration::from_secs(env.within_or(
                    "MAIL_RETRY_FOR_SECS",
                    86_400u64,
                    1..=30 * 86_400,
                )?),
                backoff_base: env.millis_or("MAIL_BACKOFF_BASE_MS", Duration::from_secs(1))?,
                max_in_flight: env.within_or("MAIL_MAX_IN_FLIGHT", 16, 1..=1000)?,
                poll_interval,
            },
        })
    }
}
