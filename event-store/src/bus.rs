//! Executes a command against an event-sourced aggregate and reports what came of it.
//!
//! This is cqrs-es's load -> handle -> commit cycle (as in `CqrsFramework`), without `Query`
//! processors, on postgres-es's `events` table. Its load and its commit are its own: a load
//! reads the bus's snapshot and the events after it (cqrs-es 0.5's snapshot and aggregate
//! stores apply new events twice, so they are not used), and a commit goes through group
//! commit; the plain postgres-es store still reads whole histories (`load_events`). It adds
//! what command services need:
//! - the version reached, so HTTP can answer with it;
//! - retries with jitter of optimistic-concurrency conflicts;
//! - idempotency: a command with an idempotency key answers a repeat with the first answer
//!   (see migrations/0002_idempotency.sql for how that stays atomic with the commit);
//! - group commit: the appends of concurrent commands share one transaction (`group`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistedEventStore, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use domain::Rejection;
use messaging::envelope::meta;
use postgres_es::PostgresEventRepository;
use rand::Rng;
use serde_json::json;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use uuid::Uuid;

/// How many times a command is re-run after an optimistic-concurrency conflict.
const CONFLICT_RETRIES: u32 = 6;

/// Metadata keys of idempotent commands.
const IDEMPOTENCY_KEY: &str = "idempotency_key";
const REQUEST_HASH: &str = "request_hash";

/// Ids carried from the request into every event the command produces.
#[derive(Debug, Clone)]
pub struct CommandMetadata {
    pub command_id: Uuid,
    pub correlation_id: String,
    pub traceparent: String,
    /// `(key, request hash)`: a repeat with the same key and hash gets the first answer.
    pub idempotency: Option<(String, String)>,
}

impl CommandMetadata {
    fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (meta::CAUSATION_ID.to_owned(), self.command_id.to_string()),
            (meta::CORRELATION_ID.to_owned(), self.correlation_id.clone()),
            (meta::TRACEPARENT.to_owned(), self.traceparent.clone()),
        ]);
        if let Some((key, hash)) = &self.idempotency {
            map.insert(IDEMPOTENCY_KEY.to_owned(), key.clone());
            map.insert(REQUEST_HASH.to_owned(), hash.clone());
        }
        map
    }
}

/// What a command came to.
#[derive(Debug)]
pub enum Executed<A: Aggregate> {
    /// Accepted (now, or the first time under this idempotency key).
    Accepted {
        aggregate_id: String,
        /// The aggregate's version (last sequence) after the command.
        version: u64,
        /// The events the command appended (none when it changed nothing).
        events: Vec<A::Event>,
        /// The aggregate after the command (for a replay: as it is now).
        state: A,
        /// True when this answer repeats the first one of an idempotency key.
        replayed: bool,
    },
    /// Refused by the domain.
    Rejected {
        reason: String,
        message: String,
        retryable: bool,
        not_found: bool,
        replayed: bool,
    },
}

/// Why a command could not be executed at all.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("concurrent writes kept conflicting")]
    Conflict,
    #[error("the idempotency key was used with a different request")]
    KeyReused,
    #[error("a {event} event of {bytes} bytes exceeds the event log's limit of {limit} bytes")]
    TooLarge {
        event: String,
        bytes: usize,
        limit: usize,
    },
    #[error("database unavailable: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for BusError {
    fn from(e: sqlx::Error) -> Self {
        if service_kit::db::unavailable(&e) {
            Self::Unavailable(Box::new(e))
        } else {
            Self::Internal(Box::new(e))
        }
    }
}

/// A stored first answer.
struct Recorded {
    request_hash: String,
    aggregate_id: Option<String>,
    first_sequence: Option<i64>,
    last_sequence: Option<i64>,
    rejection: Option<serde_json::Value>,
}

/// Runs commands for one aggregate type.
pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<PostgresEventRepository, A>,
    pool: PgPool,
    services: A::Services,
    /// Woken after every commit so the in-process relay publishes at once.
    committed: Arc<Notify>,
    locks: crate::locks::AggregateLocks,
    /// Appends the decided events, with those of concurrent commands, in one transaction.
    group: crate::group::GroupCommit,
    /// The upcasters the store was given, for loads from a snapshot.
    upcasters: Vec<Arc<dyn EventUpcaster>>,
    /// Aggregates as this process last loaded or committed them, with their version, so a
    /// command need not reload (and re-decode) the whole history. A stale entry is harmless:
    /// an append on top of it conflicts and is retried from a fresh load, and an outcome that
    /// appends nothing is checked against the stored version first.
    states: std::sync::Mutex<HashMap<String, (A, u64)>>,
}

