//! The outbox relay: publishes committed events to JetStream, in outbox order, then deletes
//! their outbox rows.
//!
//! One relay per database publishes at a time: leadership is a session advisory lock held on
//! the relay's own connection, so a second replica stands by and takes over within one poll
//! interval when the leader dies. The relay wakes on a commit in this process (a `Notify`), on
//! `NOTIFY outbox` from another replica (the payload names the committing pool, and its own
//! pool's are passed over), and otherwise polls.
//!
//! Invariant: an outbox row is deleted only after JetStream acknowledged its event; a crash in
//! between re-publishes it with the same `Nats-Msg-Id`, which the stream drops as a duplicate.
//! Invariant: per aggregate, events are published in sequence order (outbox ids grow with the
//! sequence, and a batch is published in id order, stopping at the first failure).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use messaging::envelope::{meta, msg_id, StoredEvent};
use messaging::streams::{ensure_stream, StreamSettings, MAX_MESSAGE_BYTES};
use messaging::{BoundedContext, Envelope, Namespace};
use service_kit::retry::{sleep_unless_cancelled, Backoff};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Advisory lock key that elects the publishing relay of a database ("outbox" in ASCII).
const LEADER_LOCK_KEY: i64 = 0x6f75_7462_6f78;

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub context: BoundedContext,
    pub namespace: Namespace,
    pub stream: StreamSettings,
    /// Most events published per round trip.
    pub batch_size: i64,
    /// Fallback wake-up when no notification arrives, and the standby's retry interval.
    pub poll_interval: Duration,
}

/// Why a batch did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("JetStream publish failed after {published} of the batch: {source}")]
    Publish {
        published: usize,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
}

/// Publishes one database's outbox to its context's stream.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    settings: RelaySettings,
    wake: Arc<Notify>,
    /// Outbox rows deleted since the relay last vacuumed the table.
    deleted: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the relay's role owns the outbox, which VACUUM requires (a service that runs
    /// as its own, lesser role leaves the outbox to autovacuum, tuned for it).
    owner: Arc<tokio::sync::OnceCell<bool>>,
    /// Rows JetStream acknowledged that are not deleted yet (see [`DELETE_DELAY`]).
    published: Arc<std::sync::Mutex<Published>>,
}

/// Acknowledged outbox rows waiting for their delete.
#[derive(Default)]
struct Published {
    ids: Vec<i64>,
    /// When the oldest of them was acknowledged.
    since: Option<std::time::Instant>,
}

/// How long acknowledged rows may wait for their delete. Deleting them in one statement per
/// batch made the relay a write transaction per event under light load (a third of a saga's
/// write transactions); now the deletes of every batch within this delay, or of
/// `batch_size` rows, share one. Until then each batch's read skips them by id (never by an id
/// bound: ids commit out of order). A relay that dies before the delete leaves them to be
/// published again by the next leader, which JetStream's duplicate window and the consumers'
/// per-aggregate positions turn into no-ops, as after any crash between publish and delete.
pub const DELETE_DELAY: Duration = Duration::from_millis(250);

/// The relay vacuums the outbox after deleting this many rows. A queue table churns: every row
/// is inserted and deleted within milliseconds, and autovacuum visits at most once a minute, so
/// without this each batch's `ORDER BY id LIMIT` walks thousands of dead entries first (it cost
/// the orchestrator's database 2 ms a batch under load).
const VACUUM_EVERY: u64 = 2_000;

