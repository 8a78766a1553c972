//! Drives one projection from its durable pull consumer. [`Worker::process_batch`] is the step
//! function: fetch a batch, apply it with the checkpoint in one transaction, then ack.
//!
//! A batch whose transaction fails on a data error is replayed one message at a time, so the one
//! bad message ends in `dead_letters` (and is terminated) while the rest apply. Its aggregate
//! is then held: its later events are dead-lettered behind it, in order, until an operator
//! replays or discards them (`dead_letters`). Connection and other transient errors roll the
//! batch back and nak it with a delay.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use messaging::consume;
use messaging::keeper::Keeper;
use messaging::streams::StreamSettings;
use messaging::{Envelope, Namespace};
use service_kit::retry::Backoff;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bookkeeping::{self, DeadLetter};
use crate::projection::Projection;

/// Tuning of a worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Most messages per transaction.
    pub batch_size: usize,
    /// How long a fetch waits for messages when the consumer is idle.
    pub fetch_wait: Duration,
    /// Delay before a deferred or failed message is redelivered.
    pub retry_delay: Duration,
    /// How long the server waits for an ack before it redelivers.
    pub ack_wait: Duration,
    /// Put before the projection's durable consumer name: empty for the live workers,
    /// `rebuild_` for a rebuild's (`messaging::durables::REBUILD_PREFIX`), so both read one
    /// stream side by side. The NATS permissions name exactly these consumers.
    pub consumer_prefix: String,
    /// The Postgres schema the projection's tables live in; `None` is the live tables
    /// (`public`). A rebuild writes into a schema of its own.
    pub schema: Option<String>,
    /// Whether each event gets a span in the trace that caused it. Live workers do; a
    /// rebuild does not, since replaying history is not part of the original requests (and
    /// a span per event would cost a third of its throughput).
    pub trace_events: bool,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            fetch_wait: Duration::from_millis(500),
            retry_delay: Duration::from_millis(200),
            ack_wait: Duration::from_secs(30),
            consumer_prefix: String::new(),
            schema: None,
            trace_events: true,
        }
    }
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub fetched: usize,
    pub applied: usize,
    /// Already applied before (a redelivery or a re-publish): acked without effect.
    pub duplicates: usize,
    /// Arrived before an earlier event of the same aggregate: nak'd to come back later.
    pub deferred: usize,
    pub dead_lettered: usize,
}

/// Why a step could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("fetching from JetStream: {0}")]
    Fetch(String),
    #[error("read database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The fate of one message, decided inside the transaction and carried out after commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Applied,
    Duplicate,
    Deferred,
    DeadLettered,
}

/// Runs one projection.
pub struct Worker<P: Projection> {
    projection: P,
    pool: PgPool,
    /// The durable consumer, created on first use and restored (from the checkpoint) when it
    /// disappears or is changed: a rebuild's cut-over deletes it so the live worker resumes
    /// from the rebuilt checkpoint.
    keeper: Keeper,
    /// When the keeper last asked the server about the consumer.
    checked: std::sync::Mutex<Option<tokio::time::Instant>>,
    js: jetstream::Context,
    stream: String,
    settings: WorkerSettings,
}

/// The reason of an event dead-lettered only because an earlier one of its aggregate is.
pub const HELD: &str = "held behind an earlier dead letter of its aggregate";

/// SQL that takes the projection's cut-over lock: shared by live batches, exclusive for a
/// rebuild's cut-over, so the swap never lands in the middle of a batch.
pub const BATCH_LOCK: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtext('projection:' || $1)::bigint)";
pub const CUTOVER_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('projection:' || $1)::bigint)";

