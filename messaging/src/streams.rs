//! Creates (or checks) the JetStream stream of a context with the settings the design fixes:
//! file storage, no age limit, a duplicate window for `Nats-Msg-Id`, configurable replicas.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{BoundedContext, Namespace};

/// Stream settings that differ between a laptop and a cluster.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub replicas: usize,
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The configuration of a context's stream.
pub fn stream_config(
    ns: &Namespace,
    context: BoundedContext,
    settings: &StreamSettings,
) -> stream::Config {
    stream::Config {
        name: ns.stream(context),
        subjects: vec![ns.events_filter(context)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::ZERO,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        description: Some(format!("streamshop {} domain events", context.token())),
        ..Default::default()
    }
}

/// Gets the stream, creating it when missing.
pub async fn ensure_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    context: BoundedContext,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream_config(ns, context, settings))
        .await
}