impl Relay {
    /// `wake` is the `Notify` the command bus signals after each commit.
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        settings: RelaySettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            js,
            settings,
            wake,
            deleted: Default::default(),
            owner: Default::default(),
            published: Default::default(),
        }
    }

    async fn owns_outbox(&self, conn: &mut PgConnection) -> bool {
        *self
            .owner
            .get_or_init(|| async {
                sqlx::query_scalar::<_, bool>(
                    "SELECT coalesce(bool_or(tableowner = current_user), false) FROM pg_tables \
                     WHERE schemaname = current_schema() AND tablename = 'outbox'",
                )
                .fetch_one(conn)
                .await
                .unwrap_or(false)
            })
            .await
    }

    /// Runs until `shutdown`; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let listener = tokio::spawn(forward_notifications(
            self.pool.clone(),
            self.wake.clone(),
            shutdown.clone(),
        ));
        self.ensure_stream(&shutdown).await;
        while !shutdown.is_cancelled() {
            match self.try_lead().await {
                Ok(Some(conn)) => self.lead(conn, &shutdown).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "outbox relay cannot reach its database")
                }
            }
            service_kit::retry::sleep_unless_cancelled(self.settings.poll_interval, &shutdown)
                .await;
        }
        let _ = listener.await;
        tracing::info!("outbox relay stopped");
    }

    async fn ensure_stream(&self, shutdown: &CancellationToken) {
        let settings = &self.settings;
        service_kit::retry::until_ok(
            "creating or finding the event stream",
            shutdown,
            service_kit::retry::Backoff::default(),
            || {
                ensure_stream(
                    &self.js,
                    &settings.namespace,
                    settings.context,
                    &settings.stream,
                )
            },
        )
        .await;
    }

    /// A dedicated connection holding the leader lock, or `None` when another relay leads.
    /// The connection is not pooled: closing it is what releases the lock.
    pub async fn try_lead(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        Ok(leader.then_some(conn))
    }

    async fn lead(&self, mut conn: PgConnection, shutdown: &CancellationToken) {
        tracing::info!(context = %self.settings.context, "outbox relay is the leader");
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match self.publish_batch(&mut conn).await {
                Ok(n) => {
                    backoff.reset();
                    if shutdown.is_cancelled() {
                        return;
                    }
                    if n as i64 == self.settings.batch_size {
                        continue;
                    }
                    // Idle: wake for new rows, or when the acknowledged ones are due for
                    // their delete.
                    let wait = self
                        .delete_due_in()
                        .map_or(self.settings.poll_interval, |due| {
                            due.min(self.settings.poll_interval)
                        });
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            if let Err(e) = self.delete_published(&mut conn).await {
                                tracing::debug!(error = %service_kit::problem::ErrorChain(&e), "deleting published outbox rows at shutdown failed");
                            }
                            return;
                        }
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(RelayError::Database(e)) => {
                    // Leadership may be gone with the connection: give it up and re-elect.
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "outbox relay lost its database connection");
                    return;
                }
                Err(e @ RelayError::Publish { .. }) => {
                    let wait = backoff.failed();
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), retry_in = ?wait, "outbox publish failed");
                    if !sleep_unless_cancelled(wait, shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// How long until the acknowledged rows are due for their delete; `None` when there
    /// are none.
    fn delete_due_in(&self) -> Option<Duration> {
        let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published
            .since
            .map(|since| DELETE_DELAY.saturating_sub(since.elapsed()))
    }

    /// Deletes every acknowledged row in one statement.
    pub async fn delete_published(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let ids = {
            let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.ids.clone()
        };
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.ids.drain(..ids.len());
            // Only this relay's own task adds rows, so nothing should be left; if something
            // is, it waits its own delay.
            published.since = (!published.ids.is_empty()).then(std::time::Instant::now);
        }
        let deleted = self
            .deleted
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed)
            + ids.len() as u64;
        if deleted >= VACUUM_EVERY && self.owns_outbox(conn).await {
            self.deleted.store(0, std::sync::atomic::Ordering::Relaxed);
            // Outside any transaction, on the leader's own connection; a failure only
            // leaves the work to autovacuum.
            if let Err(e) = sqlx::query("VACUUM (SKIP_LOCKED) outbox")
                .execute(&mut *conn)
                .await
            {
                tracing::debug!(error = %service_kit::problem::ErrorChain(&e), "vacuuming the outbox failed");
            }
        }
        Ok(())
    }

    /// One step: publishes up to `batch_size` outbox events in order and waits for
    /// JetStream's acknowledgements. The rows of the acknowledged prefix are deleted with
    /// those of later batches, when [`DELETE_DELAY`] has passed since the oldest or when
    /// `batch_size` are waiting ([`Relay::delete_published`] deletes them at once). Returns
    /// how many were published. The caller must hold leadership on `conn`.
    pub async fn publish_batch(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let skip = {
            let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            published.ids.clone()
        };
        let rows = sqlx::query(
            // LATERAL makes each outbox row one primary-key lookup of its event, whatever the
            // planner's statistics say about the two tables.
            "SELECT o.id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, \
                    e.event_version, e.payload, e.metadata, e.recorded_at \
             FROM (SELECT * FROM outbox WHERE id <> ALL($2) ORDER BY id LIMIT $1) o \
             CROSS JOIN LATERAL (SELECT * FROM events e \
                 WHERE e.aggregate_type = o.aggregate_type AND e.aggregate_id = o.aggregate_id \
                   AND e.sequence = o.sequence) e \
             ORDER BY o.id",
        )
        .bind(self.settings.batch_size)
        .bind(&skip)
        .fetch_all(&mut *conn)
        .await?;
        let stream = self.settings.context.stream_base();
        // The backlog as of this look: a short batch is all there is; a full one may have
        // more behind it. The id span bounds it from two index lookups, where a count would
        // scan the very backlog being drained.
        let backlog = if rows.len() as i64 >= self.settings.batch_size {
            sqlx::query_scalar::<_, Option<i64>>("SELECT max(id) - min(id) + 1 FROM outbox")
                .fetch_one(&mut *conn)
                .await?
                .unwrap_or(0)
        } else {
            rows.len() as i64
        };
        metrics::gauge!("outbox_backlog", "stream" => stream).set(backlog as f64);
        if rows.is_empty() {
            // Nothing new (a poll, or a wake-up whose rows the last step took): delete only
            // what is due.
            if self.delete_due_in().is_some_and(|due| due.is_zero()) {
                self.delete_published(conn).await?;
            }
            return Ok(0);
        }

        let batch_started = std::time::Instant::now();
        let mut ids = Vec::with_capacity(rows.len());
        let mut pending = Vec::with_capacity(rows.len());
        let mut failure = None;
        let mut dead = Dead::default();
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let metadata: serde_json::Value = row.try_get("metadata")?;
            let stored = self.stored_event(row, &metadata)?;
            let envelope = Envelope::from_stored(&stored).to_vec();
            // What the stream can never store must not hold up what follows it.
            if envelope.len() + HEADER_ROOM > MAX_MESSAGE_BYTES {
                tracing::error!(
                    outbox_id = id,
                    aggregate_id = %stored.aggregate_id,
                    sequence = stored.sequence,
                    bytes = envelope.len(),
                    "an outbox event is larger than the stream takes; dead-lettered"
                );
                dead.push(
                    id,
                    &stored,
                    format!(
                        "{} bytes exceed the stream's limit of {MAX_MESSAGE_BYTES}",
                        envelope.len()
                    ),
                );
                continue;
            }
            // The publish joins the trace of the command that stored the event, and the
            // message carries the publish span's context on to every consumer.
            let span = tracing::info_span!(
                "outbox.publish",
                otel.kind = "producer",
                stream = self.settings.context.stream_base(),
                aggregate_id = %stored.aggregate_id,
                sequence = stored.sequence,
                event_type = %stored.event_type,
            );
            let stored_traceparent = metadata_value(&metadata, meta::TRACEPARENT);
            service_kit::trace::join(&span, stored_traceparent.as_deref());
            let traceparent = service_kit::trace::traceparent_of(&span).or(stored_traceparent);
            match self
                .send(&stored, envelope, traceparent)
                .instrument(span)
                .await
            {
                Ok(ack) => {
                    ids.push(id);
                    pending.push(ack);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }

        // Acknowledgements arrive in publish order; keep the prefix that was stored.
        let mut acked = 0;
        for ack in pending {
            match ack.await {
                Ok(_) => acked += 1,
                Err(e) => {
                    failure.get_or_insert(e);
                    break;
                }
            }
        }
        service_kit::failpoint::hit("outbox.after_publish");
        if !dead.ids.is_empty() {
            dead.store(&mut *conn).await?;
            metrics::counter!("outbox_dead_letters_total", "stream" => stream)
                .increment(dead.ids.len() as u64);
        }
        metrics::gauge!("outbox_backlog", "stream" => stream)
            .set(backlog.saturating_sub(acked as i64) as f64);
        metrics::counter!("outbox_published_total", "stream" => stream).increment(acked as u64);
        metrics::histogram!("outbox_batch_publish_seconds", "stream" => stream)
            .record(batch_started.elapsed().as_secs_f64());
        let due = {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            if acked > 0 {
                published.ids.extend_from_slice(&ids[..acked]);
                published.since.get_or_insert_with(std::time::Instant::now);
            }
            published.ids.len() as i64 >= self.settings.batch_size
                || published
                    .since
                    .is_some_and(|since| since.elapsed() >= DELETE_DELAY)
        };
        if due {
            self.delete_published(conn).await?;
        }
        tracing::debug!(published = acked, "outbox batch published");
        match failure {
            None => Ok(acked + dead.ids.len()),
            Some(source) => Err(RelayError::Publish {
                published: acked,
                source,
            }),
        }
    }

    fn stored_event(
        &self,
        row: &sqlx::postgres::PgRow,
        metadata: &serde_json::Value,
    ) -> Result<StoredEvent, sqlx::Error> {
        let sequence: i64 = row.try_get("sequence")?;
        Ok(StoredEvent {
            context: self.settings.context,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: sequence as u64,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            correlation_id: metadata_value(metadata, meta::CORRELATION_ID),
            causation_id: metadata_value(metadata, meta::CAUSATION_ID),
            recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        })
    }

    async fn send(
        &self,
        event: &StoredEvent,
        envelope: Vec<u8>,
        traceparent: Option<String>,
    ) -> Result<
        async_nats::jetstream::context::PublishAckFuture,
        async_nats::jetstream::context::PublishError,
    > {
        let subject = self.settings.namespace.event_subject(
            event.context,
            &event.aggregate_id,
            &event.event_type,
        );
        let mut message = PublishMessage::build()
            .message_id(msg_id(
                &event.aggregate_type,
                &event.aggregate_id,
                event.sequence,
            ))
            .header("Content-Type", "application/cloudevents+json")
            .payload(envelope.into());
        if let Some(tp) = traceparent {
            message = message.header(service_kit::trace::TRACEPARENT, tp.as_str());
        }
        self.js.send_publish(subject, message).await
    }
}

