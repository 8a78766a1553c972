//! Keeps a durable consumer as its owner declared it. The owner (a projection worker, the
//! orchestrator's inputs) asks the [`Keeper`] for its consumer before each fetch and has it
//! [`check`](Keeper::check) the server now and then: a consumer that disappeared, was changed
//! (another filter, another ack policy, made a push consumer), or lives on a stream that was
//! deleted and made again, is noticed and restored, starting where the owner's own records
//! say. Until it is restored, [`Keeper::intact`] is false, which the owner's `/readyz` reports.
//!
//! The NATS permissions keep everyone but the owner away from its consumer; the keeper is for
//! what the administrator (or an older deployment) did to it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{
    ConsumerInfoError, ConsumerInfoErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::{self};
use chrono::{DateTime, Utc};

/// What [`Keeper::check`] found on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The consumer is there, as declared, on the stream it was made on.
    Intact(Floor),
    /// No consumer held (not made yet, or forgotten after a finding below).
    Missing,
    /// The consumer was changed or deleted, or its stream replaced: it is restored at the
    /// next [`Keeper::consumer`].
    Lost(String),
}

/// How far the consumer's acknowledgements reach, on which stream: everything at or below
/// `acknowledged` has been settled by the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    pub stream_created: DateTime<Utc>,
    pub acknowledged: u64,
}

/// The consumer the keeper holds, and the stream it was made on.
struct Held {
    consumer: PullConsumer,
    stream_created: DateTime<Utc>,
}

/// One durable pull consumer, kept as declared.
pub struct Keeper {
    js: jetstream::Context,
    stream: String,
    declared: pull::Config,
    held: tokio::sync::Mutex<Option<Held>>,
    intact: Arc<AtomicBool>,
    /// Whether a consumer was ever held: a later creation is a restoration.
    held_once: AtomicBool,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("stream", &self.stream)
            .field("name", &self.name())
            .finish()
    }
}

impl Keeper {
    /// Keeps the durable consumer `declared` (whose `durable_name` is its name; its deliver
    /// policy is chosen at each creation) on `stream`.
    pub fn new(js: jetstream::Context, stream: String, declared: pull::Config) -> Self {
        assert!(
            declared.durable_name.is_some(),
            "a kept consumer is a durable one"
        );
        Self {
            js,
            stream,
            declared,
            held: tokio::sync::Mutex::new(None),
            // Nothing is lost before the first creation (the stream may not exist yet, and
            // waiting for its context's service is not a fault of this one).
            intact: Arc::new(AtomicBool::new(true)),
            held_once: AtomicBool::new(false),
        }
    }

    /// Keeps the durable consumer `name` of `context`'s events in `namespace` as every owner
    /// declares one: explicit acks, redelivered after `ack_wait`, never given up on (what can
    /// never apply is the owner's to dead-letter), at most `max_ack_pending` unacknowledged
    /// (0: the server's default).
    pub fn of_events(
        js: &jetstream::Context,
        namespace: &crate::Namespace,
        context: crate::BoundedContext,
        name: &str,
        description: &str,
        ack_wait: std::time::Duration,
        max_ack_pending: i64,
    ) -> Self {
        Self::new(
            js.clone(),
            namespace.stream(context),
            pull::Config {
                durable_name: Some(name.to_owned()),
                description: Some(description.to_owned()),
                filter_subject: namespace.events_filter(context),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1,
                max_ack_pending,
                ..Default::default()
            },
        )
    }

    pub fn name(&self) -> &str {
        self.declared.durable_name.as_deref().unwrap_or_default()
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// False from the moment the consumer is found lost (deleted, changed, its stream made
    /// again) until it is restored; true otherwise, before its first creation included.
    pub fn intact(&self) -> Arc<AtomicBool> {
        self.intact.clone()
    }

    /// The consumer. When none is held, the one on the server is taken if it is as declared,
    /// or else (deleted first, if it was changed) made again to start at what `start` says,
    /// given the creation time of the stream it is made on.
    pub async fn consumer<F, Fut>(&self, start: F) -> anyhow::Result<PullConsumer>
    where
        F: FnOnce(DateTime<Utc>) -> Fut,
        Fut: Future<Output = anyhow::Result<DeliverPolicy>>,
    {
        let mut held = self.held.lock().await;
        if let Some(held) = held.as_ref() {
            return Ok(held.consumer.clone());
        }
        let mut stream = self.js.get_stream(&self.stream).await?;
        let stream_created = chrono_time(stream.info().await?.created);
        let name = self.name().to_owned();
        match stream.consumer_info(&name).await {
            Ok(info) => match differences(&self.declared, &info.config) {
                None => {
                    let consumer: PullConsumer =
                        stream.get_consumer(&name).await.map_err(unboxed)?;
                    self.hold(&mut held, consumer.clone(), stream_created, false);
                    return Ok(consumer);
                }
                Some(why) => {
                    tracing::warn!(stream = %self.stream, consumer = %name, %why, "the durable consumer is not as declared; deleting it to make it again");
                    stream.delete_consumer(&name).await?;
                }
            },
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let deliver_policy = start(stream_created).await?;
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                deliver_policy,
                ..self.declared.clone()
            })
            .await?;
        let restored = self.held_once.load(Ordering::SeqCst);
        self.hold(&mut held, consumer.clone(), stream_created, restored);
        Ok(consumer)
    }

    fn hold(
        &self,
        slot: &mut Option<Held>,
        consumer: PullConsumer,
        stream_created: DateTime<Utc>,
        restored: bool,
    ) {
        if restored {
            metrics::counter!("consumer_restored_total", "consumer" => self.name().to_owned(), "stream" => self.stream.clone())
                .increment(1);
            tracing::warn!(stream = %self.stream, consumer = %self.name(), "durable consumer restored");
        }
        *slot = Some(Held {
            consumer,
            stream_created,
        });
        self.held_once.store(true, Ordering::SeqCst);
        self.intact.store(true, Ordering::SeqCst);
    }

