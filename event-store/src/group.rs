//! Group commit: the appends of concurrent commands (on different aggregates) are written in
//! one transaction, so a busy service pays one durable commit for many commands.
//!
//! One committer task per bus takes the first waiting append at once (under light load a
//! command is never delayed waiting for a batch) and, with it, every append that queued up
//! while the previous transaction was committing. The batch is one multi-row `INSERT` into
//! `events`; the triggers add the outbox and idempotency rows in the same transaction. Each
//! command is answered only after that transaction committed.
//!
//! A conflict (another writer took one of a command's sequences) fails only that command: the
//! batch is inserted with `ON CONFLICT DO NOTHING`; if any command lost a row, that
//! transaction is rolled back and the others are inserted again without it in the next, and
//! that one command is told to retry from a fresh load. An error the trigger
//! raises (an idempotency key used by another command) cannot be told apart by row, so such a
//! batch is committed again one command per transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};

/// Most commands in one transaction.
const MAX_BATCH: usize = 256;

/// One stored event, serialised.
#[derive(Debug, Clone)]
pub struct Row {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

/// What one command appends: its aggregate's events, at consecutive sequences after the
/// version it decided on.
#[derive(Debug, Clone)]
pub struct Append {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub rows: Vec<Row>,
    /// The aggregate's state after these rows, with its version, when it is time to keep a
    /// snapshot; written in the same transaction.
    pub snapshot: Option<(i64, serde_json::Value)>,
}

/// How an append ended.
#[derive(Debug)]
pub enum Outcome {
    Committed,
    /// Another writer took one of its sequences: decide again from a fresh load.
    Conflict,
    /// The database could not be reached; the append may not have happened.
    Unavailable(String),
    /// A trigger refused the append as a rule of the store's (SQLSTATE class `SR`, its
    /// message the rejection's code): nothing of it was written.
    Refused {
        code: String,
        detail: String,
    },
    Failed(String),
}

struct Pending {
    append: Append,
    answer: oneshot::Sender<Outcome>,
}

/// Counts for tests and metrics: transactions committed and commands in them.
#[derive(Debug, Default)]
pub struct Stats {
    pub transactions: AtomicU64,
    pub commands: AtomicU64,
}

/// The committer of one command bus.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
    stats: Arc<Stats>,
}

impl GroupCommit {
    /// Starts the committer task on `pool`; it ends when the bus is dropped.
    pub fn start(pool: PgPool, aggregate_type: &'static str) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(pool, rx, stats.clone(), aggregate_type));
        Self { queue, stats }
    }

    /// Appends `append` with whatever else is waiting; returns once its transaction ended.
    pub async fn append(&self, append: Append) -> Outcome {
        let (answer, outcome) = oneshot::channel();
        let stopped = || Outcome::Unavailable("the committer has stopped".into());
        if self.queue.send(Pending { append, answer }).is_err() {
            return stopped();
        }
        outcome.await.unwrap_or_else(|_| stopped())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

async fn run(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stats: Arc<Stats>,
    aggregate_type: &'static str,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::histogram!("command_batch_commands", "aggregate" => aggregate_type)
            .record(batch.len() as f64);
        let appends: Vec<&Append> = batch.iter().map(|p| &p.append).collect();
        let outcomes = match commit_batch(&pool, &appends).await {
            Ok(conflicts) => {
                // Every append conflicted: nothing was committed.
                if conflicts.len() < batch.len() {
                    stats.transactions.fetch_add(1, Ordering::Relaxed);
                }
                stats
                    .commands
                    .fetch_add((batch.len() - conflicts.len()) as u64, Ordering::Relaxed);
                (0..batch.len())
                    .map(|i| {
                        if conflicts.contains(&i) {
                            Outcome::Conflict
                        } else {
                            Outcome::Committed
                        }
                    })
                    .collect()
            }
            Err(e) if batch.len() > 1 && !service_kit::db::unavailable(&e) => {
                // A trigger refused one of them: find it by committing each alone.
                let mut outcomes = Vec::with_capacity(batch.len());
                for append in &appends {
                    let outcome = match commit_batch(&pool, std::slice::from_ref(append)).await {
                        Ok(conflicts) if conflicts.is_empty() => {
                            stats.transactions.fetch_add(1, Ordering::Relaxed);
                            stats.commands.fetch_add(1, Ordering::Relaxed);
                            Outcome::Committed
                        }
                        Ok(_) => Outcome::Conflict,
                        Err(e) => classify(e),
                    };
                    outcomes.push(outcome);
                }
                outcomes
            }
            Err(e) => {
                // Away, or a lone append refused: every append of the batch shares the fate.
                let text = e.to_string();
                let first = classify(e);
                let away = matches!(first, Outcome::Unavailable(_));
                let mut outcomes = vec![first];
                outcomes.extend((1..batch.len()).map(|_| {
                    if away {
                        Outcome::Unavailable(text.clone())
                    } else {
                        Outcome::Failed(text.clone())
                    }
                }));
                outcomes
            }
        };
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let _ = pending.answer.send(outcome);
        }
    }
}

