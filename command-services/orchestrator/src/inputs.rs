//! Reads the contexts' event streams with durable consumers and feeds each event to the saga
//! it concerns: the saga advances on whichever comes first, a reply or the resulting event.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use messaging::consume;
use messaging::durables;
use messaging::keeper::{Finding, Keeper};
use messaging::{BoundedContext, Envelope, Namespace};
use service_kit::retry::Backoff;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::driver::Driver;
use crate::steps::{input_of, Input};

/// The orchestrator's durable consumer on a context's stream, kept as declared: one that is
/// deleted or changed is restored, starting after the acknowledgement floor last recorded
/// (`consumer_floors`), so no event is skipped and history is not read again.
pub fn keeper(js: &jetstream::Context, namespace: &Namespace, context: BoundedContext) -> Keeper {
    Keeper::of_events(
        js,
        namespace,
        context,
        durables::ORCHESTRATOR,
        "streamshop saga orchestrator",
        Duration::from_secs(30),
        0,
    )
}

/// How often the consumer is checked on the server (and its floor recorded).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Feeds events to sagas until `shutdown`; the batch in hand is finished.
pub async fn run(keeper: Keeper, pool: PgPool, driver: Arc<Driver>, shutdown: CancellationToken) {
    // Named by its stream, so each of the orchestrator's three consumers has its own metrics.
    let name = format!("orchestrator:{}", keeper.stream());
    let (keeper, pool, name) = (&keeper, &pool, name.as_str());
    let checked = std::sync::Mutex::new(tokio::time::Instant::now());
    service_kit::retry::until_cancelled(
        "orchestrator fetch",
        &shutdown,
        Backoff::new(Duration::from_secs(1), Duration::from_secs(5)),
        || async {
            let consumer = keeper
                .consumer(|stream_created| start(pool, keeper, stream_created))
                .await
                .map_err(|e| consume::FetchError::new(format!("{e:#}")))?;
            // A batch is what has arrived (an idle loop waits on the server for the next one);
            // each message is settled once its saga has taken it.
            let batch = match consume::fetch(&consumer, 100, Duration::from_millis(500)).await {
                Ok(batch) => batch,
                Err(e) => {
                    // The consumer may be gone: look again before the next fetch.
                    keeper.forget().await;
                    return Err(e);
                }
            };
            // Sagas are independent: their inputs are taken side by side, so the command
            // bus commits them together (one at a time, each input waited for a commit of its
            // own while the rest of the batch queued). One saga's inputs stay in stream order.
            let sagas = by_saga(batch);
            futures::future::join_all(sagas.into_iter().map(|messages| {
                let driver = &driver;
                async move {
                    for (message, parsed) in messages {
                        let kind = handle(&message, parsed, driver, name).await;
                        consume::settle(&message, kind, name).await;
                    }
                }
            }))
            .await;
            let due = {
                let mut at = checked.lock().expect("check time");
                let due = at.elapsed() >= CHECK_EVERY;
                if due {
                    *at = tokio::time::Instant::now();
                }
                due
            };
            if due {
                check(pool, keeper).await;
            }
            Ok::<(), consume::FetchError>(())
        },
    )
    .await;
}

