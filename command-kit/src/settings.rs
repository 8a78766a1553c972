//! The settings every command service reads, with each service's own port and database as
//! defaults.

use std::time::Duration;

use messaging::NatsSettings;
use service_kit::env::{Env, EnvError};
use service_kit::service::Basics;

/// Everything a command service binary can be told.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// `HTTP_ADDR`, `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS` (default 10), `FAILPOINTS`,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub basics: Basics,
    /// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub nats: NatsSettings,
    /// `OUTBOX_RELAY`: whether this replica runs a relay, default true.
    pub outbox_relay: bool,
    /// `OUTBOX_BATCH_SIZE`, 1 to 1000, default 500.
    pub outbox_batch_size: i64,
    /// `OUTBOX_POLL_INTERVAL_MS`, default 1000.
    pub outbox_poll_interval: Duration,
    /// `NATS_COMMAND_CONCURRENCY`: NATS commands handled at once, default 64.
    pub nats_command_concurrency: usize,
    /// `HTTP_BODY_LIMIT_BYTES`, default 65536.
    pub body_limit_bytes: usize,
    /// `IDEMPOTENCY_RETENTION_HOURS`, 1 to 87600, default 168 (a week): how long a command's
    /// first answer is kept for repeats of its key.
    pub idempotency_retention: Duration,
}

/// The settings of context `S`'s service from an environment, with its defaults.
pub fn settings<S: crate::CommandSpec>(env: &Env) -> Result<ServiceSettings, EnvError> {
    ServiceSettings::from_env(env, S::SERVICE, messaging::Identity::of_context(S::CONTEXT))
}

impl ServiceSettings {
    /// Reads the variables, with `service`'s port and database under `cargo xtask up` as the
    /// defaults; the service connects to NATS as `identity`.
    pub fn from_env(
        env: &Env,
        service: &'static topology::Service,
        identity: messaging::Identity,
    ) -> Result<Self, EnvError> {
        let batch: i64 = env.within_or("OUTBOX_BATCH_SIZE", 500, 1..=1000)?;
        let concurrency = env.within_or("NATS_COMMAND_CONCURRENCY", 64, 1..=usize::MAX)?;
        Ok(Self {
            basics: Basics::from_env(env, service)?,
            nats: NatsSettings::from_env(env, identity)?,
            outbox_relay: env.bool_or("OUTBOX_RELAY", true)?,
            outbox_batch_size: batch,
            outbox_poll_interval: env
                .millis_or("OUTBOX_POLL_INTERVAL_MS", Duration::from_millis(1000))?,
            nats_command_concurrency: concurrency,
            body_limit_bytes: env.parse_or("HTTP_BODY_LIMIT_BYTES", 64 * 1024)?,
            idempotency_retention: Duration::from_secs(
                3600 * env.within_or("IDEMPOTENCY_RETENTION_HOURS", 168u64, 1..=87_600)?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &topology::Service = &topology::INVENTORY;

    #[test]
    fn defaults_work_locally_and_secrets_stay_hidden() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://inventory:s3cret@db/inventory"),
            ("TLS_DIR", "/run/tls"),
        ]);
        let s = ServiceSettings::from_env(&env, SERVICE, messaging::Identity::INVENTORY).unwrap();
        assert_eq!(s.basics.http_addr.port(), topology::INVENTORY.port);
        // One certificate serves the service's HTTPS and its NATS connection.
        let tls = s.basics.tls.as_ref().unwrap();
        assert_eq!(
            tls.cert_file(),
            std::path::Path::new("/run/tls/inventory.crt")
        );
        assert_eq!(s.nats.tls.as_ref(), Some(tls));
        assert!(s.outbox_relay);
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn without_tls_files_a_service_does_not_start_unless_tls_is_turned_off() {
        let err = ServiceSettings::from_env(
            &Env::from_pairs(Vec::<(&str, &str)>::new()),
            SERVICE,
            messaging::Identity::INVENTORY,
        )
        .unwrap_err();
        assert!(err.to_string().contains("TLS_DIR"), "{err}");
        let off = ServiceSettings::from_env(
            &Env::from_pairs([("TLS", "off")]),
            SERVICE,
            messaging::Identity::INVENTORY,
        )
        .unwrap();
        assert!(off.basics.tls.is_none() && off.nats.tls.is_none());
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        for (name, value) in [
            ("OUTBOX_BATCH_SIZE", "0"),
            ("NATS_COMMAND_CONCURRENCY", "0"),
        ] {
            let err = ServiceSettings::from_env(
                &Env::from_pairs([(name, value), ("TLS", "off")]),
                SERVICE,
                messaging::Identity::INVENTORY,
            )
            .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