    /// Forgets the held consumer (after a failed fetch, which may mean it is gone), so the
    /// next [`Keeper::consumer`] looks again; not intact until then.
    pub async fn forget(&self) {
        let mut held = self.held.lock().await;
        if held.take().is_some() {
            self.intact.store(false, Ordering::SeqCst);
        }
    }

    /// Asks the server whether the held consumer is still there, as declared, on the stream
    /// it was made on. When it is not, it is forgotten and marked not intact. An error (the
    /// server did not answer) changes nothing.
    pub async fn check(&self) -> anyhow::Result<Finding> {
        let mut held = self.held.lock().await;
        let Some(current) = held.as_ref() else {
            return Ok(Finding::Missing);
        };
        let lost = |why: String| {
            tracing::warn!(stream = %self.stream, consumer = %self.name(), %why, "durable consumer lost; restoring it");
            Finding::Lost(why)
        };
        let finding = match self.js.get_stream(&self.stream).await {
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                lost("its stream was deleted".into())
            }
            Err(e) => return Err(e.into()),
            Ok(mut stream) => {
                let created = chrono_time(stream.info().await?.created);
                if created != current.stream_created {
                    lost("its stream was deleted and made again".into())
                } else {
                    match stream.consumer_info(self.name()).await {
                        Err(e) if is_not_found(&e) => lost("it was deleted".into()),
                        Err(e) => return Err(e.into()),
                        Ok(info) => match differences(&self.declared, &info.config) {
                            Some(why) => lost(format!("it was changed: {why}")),
                            None => Finding::Intact(Floor {
                                stream_created: created,
                                acknowledged: info.ack_floor.stream_sequence,
                            }),
                        },
                    }
                }
            }
        };
        if matches!(finding, Finding::Lost(_)) {
            *held = None;
            self.intact.store(false, Ordering::SeqCst);
        }
        Ok(finding)
    }
}

/// `get_consumer`'s boxed error as the error it boxes, so that a start-up tells a timeout
/// it waits out (`service_kit::startup::unreachable` looks for the error's type; a boxed one,
/// even through `anyhow::Error::from_boxed`, shows only its message).
pub fn unboxed(error: Box<dyn std::error::Error + Send + Sync>) -> anyhow::Error {
    match error.downcast::<ConsumerInfoError>() {
        Ok(info) => anyhow::Error::new(*info),
        Err(other) => anyhow::Error::from_boxed(other),
    }
}

fn is_not_found(e: &ConsumerInfoError) -> bool {
    match e.kind() {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(err) => {
            err.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
        }
        _ => false,
    }
}

/// A JetStream time as chrono's, to the microsecond: what Postgres keeps of it, so a time
/// recorded there compares equal to the one read again from the server.
pub fn chrono_time(at: time::OffsetDateTime) -> DateTime<Utc> {
    let micros = at.unix_timestamp_nanos().div_euclid(1_000) as i64;
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// How `actual` (the server's configuration) differs from `declared` in what the owner relies
/// on; `None` when it does not.
pub fn differences(
    declared: &pull::Config,
    actual: &async_nats::jetstream::consumer::Config,
) -> Option<String> {
    let mut found = Vec::new();
    if actual.durable_name != declared.durable_name {
        found.push("not durable".to_owned());
    }
    if actual.deliver_subject.is_some() {
        found.push("made a push consumer".to_owned());
    }
    if actual.filter_subject != declared.filter_subject
        || actual.filter_subjects != declared.filter_subjects
    {
        found.push(format!(
            "filter {:?} {:?} instead of {:?}",
            actual.filter_subject, actual.filter_subjects, declared.filter_subject
        ));
    }
    if actual.ack_policy != declared.ack_policy {
        found.push(format!("ack policy {:?}", actual.ack_policy));
    }
    if actual.ack_wait != declared.ack_wait {
        found.push(format!("ack wait {:?}", actual.ack_wait));
    }
    if actual.max_deliver != declared.max_deliver {
        found.push(format!("max deliver {}", actual.max_deliver));
    }
    if declared.max_ack_pending > 0 && actual.max_ack_pending != declared.max_ack_pending {
        found.push(format!("max ack pending {}", actual.max_ack_pending));
    }
    if !actual.backoff.is_empty() {
        found.push("a backoff".to_owned());
    }
    if actual
        .pause_until
        .is_some_and(|until| until > time::OffsetDateTime::now_utc())
    {
        found.push("paused".to_owned());
    }
    (!found.is_empty()).then(|| found.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeout inside `get_consumer` reaches the start-up as a timeout it waits out (an
    /// orchestrator of a starting cluster once exited on it, seen only as "timed out").
    #[test]
    fn a_boxed_consumer_timeout_stays_a_timeout_the_start_up_waits_out() {
        let boxed = || -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(ConsumerInfoError::new(ConsumerInfoErrorKind::TimedOut))
        };
        let error = unboxed(boxed()).context("creating the orchestrator consumer on PAYMENTS");
        assert_eq!(service_kit::startup::unreachable(&error), Some("nats"));
        // What it was before: the message alone, which nothing classifies.
        let lost = anyhow::anyhow!(boxed()).context("creating the orchestrator consumer");
        assert_eq!(service_kit::startup::unreachable(&lost), None);
        // Any other boxed error stays what it was, message and all.
        let other: Box<dyn std::error::Error + Send + Sync> = "no such thing".into();
        assert_eq!(unboxed(other).to_string(), "no such thing");
    }
}
