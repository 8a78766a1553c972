//! Creates (or checks) the JetStream stream of a context with the settings the design fixes:
//! file storage, no age limit, a duplicate window for `Nats-Msg-Id`, configurable replicas.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::Consumer;
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, stream};

use crate::{BoundedContext, Namespace};

/// The largest message a stream stores (payload and headers), below NATS's default
/// `max_payload` of 1 MiB. The relay refuses to send anything larger (it could never be
/// stored), and the command side refuses events that would not fit.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The largest event `data` a command may append: the message limit less room for the
/// envelope's other members and the headers (a few hundred bytes in practice).
pub const MAX_EVENT_DATA_BYTES: usize = MAX_MESSAGE_BYTES - 16 * 1024;

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
        max_message_size: MAX_MESSAGE_BYTES as i32,
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

/// The stream of another context, once it exists (only that context's service may create
/// it). Waits, saying so now and then, for as long as it takes.
pub async fn existing_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    context: BoundedContext,
) -> stream::Stream {
    let name = ns.stream(context);
    let mut waited = 0u32;
    loop {
        match js.get_stream(&name).await {
            Ok(stream) => return stream,
            Err(e) => {
                if waited.is_multiple_of(10) {
                    tracing::info!(stream = %name, error = %e, "waiting for the stream (its context's service creates it)");
                }
                waited += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// How many times an ordered consumer is asked for before giving up.
const ORDERED_ATTEMPTS: u32 = 8;

/// An ordered consumer of `stream` for `reader` (an identity's name), asked for again when
/// the server does not answer. It is named `<reader>_<random>` (`durables::reader_name`):
/// readers may create consumers only under a name of their own in the request's subject,
/// never one the server would take from the body, and never a durable's.
///
/// In a cluster, JetStream places an ordered (single-replica) consumer on any of the stream's
/// peers, an offline one included (nats-server 2.12): with one node of three down, about a
/// third of the requests time out, and the next request lands elsewhere. Without a node
/// down, the first request answers.
pub async fn ordered_consumer<I>(
    stream: &stream::Stream<I>,
    reader: &str,
    mut config: OrderedConfig,
) -> Result<Consumer<OrderedConfig>, ConsumerError> {
    let named = config.name.is_some();
    let mut attempt = 1;
    loop {
        // A new name each time: the server keeps placing a name where it first placed it,
        // and that may be the node that is down.
        if !named {
            config.name = Some(crate::durables::reader_name(reader));
        }
        match stream.create_consumer(config.clone()).await {
            Err(e) if e.kind() == ConsumerErrorKind::TimedOut && attempt < ORDERED_ATTEMPTS => {
                tracing::info!(
                    attempt,
                    "no answer to an ordered consumer's creation (a node of the cluster may be down); asking again"
                );
                attempt += 1;
            }
            done => return done,
        }
    }
}