/// Room left in a message for its headers (`Nats-Msg-Id`, `Content-Type`, `traceparent`: about
/// 200 bytes).
const HEADER_ROOM: usize = 1024;

/// Outbox rows of a batch that can never be published.
#[derive(Default)]
struct Dead {
    ids: Vec<i64>,
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    sequences: Vec<i64>,
    reasons: Vec<String>,
}

impl Dead {
    fn push(&mut self, id: i64, event: &StoredEvent, reason: String) {
        self.ids.push(id);
        self.aggregate_types.push(event.aggregate_type.clone());
        self.aggregate_ids.push(event.aggregate_id.clone());
        self.sequences.push(event.sequence as i64);
        self.reasons.push(reason);
    }

    /// Moves the rows from the outbox to `outbox_dead_letters`, in one statement.
    async fn store(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH dead AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], \
                 $4::bigint[], $5::text[]) AS d(id, aggregate_type, aggregate_id, sequence, reason)), \
             moved AS (DELETE FROM outbox WHERE id IN (SELECT id FROM dead)) \
             INSERT INTO outbox_dead_letters (id, aggregate_type, aggregate_id, sequence, reason) \
             SELECT * FROM dead ON CONFLICT (id) DO NOTHING",
        )
        .bind(&self.ids)
        .bind(&self.aggregate_types)
        .bind(&self.aggregate_ids)
        .bind(&self.sequences)
        .bind(&self.reasons)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A string from the event's metadata JSON object.