fn classify(e: sqlx::Error) -> Outcome {
    if service_kit::db::unavailable(&e) {
        return Outcome::Unavailable(e.to_string());
    }
    if let Some((code, detail)) = refusal(&e) {
        return Outcome::Refused { code, detail };
    }
    let unique = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "23505");
    if unique {
        Outcome::Conflict
    } else {
        Outcome::Failed(service_kit::problem::ErrorChain(&e).to_string())
    }
}

/// The rejection a trigger raised as a rule of the store (SQLSTATE `SRnnn`, the message its
/// code, the detail what to tell the caller): orders' fair shares, say.
fn refusal(e: &sqlx::Error) -> Option<(String, String)> {
    let database = e.as_database_error()?;
    if !database.code()?.starts_with("SR") {
        return None;
    }
    let detail = database
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.detail())
        .unwrap_or_default()
        .to_owned();
    Some((database.message().to_owned(), detail))
}

/// Commits `appends` in one transaction; returns the indexes of those that conflicted (and
/// were left out).
async fn commit_batch(pool: &PgPool, appends: &[&Append]) -> Result<Vec<usize>, sqlx::Error> {
    // Two appends of one aggregate in a batch (only after a cancelled request let go of the
    // aggregate's turn early): the later ones conflict without trying.
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<usize> = (0..appends.len())
        .filter(|i| !seen.insert(appends[*i].aggregate_id.as_str()))
        .collect();
    let first: Vec<&Append> = (0..appends.len())
        .filter(|i| !twice.contains(i))
        .map(|i| appends[i])
        .collect();
    let mut tx = pool.begin().await?;
    let inserted = insert(&mut tx, &first, true).await?;
    let mut conflicts: Vec<usize> = appends
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            twice.contains(i) || inserted.get(a.aggregate_id.as_str()) != Some(&a.rows.len())
        })
        .map(|(i, _)| i)
        .collect();
    conflicts.sort_unstable();
    let rest: Vec<&Append> = appends
        .iter()
        .enumerate()
        .filter(|(i, _)| !conflicts.contains(i))
        .map(|(_, a)| *a)
        .collect();
    if !conflicts.is_empty() {
        // Rare (another replica wrote one of these aggregates): the others again, in a
        // transaction of their own, without the rows a conflicting command left behind. (A
        // savepoint would keep it to one transaction, but costs a subtransaction every time.)
        tx.rollback().await?;
        if rest.is_empty() {
            return Ok(conflicts);
        }
        tx = pool.begin().await?;
        insert(&mut tx, &rest, false).await?;
    }
    snapshots(&mut tx, &rest).await?;
    tx.commit().await?;
    Ok(conflicts)
}

/// Keeps the snapshots the committed appends carry, never replacing a newer one.
async fn snapshots(
    tx: &mut Transaction<'_, Postgres>,
    appends: &[&Append],
) -> Result<(), sqlx::Error> {
    let taken: Vec<(&Append, i64, &serde_json::Value)> = appends
        .iter()
        .filter_map(|a| a.snapshot.as_ref().map(|(v, s)| (*a, *v, s)))
        .collect();
    if taken.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO snapshots (aggregate_type, aggregate_id, version, state) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::json[]) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
         SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now() \
         WHERE snapshots.version < EXCLUDED.version",
    )
    .bind(
        taken
            .iter()
            .map(|t| t.0.aggregate_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        taken
            .iter()
            .map(|t| t.0.aggregate_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(taken.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(
        taken
            .iter()
            .map(|t| sqlx::types::Json(t.2))
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One multi-row insert of every append's rows (at most one append per aggregate); returns
/// how many rows of each aggregate were inserted (all of them unless `skip_conflicts` skipped
/// some).
async fn insert<'a>(
    tx: &mut Transaction<'_, Postgres>,
    appends: &[&'a Append],
    skip_conflicts: bool,
) -> Result<std::collections::HashMap<&'a str, usize>, sqlx::Error> {
    let (mut types, mut ids, mut sequences) = (Vec::new(), Vec::new(), Vec::new());
    let (mut event_types, mut versions, mut payloads, mut metadata) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for append in appends {
        for row in &append.rows {
            types.push(append.aggregate_type.as_str());
            ids.push(append.aggregate_id.as_str());
            sequences.push(row.sequence);
            event_types.push(row.event_type.as_str());
            versions.push(row.event_version.as_str());
            payloads.push(sqlx::types::Json(&row.payload));
            metadata.push(sqlx::types::Json(&row.metadata));
        }
    }
    let on_conflict = if skip_conflicts {
        " ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                              $6::json[], $7::json[]){on_conflict} \
         RETURNING aggregate_id"
    );
    let returned: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .fetch_all(&mut **tx)
        .await?;
    let mut counts: std::collections::HashMap<&'a str, usize> = appends
        .iter()
        .map(|a| (a.aggregate_id.as_str(), 0))
        .collect();
    for (id,) in returned {
        if let Some(count) = counts.get_mut(id.as_str()) {
            *count += 1;
        }
    }
    Ok(counts)
}
