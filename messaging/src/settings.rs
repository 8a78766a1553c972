//! NATS settings every service that talks to JetStream reads the same way.

use std::time::Duration;

use runtime::env::{Env, EnvError};

use crate::streams::StreamSettings;
use crate::Namespace;

/// `NATS_URL`, `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: runtime::secret::Secret<String>,
    pub namespace: Namespace,
    pub stream: StreamSettings,
}

/// Messages a subscription holds while its handler is busy.
pub const SUBSCRIPTION_CAPACITY: usize = 1024;

/// Where `cargo xtask up` runs NATS.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:24222";

impl NatsSettings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        Ok(Self {
            url: runtime::secret::Secret::new(env.string_or("NATS_URL", DEFAULT_NATS_URL)),
            namespace: env.parse_or("NATS_NAMESPACE", Namespace::default())?,
            stream: StreamSettings {
                replicas: env.parse_or("NATS_STREAM_REPLICAS", 1)?,
                duplicate_window: env
                    .millis_or("NATS_DUPLICATE_WINDOW_MS", Duration::from_secs(120))?,
            },
        })
    }

    /// Connects to NATS. A subscription buffers at most [`SUBSCRIPTION_CAPACITY`] messages
    /// while its handler is busy (async-nats's default is 65,536, which at 1 MB each is more
    /// memory than a service has); past it, NATS drops messages for the slow consumer and their
    /// senders retry.
    pub async fn connect(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::new()
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .connect(self.url.expose())
            .await
    }

    /// Connects and makes sure the streams of `contexts` exist (each service creates the
    /// streams it needs, so start-up order does not matter).
    pub async fn connect_with_streams(
        &self,
        contexts: &[crate::BoundedContext],
    ) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
        use anyhow::Context;
        let nats = self
            .connect()
            .await
            .with_context(|| format!("connecting NATS at {}", self.url))?;
        let js = async_nats::jetstream::new(nats.clone());
        for context in contexts {
            crate::streams::ensure_stream(&js, &self.namespace, *context, &self.stream)
                .await
                .with_context(|| {
                    format!("creating the {} stream", self.namespace.stream(*context))
                })?;
        }
        Ok((nats, js))
    }
}
