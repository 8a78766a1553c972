//! The consumer: reads the order stream with a durable consumer (shared by every replica) and
//! records, for each event, a delivery to every endpoint that wants it and the customer's
//! email it calls for, in one transaction per batch with the aggregate's position and the
//! checkpoint. Only then are the events
//! acknowledged, so a killed replica's batch is read again and recorded once.
//!
//! Invariant: an aggregate's events are recorded in sequence order. An event whose predecessor
//! is not recorded yet (another replica holds it) waits and is redelivered, for longer than the
//! ack wait (see [`patience`]); one already recorded is acknowledged and dropped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, AckKind, Message};
use messaging::keeper::Keeper;
use messaging::{durables, BoundedContext, Envelope, Namespace};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::settings::ConsumerSettings;

/// How many deliveries an event waits for its aggregate's missing predecessor before it is
/// taken as the aggregate's first (the consumer started after the predecessor, so it never
/// comes): more than the ack wait's worth of retry delays. A predecessor a killed replica held
/// unacknowledged is given to a live one after the ack wait, so it is recorded first; with less
/// patience its successor went ahead, and the predecessor was then dropped as a duplicate.
pub fn patience(settings: &ConsumerSettings) -> i64 {
    let delay = settings.retry_delay.as_millis().max(1);
    let waits = settings.ack_wait.as_millis().div_ceil(delay);
    i64::try_from(waits)
        .unwrap_or(i64::MAX)
        .saturating_add(2)
        .max(4)
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded, with this many webhook deliveries and emails.
    Recorded { deliveries: usize, emails: usize },
    /// Recorded before: dropped.
    Duplicate,
    /// Its aggregate's earlier event is not recorded yet: read again after a delay.
    Early,
    /// Not an event: dead-lettered.
    Unreadable,
}

/// Reads one stream and records its events' deliveries.
pub struct Recorder {
    pool: PgPool,
    keeper: Keeper,
    stream: String,
    settings: ConsumerSettings,
    /// Wakes the senders when it recorded something for them.
    wake: Wake,
}

/// The senders' wake-ups: each lane is woken only by what it sends, and a wake-up given while
/// its lane is busy is kept for it (`notify_one`), so no recorded work waits for a poll.
#[derive(Clone, Default)]
pub struct Wake {
    pub deliveries: Arc<Notify>,
    pub emails: Arc<Notify>,
}

impl Recorder {
    /// The recorder of `context`'s stream, with the durable consumer `messaging::durables`
    /// declares for this service, made now if the stream is there (so what is published once
    /// the service is ready is read), else at the first step.
    pub async fn new(
        pool: PgPool,
        js: &jetstream::Context,
        namespace: &Namespace,
        context: BoundedContext,
        settings: ConsumerSettings,
        wake: Wake,
    ) -> Self {
        let stream = namespace.stream(context);
        let keeper = Keeper::of_events(
            js,
            namespace,
            context,
            durables::NOTIFICATIONS,
            "streamshop notifications",
            settings.ack_wait,
            (settings.batch_size * 4) as i64,
        );
        let recorder = Self {
            pool,
            keeper,
            stream,
            settings,
            wake,
        };
        if let Err(e) = recorder
            .keeper
            .consumer(|stream_created| recorder.start(stream_created))
            .await
        {
            tracing::info!(stream = %recorder.stream, error = %service_kit::problem::ErrorChain(&*e), "no consumer yet (is the stream there?); the recorder retries");
        }
        recorder
    }

    /// Whether the durable consumer is held as declared (for `/readyz`).
    pub fn consumer_intact(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.keeper.intact()
    }