fn metadata_value(metadata: &serde_json::Value, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// Whether a `NOTIFY outbox` whose payload is `sender` (the committing session's
/// application name) wakes a relay whose pool is named `own`: not for its own pool's commits,
/// whose command bus has woken it already.
fn wakes(sender: &str, own: Option<&str>) -> bool {
    own != Some(sender)
}

/// Turns `NOTIFY outbox` from other replicas' commits into wake-ups of this relay.
async fn forward_notifications(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let own = pool
        .connect_options()
        .get_application_name()
        .map(str::to_owned);
    let mut listener = None;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen("outbox").await {
                    Ok(()) => {
                        listener = Some(l);
                        // Anything committed while we were not listening is found by this wake.
                        wake.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "cannot LISTEN outbox")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "cannot connect the outbox listener")
                }
            }
        }
        let Some(l) = listener.as_mut() else {
            if sleep_unless_cancelled(Duration::from_secs(1), &shutdown).await {
                continue;
            }
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = l.recv() => match received {
                Ok(n) => {
                    if wakes(n.payload(), own.as_deref()) {
                        wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "outbox listener lost; reconnecting");
                    listener = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wakes;

    #[test]
    fn a_relay_is_woken_by_other_pools_commits_only() {
        assert!(
            !wakes("orders/1a2b.0", Some("orders/1a2b.0")),
            "its own pool's"
        );
        assert!(
            wakes("orders/3c4d.0", Some("orders/1a2b.0")),
            "another replica's"
        );
        assert!(wakes("", Some("orders/1a2b.0")), "an unnamed session's");
        assert!(
            wakes("", None),
            "a relay on an unnamed pool hears every commit"
        );
    }
}
