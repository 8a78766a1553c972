//! Reads a selection of the event streams from JetStream with ordered (ephemeral, flow-
//! controlled) consumers, and hands each event on through a bounded channel, so memory stays
//! flat however long the streams are.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream::Stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use messaging::{BoundedContext, Envelope, Namespace};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::progress::Progress;
use crate::record::Record;

/// Where reading starts in each stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Beginning,
    /// The first message at or after this stream sequence.
    Sequence(u64),
    /// The first message stored at or after this time.
    Time(DateTime<Utc>),
    /// Only messages stored from now on.
    Now,
}

/// Where reading stops in each stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// The last message stored when reading began.
    Now,
    /// The last message at or before this stream sequence.
    Sequence(u64),
    /// The last message stored at or before this time.
    Time(DateTime<Utc>),
    /// Never: keep reading live.
    Follow,
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Selection {
    pub streams: Vec<BoundedContext>,
    pub start: Start,
    pub end: End,
    /// Event names (`OrderPlaced`) or full types (`streamshop.orders.OrderPlaced.v2`).
    pub types: Vec<String>,
    pub aggregate: Option<String>,
    pub correlation: Option<String>,
}

impl Selection {
    /// All of every stream, as it is now.
    pub fn everything(streams: Vec<BoundedContext>) -> Self {
        Self {
            streams,
            start: Start::Beginning,
            end: End::Now,
            types: Vec::new(),
            aggregate: None,
            correlation: None,
        }
    }

    /// A stable text of the selection, so a resumed export can tell it is the same one.
    pub fn key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.streams, self.start, self.end, self.types, self.aggregate, self.correlation
        )
    }

    fn wants(&self, envelope: &Envelope) -> bool {
        let type_ok = self.types.is_empty()
            || self
                .types
                .iter()
                .any(|t| t == &envelope.event_type || t == envelope.name());
        let correlation_ok = self
            .correlation
            .as_ref()
            .is_none_or(|c| envelope.correlationid.as_deref() == Some(c.as_str()));
        let aggregate_ok = self
            .aggregate
            .as_ref()
            .is_none_or(|a| &envelope.subject == a);
        type_ok && correlation_ok && aggregate_ok
    }
}

/// Where to connect, and the namespace of the streams (empty in production).
#[derive(Debug, Clone)]
pub struct Source {
    pub js: jetstream::Context,
    pub namespace: Namespace,
    /// Replace the fields the schemas mark sensitive (the payment token) as events are read.
    pub redact: bool,
}

impl Source {
    pub async fn connect(
        url: &str,
        namespace: &str,
        tls: Option<&service_kit::tls::TlsSettings>,
    ) -> anyhow::Result<Self> {
        // As the analysts' identity: read the streams, nothing more, with replies on its own
        // inbox prefix (its user and password come in the URL, its certificate from `tls`).
        let mut options = messaging::settings::options_for(url)
            .custom_inbox_prefix(messaging::Identity::ANALYST.inbox_prefix());
        if let Some(tls) = tls {
            options = messaging::settings::with_tls(options, tls)?;
        }
        let client = messaging::settings::connect_to(options, url)
            .await
            .with_context(|| {
                let hint = if tls.is_none() {
                    " without TLS (a server that requires it needs --tls-dir or TLS_DIR)"
                } else {
                    ""
                };
                format!(
                    "connecting to NATS at {}{hint}",
                    service_kit::secret::redact_url(url)
                )
            })?;
        Ok(Self {
            js: jetstream::new(client),
            namespace: Namespace::new(namespace).map_err(anyhow::Error::msg)?,
            redact: true,
        })
    }

    async fn stream(&self, context: BoundedContext) -> anyhow::Result<Stream> {
        let name = self.namespace.stream(context);
        self.js
            .get_stream(&name)
            .await
            .with_context(|| format!("stream {name} (is NATS_NAMESPACE right?)"))
    }
}

/// The bounds of one stream's read, resolved against the stream as it is now.
struct Plan {
    context: BoundedContext,
    deliver: DeliverPolicy,
    /// Inclusive; `None` when following.
    last: Option<u64>,
    filter: String,
}

/// The JetStream form of a time.
fn nats_time(at: DateTime<Utc>) -> anyhow::Result<async_nats::jetstream::consumer::DeliverPolicy> {
    let parsed = async_nats::datetime::parse_rfc3339(&at.to_rfc3339())
        .map_err(|e| anyhow::anyhow!("time {at}: {e}"))?;
    Ok(DeliverPolicy::ByStartTime { start_time: parsed })
}

/// The last stream sequence stored at or before `at`: one before the first message stored
/// after it, or the stream's last when none is (read after looking, so it is not too small).
async fn last_at_or_before(stream: &Stream, at: DateTime<Utc>) -> anyhow::Result<u64> {
    let after = at + chrono::Duration::nanoseconds(1);
    let consumer = messaging::streams::ordered_consumer(
        stream,
        messaging::Identity::ANALYST.name(),
        OrderedConfig {
            deliver_policy: nats_time(after)?,
            ..Default::default()
        },
    )
    .await?;
    if consumer.cached_info().num_pending == 0 {
        let mut stream = stream.clone();
        return Ok(stream.info().await?.state.last_sequence);
    }
    let mut messages = consumer.messages().await?;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
        .await
        .map_err(|_| anyhow::anyhow!("no answer from the stream while resolving {at}"))?
        .ok_or_else(|| anyhow::anyhow!("the stream ended while resolving {at}"))??;
    let sequence = first
        .info()
        .map_err(|e| anyhow::anyhow!("a message without JetStream metadata: {e}"))?
        .stream_sequence;
    Ok(sequence.saturating_sub(1))
}

