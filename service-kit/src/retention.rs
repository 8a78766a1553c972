//! Retention: rows that only matter for a while (idempotency answers, dead letters) are
//! deleted once they are older than a configured age, so those tables do not grow forever.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::{task, Task};

/// Rows of `table` whose `column` (a `timestamptz`) is older than `keep` are deleted.
#[derive(Debug, Clone)]
pub struct Rule {
    pub table: &'static str,
    pub column: &'static str,
    pub keep: Duration,
}

/// Rows deleted per statement, so pruning a large backlog never holds long locks.
const BATCH: u64 = 5_000;

/// Deletes what `rule` no longer keeps; returns how many rows went.
pub async fn prune(pool: &sqlx::PgPool, rule: &Rule) -> Result<u64, sqlx::Error> {
    // Table and column names come from code, never from input.
    let statement = format!(
        "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} \
         WHERE {column} < now() - make_interval(secs => $1) LIMIT {BATCH})",
        table = rule.table,
        column = rule.column,
    );
    let mut total = 0;
    loop {
        let deleted = sqlx::query(&statement)
            .bind(rule.keep.as_secs_f64())
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
    }
}

/// A background task that applies `rules` at start and then every `every`. A failure is
/// logged and tried again next time: retention is housekeeping, not a reason to stop.
pub fn task_for(pool: sqlx::PgPool, rules: Vec<Rule>, every: Duration) -> Task {
    task(move |shutdown: CancellationToken| async move {
        loop {
            for rule in &rules {
                match prune(&pool, rule).await {
                    Ok(0) => {}
                    Ok(deleted) => {
                        metrics::counter!("retention_deleted_rows_total", "table" => rule.table)
                            .increment(deleted);
                        tracing::info!(
                            table = rule.table,
                            deleted,
                            "deleted rows past their retention"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(table = rule.table, error = %crate::problem::ErrorChain(&e), "retention failed; trying again later")
                    }
                }
            }
            if !crate::retry::sleep_unless_cancelled(every, &shutdown).await {
                return Ok(());
            }
        }
    })
}