/// A row of a load: sequence (or the snapshot's version), event type and version (none for
/// the snapshot), payload (or the snapshot's state), metadata.
type LoadRow = (
    i64,
    Option<String>,
    Option<String>,
    serde_json::Value,
    Option<serde_json::Value>,
);

/// Most aggregates kept in memory per bus; past it the cache starts again empty.
const CACHED_STATES: usize = 10_000;

/// A snapshot is kept each time an aggregate's version crosses a multiple of this, so a load
/// reads at most this many events after its snapshot.
pub const SNAPSHOT_EVERY: u64 = 100;

/// An upcaster shared by the store and the bus's own loads.
struct Shared(Arc<dyn EventUpcaster>);

impl EventUpcaster for Shared {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        self.0.can_upcast(event_type, event_version)
    }

    fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        self.0.upcast(event)
    }
}

impl<A> CommandBus<A>
where
    A: Aggregate + Clone,
    A::Command: Clone,
    A::Error: Rejection,
{
    pub fn new(pool: PgPool, services: A::Services, committed: Arc<Notify>) -> Self {
        Self {
            store: PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
            group: crate::group::GroupCommit::start(pool.clone(), A::TYPE),
            upcasters: Vec::new(),
            pool,
            services,
            committed,
            locks: Default::default(),
            states: Default::default(),
        }
    }

    /// Transactions committed and commands appended in them, since the bus started.
    pub fn commit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        let stats = self.group.stats();
        (
            stats.transactions.load(Ordering::Relaxed),
            stats.commands.load(Ordering::Relaxed),
        )
    }

    /// Registers upcasters for stored events of older versions.
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.upcasters = upcasters.into_iter().map(Arc::from).collect();
        let shared = self
            .upcasters
            .iter()
            .map(|u| Box::new(Shared(u.clone())) as Box<dyn EventUpcaster>)
            .collect();
        self.store = self.store.with_upcasters(shared);
        self
    }

    /// Loads the aggregate from its latest snapshot and the events after it (from every event
    /// when it has no snapshot, or one that no longer decodes); returns it with its version
    /// and how many events were read.
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, u64, usize), BusError> {
        // One round trip: the snapshot's row (no event type) first, then the events after it.
        let mut rows: Vec<LoadRow> = sqlx::query_as(
            "WITH s AS (SELECT version, state FROM snapshots \
                        WHERE aggregate_type = $1 AND aggregate_id = $2) \
             SELECT * FROM ( \
               SELECT version AS sequence, NULL::text AS event_type, NULL::text AS event_version, \
                      state AS payload, NULL::json AS metadata FROM s \
               UNION ALL \
               SELECT sequence, event_type, event_version, payload, metadata FROM events \
               WHERE aggregate_type = $1 AND aggregate_id = $2 \
                 AND sequence > coalesce((SELECT version FROM s), 0)) u \
             ORDER BY event_type IS NOT NULL, sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        let snapshot = match rows.first() {
            Some((version, None, _, state, _)) => Some((*version, state.clone())),
            _ => None,
        };
        let mut from_snapshot = None;
        if let Some((version, state)) = snapshot {
            rows.remove(0);
            match serde_json::from_value::<A>(state) {
                Ok(state) => from_snapshot = Some((state, version as u64)),
                Err(e) => {
                    tracing::warn!(aggregate_id, error = %e, "a snapshot that no longer decodes; folding every event");
                    rows = self.rows_between(aggregate_id, 1, u64::MAX).await?;
                }
            }
        }
        let (mut state, from) = from_snapshot.unwrap_or_default();
        let read = rows.len();
        let mut version = from;
        for row in rows {
            let (sequence, event) = self.decode(aggregate_id, row)?;
            state.apply(event);
            version = sequence;
        }
        metrics::histogram!("aggregate_load_events", "aggregate" => A::TYPE).record(read as f64);
        Ok((state, version, read))
    }

    /// A stored row as the current version of its event, with its sequence.
    fn decode(&self, aggregate_id: &str, row: LoadRow) -> Result<(u64, A::Event), BusError> {
        let (sequence, event_type, event_version, payload, metadata) = row;
        let mut event = SerializedEvent {
            aggregate_id: aggregate_id.to_owned(),
            sequence: sequence as usize,
            aggregate_type: A::TYPE.to_owned(),
            event_type: event_type.unwrap_or_default(),
            event_version: event_version.unwrap_or_default(),
            payload,
            metadata: metadata.unwrap_or_default(),
        };
        for upcaster in &self.upcasters {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        let event =
            serde_json::from_value(event.payload).map_err(|e| BusError::Internal(Box::new(e)))?;
        Ok((sequence as u64, event))
    }

    /// The aggregate's events from sequence `first` to `last`, upcast, in order.
    async fn events_between(
        &self,
        aggregate_id: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<A::Event>, BusError> {
        self.rows_between(aggregate_id, first, last)
            .await?
            .into_iter()
            .map(|row| Ok(self.decode(aggregate_id, row)?.1))
            .collect()
    }

    /// The stored rows of the aggregate's events from sequence `first` to `last`, in order.
    async fn rows_between(
        &self,
        aggregate_id: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<LoadRow>, BusError> {
        Ok(sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload, metadata FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence BETWEEN $3 AND $4 \
             ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(i64::try_from(first).unwrap_or(i64::MAX))
        .bind(i64::try_from(last).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The aggregate's events, upcast to the current versions.
    pub async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<cqrs_es::EventEnvelope<A>>, BusError> {
        self.store.load_events(aggregate_id).await.map_err(infra)
    }

    /// The aggregate now and its version: from memory when this process knows it, else loaded.
    pub async fn state(&self, aggregate_id: &str) -> Result<(A, u64), BusError> {
        if let Some(hit) = self.cached(aggregate_id) {
            return Ok(hit);
        }
        let (state, version, _) = self.load(aggregate_id).await?;
        self.remember(aggregate_id, &state, version);
        Ok((state, version))
    }

    fn cached(&self, aggregate_id: &str) -> Option<(A, u64)> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(aggregate_id).cloned()
    }

    fn remember(&self, aggregate_id: &str, state: &A, version: u64) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.len() >= CACHED_STATES && !states.contains_key(aggregate_id) {
            states.clear();
        }
        states.insert(aggregate_id.to_owned(), (state.clone(), version));
    }

    fn forget(&self, aggregate_id: &str) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.remove(aggregate_id);
    }

    /// The last stored sequence of the aggregate (0 when it has none).
    async fn stored_version(&self, aggregate_id: &str) -> Result<u64, sqlx::Error> {
        let version: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(sequence), 0) FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(version as u64)
    }

    /// Loads the aggregate, handles the command and commits its events atomically (with their
    /// outbox and idempotency rows). A conflicting concurrent write makes it start again.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, BusError> {
        self.execute_on(aggregate_id, command, metadata, false)
            .await
    }

    /// Like [`execute`](Self::execute) for an aggregate whose id was just generated for this
    /// command: no history can exist, so the first attempt skips loading it. Should the id
    /// exist after all, the append conflicts and the retry loads it as usual.
    pub async fn execute_new(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, BusError> {
        self.execute_on(aggregate_id, command, metadata, true).await
    }

    async fn execute_on(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
        new: bool,
    ) -> Result<Executed<A>, BusError> {
        let _turn = self.locks.lock(aggregate_id).await;
        let mut attempt = 0;
        loop {
            if let Some((key, hash)) = &metadata.idempotency {
                if let Some(recorded) = self.recorded(key).await? {
                    return self.replay(recorded, hash).await;
                }
            }
            match self
                .execute_once(aggregate_id, command.clone(), metadata, new && attempt == 0)
                .await
            {
                Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    metrics::counter!("command_conflict_retries_total", "aggregate" => A::TYPE)
                        .increment(1);
                    let jitter = rand::rng().random_range(1..=(5u64 << attempt));
                    tracing::debug!(aggregate_id, attempt, "concurrency conflict; retrying");
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(AggregateError::AggregateConflict) => return Err(BusError::Conflict),
                Err(AggregateError::UserError(e)) => {
                    return self.rejected(&e, metadata).await;
                }
                Err(other) => return Err(infra(other)),
                Ok(executed) => return Ok(executed),
            }
        }
    }

    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
        new: bool,
    ) -> Result<Executed<A>, AggregateError<A::Error>> {
        let blank = |version: u64, aggregate: A| EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: version as usize,
            current_snapshot: None,
        };
        let remembered = if new { None } else { self.cached(aggregate_id) };
        let from_memory = remembered.is_some();
        let mut context = match remembered {
            _ if new => blank(0, A::default()),
            Some((state, version)) => blank(version, state),
            None => {
                let (state, version, _) = self.load(aggregate_id).await.map_err(unload)?;
                blank(version, state)
            }
        };
        let sink = EventSink::<A>::default();
        let mut handled = context
            .aggregate()
            .handle(command.clone(), &self.services, &sink)
            .await;
        let mut events = sink.collect().await;
        // Nothing to append means no conflict would reveal a stale memory: check the stored
        // version, and decide again from a fresh load if it moved.
        if from_memory && (handled.is_err() || events.is_empty()) {
            let stored = self
                .stored_version(aggregate_id)
                .await
                .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
            if stored != context.current_sequence as u64 {
                self.forget(aggregate_id);
                let (state, version, _) = self.load(aggregate_id).await.map_err(unload)?;
                context = blank(version, state);
                let sink = EventSink::<A>::default();
                handled = context
                    .aggregate()
                    .handle(command, &self.services, &sink)
                    .await;
                events = sink.collect().await;
            }
        }
        handled.map_err(AggregateError::UserError)?;
        let loaded_version = context.current_sequence as u64;
        // `handle` wrote each event through the sink, which applied it: this is the new state.
        let state = context.aggregate().clone();
        if events.is_empty() {
            self.remember(aggregate_id, &state, loaded_version);
            return Ok(Executed::Accepted {
                aggregate_id: aggregate_id.to_owned(),
                version: loaded_version,
                events,
                state,
                replayed: false,
            });
        }
        // An event the stream cannot store would stop the relay: refuse the command instead.
        for event in &events {
            let bytes = json_size(event);
            if bytes > messaging::streams::MAX_EVENT_DATA_BYTES {
                return Err(AggregateError::UnexpectedError(Box::new(EventTooLarge {
                    event: cqrs_es::DomainEvent::event_type(event),
                    bytes,
                })));
            }
        }
        let unexpected = |e: serde_json::Error| AggregateError::UnexpectedError(Box::new(e));
        let metadata = serde_json::to_value(metadata.to_map()).map_err(unexpected)?;
        let mut rows = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            rows.push(crate::group::Row {
                sequence: (loaded_version + 1 + i as u64) as i64,
                event_type: cqrs_es::DomainEvent::event_type(event),
                event_version: cqrs_es::DomainEvent::event_version(event),
                payload: serde_json::to_value(event).map_err(unexpected)?,
                metadata: metadata.clone(),
            });
        }
        let version = loaded_version + events.len() as u64;
        // Crossing a multiple of SNAPSHOT_EVERY: keep the new state, with these events.
        let snapshot = (version / SNAPSHOT_EVERY > loaded_version / SNAPSHOT_EVERY)
            .then(|| serde_json::to_value(&state).ok())
            .flatten()
            .map(|s| (version as i64, s));
        let append = crate::group::Append {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            rows,
            snapshot,
        };
        let failed = match self.group.append(append).await {
            crate::group::Outcome::Committed => None,
            // A rule of the store (a customer's fair share): answered like the domain's
            // rejections, never recorded under the idempotency key, since the same command
            // may pass once the customer's other orders are done.
            crate::group::Outcome::Refused { code, detail } => {
                self.forget(aggregate_id);
                return Ok(Executed::Rejected {
                    reason: code,
                    message: detail,
                    retryable: true,
                    not_found: false,
                    replayed: false,
                });
            }
            crate::group::Outcome::Conflict => Some(AggregateError::AggregateConflict),
            crate::group::Outcome::Unavailable(e) => {
                Some(AggregateError::DatabaseConnectionError(e.into()))
            }
            crate::group::Outcome::Failed(e) => Some(AggregateError::UnexpectedError(e.into())),
        };
        if let Some(e) = failed {
            // A conflict (or a commit whose fate is unknown): the next attempt loads.
            self.forget(aggregate_id);
            return Err(e);
        }
        self.committed.notify_one();
        self.remember(aggregate_id, &state, version);
        Ok(Executed::Accepted {
            aggregate_id: aggregate_id.to_owned(),
            version,
            events,
            state,
            replayed: false,
        })
    }

    /// Records a non-retryable rejection under the idempotency key (first writer wins).
    async fn rejected(
        &self,
        error: &A::Error,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, BusError> {
        let executed = Executed::Rejected {
            reason: error.code().to_owned(),
            message: error.to_string(),
            retryable: error.is_retryable(),
            not_found: error.is_not_found(),
            replayed: false,
        };
        let Some((key, hash)) = &metadata.idempotency else {
            return Ok(executed);
        };
        if error.is_retryable() {
            return Ok(executed);
        }
        let inserted = sqlx::query(
            "INSERT INTO idempotency (key, request_hash, command_id, rejection) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(hash)
        .bind(metadata.command_id.to_string())
        .bind(json!({
            "reason": error.code(),
            "message": error.to_string(),
            "not_found": error.is_not_found(),
        }))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(executed);
        }
        // Another execution under this key answered first: its answer stands.
        match self.recorded(key).await? {
            Some(recorded) => self.replay(recorded, hash).await,
            None => Ok(executed),
        }
    }

    async fn recorded(&self, key: &str) -> Result<Option<Recorded>, BusError> {
        let row = sqlx::query(
            "SELECT request_hash, aggregate_id, first_sequence, last_sequence, rejection \
             FROM idempotency WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Recorded {
                request_hash: r.try_get("request_hash")?,
                aggregate_id: r.try_get("aggregate_id")?,
                first_sequence: r.try_get("first_sequence")?,
                last_sequence: r.try_get("last_sequence")?,
                rejection: r.try_get("rejection")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| BusError::from(e))
    }

    /// The first answer under a key, rebuilt from the events it appended.
    async fn replay(&self, recorded: Recorded, hash: &str) -> Result<Executed<A>, BusError> {
        if recorded.request_hash != hash {
            return Err(BusError::KeyReused);
        }
        if let Some(rejection) = recorded.rejection {
            let text = |k: &str| rejection[k].as_str().unwrap_or_default().to_owned();
            return Ok(Executed::Rejected {
                reason: text("reason"),
                message: text("message"),
                retryable: false,
                not_found: rejection["not_found"].as_bool().unwrap_or(false),
                replayed: true,
            });
        }
        let aggregate_id = recorded.aggregate_id.unwrap_or_default();
        let (first, last) = (
            recorded.first_sequence.unwrap_or(0).max(0) as u64,
            recorded.last_sequence.unwrap_or(0).max(0) as u64,
        );
        // The events it appended, and the aggregate as it is now (from its snapshot and the
        // events after it): a repeat costs what a command costs, however long the history.
        let events = self.events_between(&aggregate_id, first, last).await?;
        let (state, _, _) = self.load(&aggregate_id).await?;
        Ok(Executed::Accepted {
            aggregate_id,
            version: last,
            events,
            state,
            replayed: true,
        })
    }
}