/// Asks the server whether the consumer is as declared (the keeper restores it at the next
/// fetch when not), and records its acknowledgement floor when it is.
async fn check(pool: &PgPool, keeper: &Keeper) {
    match keeper.check().await {
        Ok(Finding::Intact(floor)) => {
            let recorded = sqlx::query(
                "INSERT INTO consumer_floors (consumer, stream, stream_created, acknowledged) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (consumer, stream) DO UPDATE \
                 SET stream_created = EXCLUDED.stream_created, \
                     acknowledged = EXCLUDED.acknowledged, updated_at = now()",
            )
            .bind(keeper.name())
            .bind(keeper.stream())
            .bind(floor.stream_created)
            .bind(floor.acknowledged as i64)
            .execute(pool)
            .await;
            if let Err(e) = recorded {
                tracing::debug!(error = %e, "could not record the consumer's floor");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not check the consumer"),
    }
}

/// Where a (re)made consumer starts: just after the floor recorded on this same stream, or
/// at the beginning when none is (a first start) or the stream was made again since.
async fn start(
    pool: &PgPool,
    keeper: &Keeper,
    stream_created: DateTime<Utc>,
) -> anyhow::Result<DeliverPolicy> {
    let floor: Option<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT stream_created, acknowledged FROM consumer_floors WHERE consumer = $1 AND stream = $2",
    )
    .bind(keeper.name())
    .bind(keeper.stream())
    .fetch_optional(pool)
    .await?;
    Ok(match floor {
        Some((created, acknowledged)) if created == stream_created && acknowledged > 0 => {
            tracing::info!(
                stream = keeper.stream(),
                after = acknowledged,
                "making the orchestrator's consumer again after its recorded floor"
            );
            DeliverPolicy::ByStartSequence {
                start_sequence: acknowledged as u64 + 1,
            }
        }
        _ => DeliverPolicy::All,
    })
}

/// What a message feeds its saga (nothing, for an event no saga waits on), or why it is not
/// an envelope.
type Parsed = Result<Option<(uuid::Uuid, Input)>, String>;

/// The batch's messages, each with what it feeds its saga, grouped by that saga.
fn by_saga(batch: Vec<jetstream::Message>) -> Vec<Vec<(jetstream::Message, Parsed)>> {
    let parsed = batch.into_iter().map(|message| {
        let parsed = Envelope::from_slice(&message.payload)
            .map(|envelope| input_of(&envelope))
            .map_err(|e| e.to_string());
        (message, parsed)
    });
    grouped(parsed, |(_, parsed)| {
        parsed
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map(|(order_id, _)| *order_id)
    })
}

/// `items` grouped by the saga `saga_of` names, each group in the order given and the groups
/// in the order of their first item; an item of no saga is a group of its own.
fn grouped<T>(
    items: impl IntoIterator<Item = T>,
    saga_of: impl Fn(&T) -> Option<uuid::Uuid>,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut index: std::collections::HashMap<uuid::Uuid, usize> = Default::default();
    for item in items {
        let saga = saga_of(&item);
        match saga.and_then(|id| index.get(&id).copied()) {
            Some(i) => groups[i].push(item),
            None => {
                if let Some(id) = saga {
                    index.insert(id, groups.len());
                }
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// What to do with one message: feed its event to its saga, and say how to settle it.
async fn handle(
    message: &jetstream::Message,
    parsed: Parsed,
    driver: &Arc<Driver>,
    consumer: &str,
) -> AckKind {
    let span = tracing::info_span!(
        "saga.input",
        otel.kind = "consumer",
        consumer = %consumer,
        subject = %message.subject,
    );
    service_kit::trace::join_message(&span, message.headers.as_ref());
    consume::note_delivery(message, consumer);
    async {
        match parsed {
            Err(e) => {
                tracing::warn!(subject = %message.subject, error = %e, "not an envelope; terminated");
                AckKind::Term
            }
            Ok(input) => match input {
                None => AckKind::Ack,
                Some((order_id, input)) => match driver.input(order_id, input).await {
                    Ok(()) => AckKind::Ack,
                    Err(e) => {
                        tracing::warn!(%order_id, error = %service_kit::problem::ErrorChain(&e), "saga input failed; redelivering");
                        AckKind::Nak(Some(Duration::from_secs(1)))
                    }
                },
            },
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    #[test]
    fn inputs_are_grouped_by_saga_in_stream_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let batch = [
            (1, Some(a)),
            (2, Some(b)),
            (3, None),
            (4, Some(a)),
            (5, None),
            (6, Some(b)),
            (7, Some(a)),
        ];
        let groups = super::grouped(batch, |(_, saga)| *saga);
        let numbers: Vec<Vec<i32>> = groups
            .iter()
            .map(|g| g.iter().map(|(n, _)| *n).collect())
            .collect();
        assert_eq!(numbers, vec![vec![1, 4, 7], vec![2, 6], vec![3], vec![5]]);
    }
}