impl<P: Projection> Worker<P> {
    /// Ensures the stream and the projection's durable consumer exist.
    pub async fn new(
        projection: P,
        pool: PgPool,
        js: &jetstream::Context,
        namespace: &Namespace,
        stream_settings: &StreamSettings,
        settings: WorkerSettings,
    ) -> anyhow::Result<Self> {
        let context = projection.context();
        // The stream is its context's to create; until it exists, batches fail and retry.
        let _ = stream_settings;
        if let Some(schema) = &settings.schema {
            anyhow::ensure!(
                schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "schema {schema:?} must be lower-case letters, digits and _"
            );
        }
        let durable = format!("{}{}", settings.consumer_prefix, projection.name());
        let keeper = Keeper::of_events(
            js,
            namespace,
            context,
            &durable,
            &format!("streamshop projection {}", projection.name()),
            settings.ack_wait,
            (settings.batch_size * 4) as i64,
        );
        let worker = Self {
            projection,
            pool,
            keeper,
            checked: std::sync::Mutex::new(None),
            js: js.clone(),
            stream: namespace.stream(context),
            settings,
        };
        if let Err(e) = worker.consumer().await {
            tracing::info!(projection = worker.name(), error = %service_kit::problem::ErrorChain(&*e), "no consumer yet (is the stream there?); the worker retries");
        }
        Ok(worker)
    }

