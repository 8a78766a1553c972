//! `events verify`: folds every aggregate of every stream from JetStream, then compares the
//! result with each service's event store and with the read models, and lists every
//! difference. Memory grows with the number of aggregates, not of events.
//!
//! The streams are read first and the databases after, so on a busy system the lag between
//! them shows as differences: verify a quiet system (no commands in flight, relays and
//! projections caught up).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use anyhow::Context;
use futures::TryStreamExt;
use messaging::BoundedContext;
use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::fold::Folded;
use crate::progress::Progress;
use crate::read::{self, Selection, Source};

/// What to compare the streams with; an absent database is not compared (and said so).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Each context's event store (the orchestrator's for `Sagas`).
    pub stores: HashMap<BoundedContext, String>,
    /// The read database of the projections.
    pub read_models: Option<String>,
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where: a stream, `event store <context>`, or a read model table.
    pub place: String,
    pub aggregate: String,
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.place, self.aggregate, self.detail)
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub aggregates: u64,
    pub events: u64,
    pub differences: Vec<Difference>,
    /// Events seen again at a sequence already folded (skipped, as consumers skip them).
    pub duplicates: u64,
    /// What was not compared, and why.
    pub skipped: Vec<String>,
}

/// One aggregate as its stream makes it.
struct Entry {
    folded: Folded,
    version: u64,
}

fn aggregate_type(context: BoundedContext) -> &'static str {
    use cqrs_es::Aggregate;
    match context {
        BoundedContext::Orders => domain::order::Order::TYPE,
        BoundedContext::Inventory => domain::product::Product::TYPE,
        BoundedContext::Payments => domain::payment::Payment::TYPE,
        BoundedContext::Sagas => domain::saga::OrderSaga::TYPE,
    }
}

/// Runs the verification; see the module documentation.
pub async fn verify(
    source: &Source,
    targets: &Targets,
    progress: Arc<Progress>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut folds = HashMap::new();
    for context in BoundedContext::ALL {
        let entries = fold_stream(source, context, &progress, &mut report).await?;
        folds.insert(context, entries);
    }
    progress.finish();

    match &targets.read_models {
        Some(url) => {
            let pool = connect(url).await?;
            compare_read_models(&pool, &folds, &mut report).await?;
        }
        None => report
            .skipped
            .push("read models (no --read-database)".into()),
    }
    for context in BoundedContext::ALL {
        let entries = folds.remove(&context).unwrap_or_default();
        match targets.stores.get(&context) {
            Some(url) => {
                let pool = connect(url).await?;
                compare_store(&pool, context, entries, &mut report).await?;
            }
            None => report.skipped.push(format!(
                "the {} event store (no --store {}=URL)",
                context.token(),
                context.token()
            )),
        }
    }
    Ok(report)
}

/// One connection, opened the way every service opens its pool.
async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let settings = service_kit::db::DatabaseSettings {
        url: service_kit::secret::Secret::new(url.to_owned()),
        owner_url: None,
        max_connections: 1,
        // `verify` reads whole tables at once.
        statement_timeout: std::time::Duration::ZERO,
        session: Vec::new(),
    };
    settings
        .connect()
        .await
        .with_context(|| format!("connecting to {} to compare with it", settings.url))
}

/// Folds a whole stream per aggregate, noting gaps and events that do not apply.
async fn fold_stream(
    source: &Source,
    context: BoundedContext,
    progress: &Arc<Progress>,
    report: &mut Report,
) -> anyhow::Result<HashMap<String, Entry>> {
    let selection = Selection::everything(vec![context]);
    let mut reading = read::spawn(source, &selection, BTreeMap::new(), progress.clone());
    let place = format!("stream {}", context.stream_base());
    let mut entries: HashMap<String, Entry> = HashMap::new();
    while let Some(record) = reading.events.recv().await {
        report.events += 1;
        let e = &record.envelope;
        let entry = entries.entry(e.subject.clone()).or_insert_with(|| Entry {
            folded: Folded::new(context),
            version: 0,
        });
        if e.sequence <= entry.version {
            // A re-publish past JetStream's duplicate window (the outbox publishes at least
            // once): consumers skip it, and so does the fold.
            report.duplicates += 1;
            continue;
        }
        if e.sequence != entry.version + 1 {
            report.differences.push(Difference {
                place: place.clone(),
                aggregate: e.subject.clone(),
                detail: format!(
                    "event #{} ({}) follows #{}",
                    e.sequence,
                    e.name(),
                    entry.version
                ),
            });
        }
        if let Err(reason) = entry.folded.apply(e.name(), e.version(), &e.data) {
            report.differences.push(Difference {
                place: place.clone(),
                aggregate: e.subject.clone(),
                detail: format!("event #{} does not apply: {reason}", e.sequence),
            });
        }
        entry.version = e.sequence;
    }
    reading.finish().await?;
    report.aggregates += entries.len() as u64;
    Ok(entries)
}