/// The length of `value`'s JSON, counted without building it.
fn json_size<T: cqrs_es::DomainEvent>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(0, |()| count.0)
}

/// A decided event too large for the event log (carried out of `execute_once` as cqrs-es's
/// unexpected error, and turned into [`BusError::TooLarge`] by [`infra`]).
#[derive(Debug, thiserror::Error)]
#[error("a {event} event of {bytes} bytes is too large")]
struct EventTooLarge {
    event: String,
    bytes: usize,
}

/// A load's error inside `execute_once`, in cqrs-es's terms.
fn unload<E: std::error::Error>(error: BusError) -> AggregateError<E> {
    match error {
        BusError::Unavailable(e) => AggregateError::DatabaseConnectionError(e),
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}

fn infra<E: std::error::Error>(error: AggregateError<E>) -> BusError {
    match error {
        AggregateError::AggregateConflict => BusError::Conflict,
        AggregateError::DatabaseConnectionError(e) => BusError::Unavailable(e),
        AggregateError::UnexpectedError(e) => match e.downcast::<EventTooLarge>() {
            Ok(too_large) => BusError::TooLarge {
                event: too_large.event,
                bytes: too_large.bytes,
                limit: messaging::streams::MAX_EVENT_DATA_BYTES,
            },
            Err(e) => BusError::Internal(e),
        },
        AggregateError::DeserializationError(e) => BusError::Internal(e),
        AggregateError::UserError(e) => BusError::Internal(e.to_string().into()),
    }
}