    /// The durable consumer; (re)created to start after the checkpoint when missing, or from
    /// the beginning of a stream made again since the checkpoint.
    async fn consumer(&self) -> anyhow::Result<PullConsumer> {
        self.keeper
            .consumer(|stream_created| async move {
                let mut tx = self.pool.begin().await?;
                self.scope(&mut tx).await?;
                let after = bookkeeping::start_on_stream(
                    &mut tx,
                    self.name(),
                    &self.stream,
                    stream_created,
                )
                .await?;
                tx.commit().await?;
                Ok(if after == 0 {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: after + 1,
                    }
                })
            })
            .await
    }

    /// Whether the durable consumer is held as declared (for `/readyz`).
    pub fn consumer_intact(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.keeper.intact()
    }

    /// Points the transaction at the projection's tables (a rebuild's schema) or, for the live
    /// tables, takes the shared cut-over lock.
    async fn scope(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        match &self.settings.schema {
            Some(schema) => {
                sqlx::query(&format!("SET LOCAL search_path TO {schema}"))
                    .execute(conn)
                    .await?;
            }
            None => {
                sqlx::query(BATCH_LOCK)
                    .bind(self.name())
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// How far behind the stream the projection is: the stream's last sequence minus the
    /// checkpoint (0 when caught up).
    pub async fn lag(&self) -> anyhow::Result<u64> {
        let last = self
            .js
            .get_stream(&self.stream)
            .await?
            .info()
            .await?
            .state
            .last_sequence;
        Ok(last.saturating_sub(self.checkpoint().await?))
    }

    /// The checkpoint in this worker's tables.
    pub async fn checkpoint(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(schema) = &self.settings.schema {
            sqlx::query(&format!("SET LOCAL search_path TO {schema}"))
                .execute(&mut *tx)
                .await?;
        }
        bookkeeping::checkpoint(&mut tx, self.name()).await
    }

    /// The durable consumer's name.
    pub fn durable_name(&self) -> &str {
        self.keeper.name()
    }

    /// Runs batches until `shutdown`; the batch in hand is always finished, and a failed
    /// batch is retried after a backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(projection = self.name(), "projection worker started");
        let what = format!("{} batch", self.name());
        service_kit::retry::until_cancelled(&what, &shutdown, Backoff::default(), || async {
            let outcome = self.process_batch().await?;
            if outcome.fetched > 0 {
                tracing::debug!(projection = self.name(), ?outcome, "batch done");
            }
            Ok::<(), WorkerError>(())
        })
        .await;
        tracing::info!(projection = self.name(), "projection worker stopped");
    }

    /// One step: fetch up to `batch_size` messages, apply them and the checkpoint in one
    /// transaction, then ack, nak or terminate each.
    pub async fn process_batch(&self) -> Result<BatchOutcome, WorkerError> {
        let messages = self.fetch().await?;
        let mut outcome = BatchOutcome {
            fetched: messages.len(),
            ..Default::default()
        };
        if messages.is_empty() {
            return Ok(outcome);
        }
        // One span per event, joined to the trace of the command that caused it; each ends
        // when its message is settled, after the batch's transaction.
        let spans: Vec<tracing::Span> = messages.iter().map(|m| self.event_span(m)).collect();
        let verdicts = match self.apply_all(&messages).await {
            Ok(v) => v,
            Err(e) if messages.len() > 1 && is_data_error(&e) => {
                // Find the bad message: one transaction per message.
                tracing::warn!(projection = self.name(), error = %service_kit::problem::ErrorChain(&e), "batch hit a data error; replaying one by one");
                let mut verdicts = Vec::with_capacity(messages.len());
                for message in &messages {
                    verdicts.push(self.apply_one_or_dead_letter(message).await?);
                }
                verdicts
            }
            Err(e) if messages.len() == 1 && is_data_error(&e) => {
                vec![self.apply_one_or_dead_letter(&messages[0]).await?]
            }
            Err(e) => {
                // Transient: roll back (already done), hand the batch back for later.
                for message in &messages {
                    self.settle(message, AckKind::Nak(Some(self.settings.retry_delay)))
                        .await;
                }
                return Err(WorkerError::Database(e));
            }
        };
        // The checkpoint just committed is the highest sequence this batch did not defer.
        let last_seen = messages.iter().map(last_sequence).max().unwrap_or(0);
        let committed = messages
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v != Verdict::Deferred)
            .map(|(m, _)| stream_sequence(m))
            .max();
        if let Some(committed) = committed {
            metrics::gauge!("projection_lag", "projection" => self.name())
                .set(last_seen.saturating_sub(committed) as f64);
        }
        for ((message, verdict), span) in messages.iter().zip(verdicts).zip(spans) {
            let label = match verdict {
                Verdict::Applied => "applied",
                Verdict::Duplicate => "duplicate",
                Verdict::Deferred => "deferred",
                Verdict::DeadLettered => "dead_lettered",
            };
            metrics::counter!("projection_events_total", "projection" => self.name(), "verdict" => label)
                .increment(1);
            let kind = match verdict {
                Verdict::Applied => {
                    outcome.applied += 1;
                    AckKind::Ack
                }
                Verdict::Duplicate => {
                    outcome.duplicates += 1;
                    AckKind::Ack
                }
                Verdict::Deferred => {
                    outcome.deferred += 1;
                    AckKind::Nak(Some(self.settings.retry_delay))
                }
                Verdict::DeadLettered => {
                    outcome.dead_lettered += 1;
                    AckKind::Term
                }
            };
            span.record("verdict", label);
            self.settle(message, kind).instrument(span).await;
        }
        Ok(outcome)
    }

    /// Up to `batch_size` messages, through the shared consumer loop's fetch (which waits on
    /// the server when idle instead of spinning).
    async fn fetch(&self) -> Result<Vec<jetstream::Message>, WorkerError> {
        let consumer = self
            .consumer()
            .await
            .map_err(|e| WorkerError::Fetch(format!("{e:#}")))?;
        let wait = self.settings.fetch_wait;
        let messages = match consume::fetch(&consumer, self.settings.batch_size, wait).await {
            Ok(messages) => messages,
            Err(e) => {
                // The consumer may be gone (a rebuild's cut-over): look again next time.
                self.keeper.forget().await;
                return Err(WorkerError::Fetch(e.to_string()));
            }
        };
        // Idle: make sure the consumer is still there as declared (a rebuild's cut-over
        // deletes it; an administrator may have changed it), at most once a second.
        if messages.is_empty() && self.check_due() {
            if let Err(e) = self.keeper.check().await {
                tracing::debug!(projection = self.name(), error = %e, "could not check the consumer");
            }
        }
        Ok(messages)
    }

    /// Whether a second has passed since the consumer was last checked (and notes now).
    fn check_due(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut checked = self.checked.lock().expect("check time");
        let due = checked.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            *checked = Some(now);
        }
        due
    }

    /// The span of one consumed event, joined to the trace of its `traceparent` header (none
    /// for a message without one, or in a rebuild); counts it as a redelivery when it is one.
    fn event_span(&self, message: &jetstream::Message) -> tracing::Span {
        consume::note_delivery(message, self.keeper.name());
        let headers = message.headers.as_ref();
        if !self.settings.trace_events || service_kit::trace::of_message(headers).is_none() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "projection.event",
            otel.kind = "consumer",
            projection = self.name(),
            subject = %message.subject,
            stream_sequence = stream_sequence(message),
            verdict = tracing::field::Empty,
        );
        service_kit::trace::join_message(&span, headers);
        span
    }

    /// Settles through the shared consumer loop (which counts a terminated message as a dead
    /// letter); a failed ack is harmless, since positions drop a redelivered duplicate.
    async fn settle(&self, message: &jetstream::Message, kind: AckKind) {
        consume::settle(message, kind, self.keeper.name()).await;
    }

    /// Applies every message and the checkpoint in one transaction: the positions of every
    /// aggregate in the batch are claimed in one statement, verdicts are decided in memory, and
    /// the projection writes all applied changes with a few set-based statements.
    async fn apply_all(
        &self,
        messages: &[jetstream::Message],
    ) -> Result<Vec<Verdict>, sqlx::Error> {
        let name = self.name();
        let envelopes: Vec<Result<Envelope, String>> = messages
            .iter()
            .map(|m| Envelope::from_slice(&m.payload).map_err(|e| e.to_string()))
            .collect();
        let mut keys: Vec<(&str, &str)> = envelopes
            .iter()
            .flatten()
            .map(|e| (e.aggregatetype.as_str(), e.subject.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();

        let mut tx = self.pool.begin().await?;
        self.scope(&mut tx).await?;
        let claimed = bookkeeping::claim_positions(&mut tx, name, &keys).await?;
        let mut positions: std::collections::HashMap<(&str, &str), u64> =
            claimed.iter().map(|(k, p)| (*k, p.sequence)).collect();
        let mut held: Vec<(&str, &str)> = Vec::new();
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut changes = Vec::new();
        let mut poison: Vec<(usize, String)> = Vec::new();
        let mut max_sequence = 0;
        for (i, (message, envelope)) in messages.iter().zip(&envelopes).enumerate() {
            let verdict = match envelope {
                Err(reason) => {
                    poison.push((i, reason.clone()));
                    Verdict::DeadLettered
                }
                Ok(envelope) => {
                    let key = (envelope.aggregatetype.as_str(), envelope.subject.as_str());
                    let position = positions.get(&key).copied().unwrap_or(0);
                    if envelope.sequence <= position {
                        Verdict::Duplicate
                    } else if envelope.sequence > position + 1 {
                        tracing::debug!(
                            projection = name,
                            aggregate_id = %envelope.subject,
                            sequence = envelope.sequence,
                            position,
                            "event arrived before its predecessor; deferring"
                        );
                        Verdict::Deferred
                    } else {
                        // A dead letter moves the position too: the stream goes on. Its
                        // aggregate is held, so its later events are dead-lettered behind it
                        // in order rather than applied to a state that misses it.
                        positions.insert(key, envelope.sequence);
                        let was_held = claimed.get(&key).is_some_and(|p| p.held);
                        if was_held || held.contains(&key) {
                            poison.push((i, HELD.to_owned()));
                            Verdict::DeadLettered
                        } else {
                            match self.projection.decode(envelope) {
                                Ok(change) => {
                                    changes.push(change);
                                    Verdict::Applied
                                }
                                Err(reason) => {
                                    poison.push((i, reason));
                                    held.push(key);
                                    Verdict::DeadLettered
                                }
                            }
                        }
                    }
                }
            };
            if verdict != Verdict::Deferred {
                max_sequence = max_sequence.max(stream_sequence(message));
            }
            verdicts.push(verdict);
        }
        if !changes.is_empty() {
            self.projection.write(&mut tx, &changes).await?;
        }
        for (i, reason) in &poison {
            self.dead_letter(&mut tx, &messages[*i], reason).await?;
        }
        let moved: Vec<(&str, &str, u64)> = positions
            .iter()
            .filter(|(key, seq)| claimed.get(*key).map(|p| p.sequence) != Some(**seq))
            .map(|((t, id), seq)| (*t, *id, *seq))
            .collect();
        bookkeeping::set_positions(&mut tx, name, &moved).await?;
        bookkeeping::set_held(&mut tx, name, &held, true).await?;
        if max_sequence > 0 {
            let last_seen = messages.iter().map(last_sequence).max().unwrap_or(0);
            bookkeeping::advance_checkpoint(
                &mut tx,
                self.name(),
                &self.stream,
                max_sequence,
                last_seen,
            )
            .await?;
        }
        if verdicts.contains(&Verdict::Applied) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::UPDATED_CHANNEL)
                .bind(self.name())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(verdicts)
    }

    /// One message alone; a data error dead-letters it in a fresh transaction.
    async fn apply_one_or_dead_letter(
        &self,
        message: &jetstream::Message,
    ) -> Result<Verdict, sqlx::Error> {
        match self.apply_all(std::slice::from_ref(message)).await {
            Ok(v) => Ok(v[0]),
            Err(e) if is_data_error(&e) => {
                let mut tx = self.pool.begin().await?;
                self.scope(&mut tx).await?;
                // Only an event next in its aggregate's order gets as far as a write, so the
                // position moves past it (the stream goes on) and the aggregate is held: its
                // later events wait behind this one in the dead letters.
                if let Ok(envelope) = Envelope::from_slice(&message.payload) {
                    let key = (envelope.aggregatetype.as_str(), envelope.subject.as_str());
                    let claimed =
                        bookkeeping::claim_positions(&mut tx, self.name(), &[key]).await?;
                    let at = claimed.get(&key).copied().unwrap_or_default();
                    if at.sequence + 1 == envelope.sequence {
                        bookkeeping::set_positions(
                            &mut tx,
                            self.name(),
                            &[(key.0, key.1, envelope.sequence)],
                        )
                        .await?;
                        bookkeeping::set_held(&mut tx, self.name(), &[key], true).await?;
                    }
                }
                self.dead_letter(&mut tx, message, &format!("database refused it: {e}"))
                    .await?;
                bookkeeping::advance_checkpoint(
                    &mut tx,
                    self.name(),
                    &self.stream,
                    stream_sequence(message),
                    last_sequence(message),
                )
                .await?;
                tx.commit().await?;
                Ok(Verdict::DeadLettered)
            }
            Err(e) => Err(e),
        }
    }

    async fn dead_letter(
        &self,
        conn: &mut PgConnection,
        message: &jetstream::Message,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        tracing::warn!(projection = self.name(), subject = %message.subject, reason, "dead-lettering message");
        let envelope = Envelope::from_slice(&message.payload).ok();
        bookkeeping::record_dead_letter(
            conn,
            &DeadLetter {
                projection: self.name(),
                stream: &self.stream,
                stream_sequence: stream_sequence(message),
                subject: message.subject.as_str(),
                reason,
                payload: &message.payload,
                aggregate: envelope
                    .as_ref()
                    .map(|e| (e.aggregatetype.as_str(), e.subject.as_str(), e.sequence)),
            },
        )
        .await
    }
}

fn stream_sequence(message: &jetstream::Message) -> u64 {
    message.info().map(|i| i.stream_sequence).unwrap_or(0)
}

/// The stream's last sequence as the message saw it: its own plus what was still pending.
fn last_sequence(message: &jetstream::Message) -> u64 {
    message
        .info()
        .map(|i| i.stream_sequence + i.pending)
        .unwrap_or(0)
}

/// Errors that the same message will always hit again: bad data or a broken constraint.
pub(crate) fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}