async fn plan(
    source: &Source,
    selection: &Selection,
    context: BoundedContext,
    resume_after: Option<u64>,
) -> anyhow::Result<Plan> {
    let mut stream = source.stream(context).await?;
    let last_sequence = stream
        .info()
        .await
        .with_context(|| format!("the state of stream {}", context.stream_base()))?
        .state
        .last_sequence;
    let deliver = match (resume_after, selection.start) {
        (Some(seq), _) => DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
        (None, Start::Beginning) => DeliverPolicy::All,
        (None, Start::Sequence(seq)) => DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        },
        (None, Start::Time(at)) => nats_time(at)?,
        (None, Start::Now) => DeliverPolicy::New,
    };
    let last = match selection.end {
        End::Now => Some(last_sequence),
        End::Sequence(seq) => Some(seq.min(last_sequence)),
        End::Time(at) => Some(last_at_or_before(&stream, at).await?),
        End::Follow => None,
    };
    // The aggregate id is a subject token, so the server filters by it.
    let filter = match &selection.aggregate {
        Some(id) => source.namespace.aggregate_events_filter(context, id),
        None => source.namespace.events_filter(context),
    };
    Ok(Plan {
        context,
        deliver,
        last,
        filter,
    })
}

/// How many events a reading holds in hand at most: what bounds the memory of every command.
const IN_HAND: usize = 1024;

/// A read running in its own task: events arrive on `events`, in order.
pub struct Reading {
    pub events: mpsc::Receiver<Record>,
    task: JoinHandle<anyhow::Result<u64>>,
}

impl Reading {
    /// Ends the read (stopping it, when events are still coming) and says how it went: how
    /// many events it sent, or why it failed.
    pub async fn finish(self) -> anyhow::Result<u64> {
        drop(self.events);
        self.task.await.context("the reader task")?
    }
}

/// Starts `read` in a task of its own, feeding a bounded channel.
pub fn spawn(
    source: &Source,
    selection: &Selection,
    resume: BTreeMap<String, u64>,
    progress: Arc<Progress>,
) -> Reading {
    let (tx, events) = mpsc::channel(IN_HAND);
    let (source, selection) = (source.clone(), selection.clone());
    let task = tokio::spawn(async move { read(&source, &selection, &resume, tx, &progress).await });
    Reading { events, task }
}

/// Reads the selection and sends every wanted event to `out` in stream order, one stream after
/// another (or all at once when following). `resume` gives, per stream, the last sequence
/// already handled. Returns how many events were sent.
pub async fn read(
    source: &Source,
    selection: &Selection,
    resume: &BTreeMap<String, u64>,
    out: mpsc::Sender<Record>,
    progress: &Progress,
) -> anyhow::Result<u64> {
    let mut plans = Vec::new();
    for &context in &selection.streams {
        let resume_after = resume.get(context.stream_base()).copied();
        plans.push(plan(source, selection, context, resume_after).await?);
    }
    if selection.end == End::Follow {
        let reads = plans
            .into_iter()
            .map(|plan| read_one(source, selection, plan, out.clone(), progress));
        let counts = futures::future::try_join_all(reads).await?;
        return Ok(counts.iter().sum());
    }
    let mut sent = 0;
    for plan in plans {
        sent += read_one(source, selection, plan, out.clone(), progress).await?;
    }
    Ok(sent)
}

async fn read_one(
    source: &Source,
    selection: &Selection,
    plan: Plan,
    out: mpsc::Sender<Record>,
    progress: &Progress,
) -> anyhow::Result<u64> {
    let stream = source.stream(plan.context).await?;
    let base = plan.context.stream_base().to_owned();
    let consumer = messaging::streams::ordered_consumer(
        &stream,
        messaging::Identity::ANALYST.name(),
        OrderedConfig {
            deliver_policy: plan.deliver,
            filter_subject: plan.filter.clone(),
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("a reader of stream {base}"))?;
    let pending = consumer.cached_info().num_pending;
    if plan.last.is_some() && pending == 0 {
        // Nothing stored matches; waiting would wait for new events.
        return Ok(0);
    }
    progress.add_total(pending);
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("reading stream {base}"))?;
    let mut sent = 0;
    while let Some(message) = messages.next().await {
        let message = message.with_context(|| format!("reading stream {base}"))?;
        let meta = message
            .info()
            .map_err(|e| anyhow::anyhow!("a message without JetStream metadata: {e}"))?;
        let (sequence, pending) = (meta.stream_sequence, meta.pending);
        if plan.last.is_some_and(|last| sequence > last) {
            break;
        }
        progress.tick();
        match Envelope::from_slice(&message.payload) {
            Ok(mut envelope) if selection.wants(&envelope) => {
                if source.redact {
                    contracts::sensitive::redact(&mut envelope.data);
                }
                let record = Record {
                    stream: base.clone(),
                    stream_sequence: sequence,
                    envelope,
                };
                if out.send(record).await.is_err() {
                    // The receiver is gone (output closed): stop quietly.
                    return Ok(sent);
                }
                sent += 1;
            }
            Ok(_) => {}
            Err(e) => progress.warn(&format!("{base} #{sequence} skipped: {e}")),
        }
        if let Some(last) = plan.last {
            if sequence >= last || pending == 0 {
                break;
            }
        }
    }
    Ok(sent)
}