    /// Fetches one batch (waiting up to the fetch wait when there is none), records it and
    /// settles each message; the verdicts in stream order.
    pub async fn step(&self) -> anyhow::Result<Vec<Verdict>> {
        let consumer = self
            .keeper
            .consumer(|stream_created| self.start(stream_created))
            .await?;
        let messages = match messaging::consume::fetch_lingering(
            &consumer,
            self.settings.batch_size,
            self.settings.fetch_wait,
            self.settings.linger,
        )
        .await
        {
            Ok(messages) => messages,
            Err(e) => {
                self.keeper.forget().await;
                return Err(e.into());
            }
        };
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let verdicts = match self.record(&messages).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                // Nothing was recorded: every message comes again.
                for message in &messages {
                    let delay = AckKind::Nak(Some(self.settings.retry_delay));
                    messaging::consume::settle(message, delay, durables::NOTIFICATIONS).await;
                }
                return Err(e.into());
            }
        };
        // Recorded and committed, not yet acknowledged: a crash here has the batch read again
        // (by this replica or another) and dropped as duplicates.
        service_kit::failpoint::hit("notifications.after_record");
        let (mut deliveries, mut emails) = (false, false);
        for (message, verdict) in messages.iter().zip(&verdicts) {
            let kind = match verdict {
                Verdict::Recorded {
                    deliveries: d,
                    emails: e,
                } => {
                    deliveries |= *d > 0;
                    emails |= *e > 0;
                    AckKind::Ack
                }
                Verdict::Duplicate => AckKind::Ack,
                Verdict::Early => AckKind::Nak(Some(self.settings.retry_delay)),
                Verdict::Unreadable => AckKind::Term,
            };
            messaging::consume::settle(message, kind, durables::NOTIFICATIONS).await;
        }
        if deliveries {
            self.wake.deliveries.notify_one();
        }
        if emails {
            self.wake.emails.notify_one();
        }
        Ok(verdicts)
    }

    /// Where a consumer made (again) starts: after the checkpoint on the same stream, else at
    /// new events (endpoints are told what happens after they are registered).
    async fn start(
        &self,
        stream_created: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<DeliverPolicy> {
        // A checkpoint on a stream made since is no position on this one.
        let after: i64 = sqlx::query_scalar(
            "INSERT INTO consumer_checkpoints (stream, stream_created, stream_sequence) \
             VALUES ($1, $2, 0) ON CONFLICT (stream) DO UPDATE SET stream_created = $2, \
             stream_sequence = CASE WHEN consumer_checkpoints.stream_created = $2 \
             THEN consumer_checkpoints.stream_sequence ELSE 0 END \
             RETURNING stream_sequence",
        )
        .bind(&self.stream)
        .bind(stream_created)
        .fetch_one(&self.pool)
        .await?;
        Ok(match after {
            0 => DeliverPolicy::New,
            after => DeliverPolicy::ByStartSequence {
                start_sequence: after as u64 + 1,
            },
        })
    }

    /// Records a batch in one transaction; the verdicts in order.
    async fn record(&self, messages: &[Message]) -> Result<Vec<Verdict>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut last = None;
        for message in messages {
            let info = message.info().ok();
            let stream_sequence = info.as_ref().map_or(0, |i| i.stream_sequence as i64);
            let delivered = info.as_ref().map_or(1, |i| i.delivered);
            let verdict = match Envelope::from_slice(&message.payload) {
                Ok(event) => self.record_event(&mut tx, &event, delivered).await?,
                Err(e) => {
                    sqlx::query(
                        "INSERT INTO notification_dead_letters \
                         (stream, stream_sequence, subject, reason, payload) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&self.stream)
                    .bind(stream_sequence)
                    .bind(message.subject.as_str())
                    .bind(e.to_string())
                    .bind(message.payload.as_ref())
                    .execute(&mut *tx)
                    .await?;
                    tracing::warn!(stream = %self.stream, stream_sequence, error = %e, "not an event; dead-lettered");
                    Verdict::Unreadable
                }
            };
            if verdict != Verdict::Early {
                last = Some(stream_sequence).max(last);
            }
            verdicts.push(verdict);
        }
        if let Some(sequence) = last {
            self.checkpoint(&mut tx, sequence).await?;
        }
        tx.commit().await?;
        for verdict in &verdicts {
            let label = match verdict {
                Verdict::Recorded { .. } => "recorded",
                Verdict::Duplicate => "duplicate",
                Verdict::Early => "early",
                Verdict::Unreadable => "unreadable",
            };
            metrics::counter!("notifications_events_total", "verdict" => label).increment(1);
        }
        Ok(verdicts)
    }

    /// Moves the checkpoint forward to `sequence` (never back: replicas share the stream).
    async fn checkpoint(&self, tx: &mut PgConnection, sequence: i64) -> Result<(), sqlx::Error> {
        let stream = &self.stream;
        sqlx::query(
            "UPDATE consumer_checkpoints \
             SET stream_sequence = GREATEST(stream_sequence, $2) WHERE stream = $1",
        )
        .bind(stream)
        .bind(sequence)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Records one event if it is its aggregate's next.
    async fn record_event(
        &self,
        tx: &mut PgConnection,
        event: &Envelope,
        delivered: i64,
    ) -> Result<Verdict, sqlx::Error> {
        let sequence = event.sequence as i64;
        let recorded: Option<i64> = sqlx::query_scalar(
            "SELECT sequence FROM consumer_positions WHERE stream = $1 AND aggregate_id = $2 \
             FOR UPDATE",
        )
        .bind(&self.stream)
        .bind(&event.subject)
        .fetch_optional(&mut *tx)
        .await?;
        let patient = delivered >= patience(&self.settings);
        match recorded {
            Some(at) if sequence <= at => return Ok(Verdict::Duplicate),
            Some(at) if sequence != at + 1 && !patient => return Ok(Verdict::Early),
            None if sequence != 1 && !patient => return Ok(Verdict::Early),
            _ => {}
        }
        sqlx::query(
            "INSERT INTO consumer_positions (stream, aggregate_id, sequence) VALUES ($1, $2, $3) \
             ON CONFLICT (stream, aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence",
        )
        .bind(&self.stream)
        .bind(&event.subject)
        .bind(sequence)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO deliveries \
             (id, endpoint_id, event_id, event_type, aggregate_id, sequence, payload) \
             SELECT gen_random_uuid(), e.id, $1, $2, $3, $4, $5 FROM webhook_endpoints e \
             WHERE $2 = ANY (e.event_types) OR '*' = ANY (e.event_types) \
             ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        )
        .bind(event.id.to_string())
        .bind(event.name())
        .bind(&event.subject)
        .bind(sequence)
        .bind(sqlx::types::Json(as_sent(event)))
        .execute(&mut *tx)
        .await?;
        let emailed = if self.settings.emails {
            crate::emails::record(tx, event).await?
        } else {
            0
        };
        Ok(Verdict::Recorded {
            deliveries: inserted.rows_affected() as usize,
            emails: emailed,
        })
    }

    /// Records batches until `shutdown`; the batch in hand is finished.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(stream = %self.stream, "notifications consumer started");
        while !shutdown.is_cancelled() {
            // Never cut short: a batch fetched is recorded and settled (a fetch waits at most
            // the fetch wait).
            if let Err(e) = self.step().await {
                tracing::warn!(stream = %self.stream, error = %service_kit::problem::ErrorChain(&*e), "recording failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(self.settings.retry_delay.max(Duration::from_millis(200))) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
        tracing::info!(stream = %self.stream, "notifications consumer stopped");
    }
}

/// The CloudEvent as partners receive it: every field the schemas mark sensitive redacted.
pub fn as_sent(event: &Envelope) -> Value {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    contracts::sensitive::redact(&mut value["data"]);
    value
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::patience;
    use crate::settings::ConsumerSettings;

    fn settings(ack_wait_ms: u64, retry_delay_ms: u64) -> ConsumerSettings {
        ConsumerSettings {
            batch_size: 10,
            fetch_wait: Duration::from_millis(500),
            linger: Duration::ZERO,
            ack_wait: Duration::from_millis(ack_wait_ms),
            retry_delay: Duration::from_millis(retry_delay_ms),
            emails: false,
        }
    }

    /// Redelivered at least a retry delay apart, an event that reaches its patience has waited
    /// longer than the ack wait, after which a dead replica's messages are given to another.
    #[test]
    fn an_event_waits_out_the_ack_wait_before_it_goes_without_its_predecessor() {
        for (ack_wait, delay) in [(30_000, 500), (30_000, 100), (1_000, 300), (10, 500)] {
            let n = patience(&settings(ack_wait, delay));
            assert!(
                (n - 1) * delay as i64 > ack_wait as i64,
                "{n} deliveries of {delay} ms against {ack_wait} ms"
            );
            assert!(n >= 4);
        }
        assert_eq!(patience(&settings(30_000, 500)), 62);
    }
}