/// Folds each aggregate of the event store in (aggregate, sequence) order, one at a time, and
/// compares it with the stream's fold.
async fn compare_store(
    pool: &PgPool,
    context: BoundedContext,
    mut entries: HashMap<String, Entry>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let place = format!("event store {}", context.token());
    let mut rows = sqlx::query(
        "SELECT aggregate_id, sequence, event_type, event_version, payload FROM events \
         WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
    )
    .bind(aggregate_type(context))
    .fetch(pool);
    let mut current: Option<(String, Folded, u64)> = None;
    let mut finish = |done: Option<(String, Folded, u64)>, report: &mut Report| {
        let Some((id, folded, version)) = done else {
            return;
        };
        let detail = match entries.remove(&id) {
            None => Some(format!("{version} events stored, none in the stream")),
            Some(entry) if entry.version != version => Some(format!(
                "version {version} stored, {} in the stream",
                entry.version
            )),
            Some(entry) if entry.folded != folded => Some(format!(
                "state differs: stored {}, stream {}",
                folded.to_json(),
                entry.folded.to_json()
            )),
            Some(_) => None,
        };
        if let Some(detail) = detail {
            report.differences.push(Difference {
                place: place.clone(),
                aggregate: id,
                detail,
            });
        }
    };
    while let Some(row) = rows.try_next().await? {
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let name: String = row.try_get("event_type")?;
        let version: String = row.try_get("event_version")?;
        let payload: Value = row.try_get("payload")?;
        if current.as_ref().is_none_or(|(c, _, _)| c != &id) {
            finish(current.take(), report);
            current = Some((id.clone(), Folded::new(context), 0));
        }
        if let Some((_, folded, last)) = current.as_mut() {
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(1);
            // cqrs-es stores `{"<EventName>": {...}}`.
            let data = payload.get(&name).cloned().unwrap_or(Value::Null);
            if let Err(reason) = folded.apply(&name, major, &data) {
                report.differences.push(Difference {
                    place: place.clone(),
                    aggregate: id.clone(),
                    detail: format!("stored event #{sequence} does not apply: {reason}"),
                });
            }
            *last = sequence as u64;
        }
    }
    finish(current.take(), report);
    for (id, entry) in entries {
        report.differences.push(Difference {
            place: place.clone(),
            aggregate: id,
            detail: format!("{} events in the stream, none stored", entry.version),
        });
    }
    Ok(())
}

/// Compares the three entity views with the streams' folds: every aggregate has its row, at
/// its version, with the state's values.
async fn compare_read_models(
    pool: &PgPool,
    folds: &HashMap<BoundedContext, HashMap<String, Entry>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let empty = HashMap::new();
    let fold = |c| folds.get(&c).unwrap_or(&empty);

    let orders = sqlx::query("SELECT order_id::text AS id, status, version FROM orders_view")
        .fetch_all(pool)
        .await?;
    compare_rows(
        "orders_view",
        fold(BoundedContext::Orders),
        &orders,
        report,
        |row, folded| {
            let Folded::Order(order) = folded else {
                return Ok(vec![]);
            };
            let status: String = row.try_get("status")?;
            let expected = serde_json::to_value(order.status)?;
            Ok(if expected.as_str() != Some(status.as_str()) {
                vec![format!("status is {status:?}, the stream says {expected}")]
            } else {
                vec![]
            })
        },
    )?;

    let products = sqlx::query("SELECT sku AS id, on_hand, reserved, version FROM products_view")
        .fetch_all(pool)
        .await?;
    compare_rows(
        "products_view",
        fold(BoundedContext::Inventory),
        &products,
        report,
        |row, folded| {
            let Folded::Product(product) = folded else {
                return Ok(vec![]);
            };
            let mut found = Vec::new();
            for (column, expected) in [("on_hand", product.on_hand), ("reserved", product.reserved)]
            {
                let value: i64 = row.try_get(column)?;
                if value != expected as i64 {
                    found.push(format!("{column} is {value}, the stream says {expected}"));
                }
            }
            Ok(found)
        },
    )?;

    let payments =
        sqlx::query("SELECT order_id::text AS id, decline_reason, version FROM payments_view")
            .fetch_all(pool)
            .await?;
    compare_rows(
        "payments_view",
        fold(BoundedContext::Payments),
        &payments,
        report,
        |row, folded| {
            let Folded::Payment(payment) = folded else {
                return Ok(vec![]);
            };
            let reason: Option<String> = row.try_get("decline_reason")?;
            Ok(if reason != payment.decline_reason {
                vec![format!(
                    "decline_reason is {reason:?}, the stream says {:?}",
                    payment.decline_reason
                )]
            } else {
                vec![]
            })
        },
    )?;
    Ok(())
}

/// Rows (with `id` and `version` columns) against the folds: missing and extra rows, version
/// and value differences.
fn compare_rows(
    table: &str,
    entries: &HashMap<String, Entry>,
    rows: &[sqlx::postgres::PgRow],
    report: &mut Report,
    values: impl Fn(&sqlx::postgres::PgRow, &Folded) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut push = |aggregate: &str, detail: String| {
        report.differences.push(Difference {
            place: table.to_owned(),
            aggregate: aggregate.to_owned(),
            detail,
        })
    };
    for row in rows {
        let id: String = row.try_get("id")?;
        let version: i64 = row.try_get("version")?;
        seen.insert(id.clone());
        let Some(entry) = entries.get(&id) else {
            push(
                &id,
                "a row for an aggregate the stream does not have".into(),
            );
            continue;
        };
        if version as u64 != entry.version {
            push(
                &id,
                format!("version is {version}, the stream is at {}", entry.version),
            );
        }
        for detail in values(row, &entry.folded)? {
            push(&id, detail);
        }
    }
    let mut missing: Vec<&String> = entries.keys().filter(|id| !seen.contains(*id)).collect();
    missing.sort();
    for id in missing {
        push(id, "no row".into());
    }
    Ok(())
}
