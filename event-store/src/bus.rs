//! Executes a command against an event-sourced aggregate and reports the version it reached.
//!
//! This is cqrs-es's own load -> handle -> commit cycle (as in `CqrsFramework`), on the plain
//! event store (no snapshots: cqrs-es 0.5's snapshot and aggregate stores apply new events
//! twice), without `Query` processors, and returning the committed sequence so HTTP can answer
//! with the new version. Optimistic-concurrency conflicts are retried with jitter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use messaging::envelope::meta;
use postgres_es::PostgresEventRepository;
use rand::Rng;
use tokio::sync::Notify;
use uuid::Uuid;

/// How many times a command is re-run after an optimistic-concurrency conflict.
const CONFLICT_RETRIES: u32 = 4;

/// Ids carried from the request into every event the command produces.
#[derive(Debug, Clone)]
pub struct CommandMetadata {
    pub command_id: Uuid,
    pub correlation_id: String,
    pub traceparent: String,
}

impl CommandMetadata {
    fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (meta::CAUSATION_ID.to_owned(), self.command_id.to_string()),
            (meta::CORRELATION_ID.to_owned(), self.correlation_id.clone()),
            (meta::TRACEPARENT.to_owned(), self.traceparent.clone()),
        ])
    }
}

/// The outcome of a successful command.
#[derive(Debug)]
pub struct Committed<A: Aggregate> {
    /// The aggregate's version (last sequence) after the command.
    pub version: u64,
    pub events: Vec<EventEnvelope<A>>,
}

/// Runs commands for one aggregate type.
pub struct CommandBus<A: Aggregate> {
    store: PersistedEventStore<PostgresEventRepository, A>,
    services: A::Services,
    /// Woken after every commit so the in-process relay publishes at once.
    committed: Arc<Notify>,
}

impl<A> CommandBus<A>
where
    A: Aggregate,
    A::Command: Clone,
{
    pub fn new(pool: sqlx::PgPool, services: A::Services, committed: Arc<Notify>) -> Self {
        Self {
            store: PersistedEventStore::new_event_store(PostgresEventRepository::new(pool)),
            services,
            committed,
        }
    }

    /// Registers upcasters for stored events of older versions.
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.store = self.store.with_upcasters(upcasters);
        self
    }

    /// The aggregate's events, upcast to the current versions.
    pub async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.store.load_events(aggregate_id).await
    }

    /// Loads the aggregate, handles the command and commits its events atomically (with their
    /// outbox rows). A conflicting concurrent write makes it start again from a fresh load.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        let mut attempt = 0;
        loop {
            match self
                .execute_once(aggregate_id, command.clone(), metadata)
                .await
            {
                Err(AggregateError::AggregateConflict) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    let jitter = rand::rng().random_range(1..=10u64 << attempt);
                    tracing::debug!(aggregate_id, attempt, "concurrency conflict; retrying");
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                other => return other,
            }
        }
    }

    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        let mut context = self.store.load_aggregate(aggregate_id).await?;
        let loaded_version = context.current_sequence as u64;
        let sink = EventSink::<A>::default();
        context
            .aggregate()
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Committed {
                version: loaded_version,
                events: vec![],
            });
        }
        let committed = self
            .store
            .commit(events, context, metadata.to_map())
            .await?;
        self.committed.notify_one();
        let version = committed
            .last()
            .map_or(loaded_version, |e| e.sequence as u64);
        Ok(Committed {
            version,
            events: committed,
        })
    }
}
