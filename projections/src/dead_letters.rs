//! What an operator does with dead letters: list them, replay them once the cause is fixed,
//! or discard them for good.
//!
//! A replay applies the whole held run of the letter's aggregate (its first dead letter and
//! every later event dead-lettered behind it) in sequence order, in one transaction that holds
//! the aggregate's position lock, exactly as the worker would have applied them. So after a
//! replay the read model is what a rebuild would make, and the worker goes on with the
//! aggregate's next event.

use messaging::Envelope;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::bookkeeping;
use crate::orders_view::OrdersView;
use crate::payments_view::PaymentsView;
use crate::products_view::ProductsView;
use crate::projection::Projection;
use crate::saga_timeline::SagaTimeline;
use crate::worker::{is_data_error, BATCH_LOCK};

/// Most letters one list returns.
pub const MAX_LIMIT: i64 = 1_000;

/// One dead letter as an operator sees it. The payload stays in the database: it may carry
/// what no API shows (the payment token of an `OrderPlaced`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct DeadLetterView {
    pub id: i64,
    pub projection: String,
    pub stream: String,
    pub stream_sequence: i64,
    pub subject: String,
    /// The event's aggregate and its sequence, when its envelope could be read.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub sequence: Option<i64>,
    pub reason: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// What a replay applied.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Replayed {
    pub projection: String,
    pub aggregate_id: Option<String>,
    /// The dead letters applied and removed, in the order they were applied.
    pub letters: Vec<i64>,
}

/// Why a replay or a discard did nothing.
#[derive(Debug, thiserror::Error)]
pub enum LetterError {
    #[error("no dead letter {0}")]
    NotFound(i64),
    /// The cause is not fixed: the letter `id` still cannot be applied. Nothing changed.
    #[error("dead letter {id} still fails: {reason}")]
    StillFailing { id: i64, reason: String },
    #[error("read database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Dead letters oldest first, of one projection or of all, at most `limit`.
pub async fn list(
    pool: &PgPool,
    projection: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetterView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, projection, stream, stream_sequence, subject, aggregate_type, aggregate_id, \
                sequence, reason, recorded_at \
         FROM dead_letters WHERE $1::text IS NULL OR projection = $1 ORDER BY id LIMIT $2",
    )
    .bind(projection)
    .bind(limit.clamp(1, MAX_LIMIT))
    .fetch_all(pool)
    .await
}

/// Replays letter `id` with the rest of its aggregate's held run; all of them apply, or none.
pub async fn replay(pool: &PgPool, id: i64) -> Result<Replayed, LetterError> {
    let mut tx = pool.begin().await?;
    let (projection, aggregate) = letter_of(&mut tx, id).await?;
    // Shared with live batches, exclusive for a rebuild's cut-over.
    sqlx::query(BATCH_LOCK)
        .bind(&projection)
        .execute(&mut *tx)
        .await?;
    let aggregate_ref = aggregate.as_ref().map(|(t, i)| (t.as_str(), i.as_str()));
    let letters = match projection.as_str() {
        n if n == OrdersView.name() => apply(&OrdersView, &mut tx, id, aggregate_ref).await?,
        n if n == ProductsView.name() => apply(&ProductsView, &mut tx, id, aggregate_ref).await?,
        n if n == PaymentsView.name() => apply(&PaymentsView, &mut tx, id, aggregate_ref).await?,
        n if n == SagaTimeline.name() => apply(&SagaTimeline, &mut tx, id, aggregate_ref).await?,
        other => {
            return Err(LetterError::StillFailing {
                id,
                reason: format!("no projection named {other} runs here"),
            })
        }
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::UPDATED_CHANNEL)
        .bind(&projection)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(%projection, letters = ?letters, "dead letters replayed");
    Ok(Replayed {
        projection,
        aggregate_id: aggregate.map(|(_, id)| id),
        letters,
    })
}

/// Removes letter `id` for good: the read model goes without that event. Its aggregate is
/// released once no letter of it remains.
pub async fn discard(pool: &PgPool, id: i64) -> Result<(), LetterError> {
    let mut tx = pool.begin().await?;
    let (projection, aggregate) = letter_of(&mut tx, id).await?;
    if let Some((t, i)) = &aggregate {
        // The position row's lock orders this with the worker's batches on the aggregate.
        bookkeeping::claim_positions(&mut tx, &projection, &[(t.as_str(), i.as_str())]).await?;
    }
    sqlx::query("DELETE FROM dead_letters WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if let Some((t, i)) = &aggregate {
        let remaining: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dead_letters \
             WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
        )
        .bind(&projection)
        .bind(t)
        .bind(i)
        .fetch_one(&mut *tx)
        .await?;
        if remaining == 0 {
            bookkeeping::set_held(&mut tx, &projection, &[(t.as_str(), i.as_str())], false).await?;
        }
    }
    tx.commit().await?;
    tracing::info!(%projection, id, "dead letter discarded");
    Ok(())
}

type Aggregate = Option<(String, String)>;

/// The projection and aggregate of letter `id`.
async fn letter_of(conn: &mut PgConnection, id: i64) -> Result<(String, Aggregate), LetterError> {
    let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT projection, aggregate_type, aggregate_id FROM dead_letters WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let (projection, t, i) = row.ok_or(LetterError::NotFound(id))?;
    Ok((projection, t.zip(i)))
}

/// Applies letter `id`, or its aggregate's whole held run, through `projection`; removes the
/// letters applied and releases the aggregate. Returns the letters, in the order applied.
async fn apply<P: Projection>(
    projection: &P,
    conn: &mut PgConnection,
    id: i64,
    aggregate: Option<(&str, &str)>,
) -> Result<Vec<i64>, LetterError> {
    let name = projection.name();
    let letters: Vec<(i64, Vec<u8>)> = match aggregate {
        Some(key) => {
            // The position lock: the worker holds it while it applies this aggregate's events.
            bookkeeping::claim_positions(conn, name, &[key]).await?;
            sqlx::query_as(
                "SELECT id, payload FROM dead_letters \
                 WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3 \
                 ORDER BY sequence, id FOR UPDATE",
            )
            .bind(name)
            .bind(key.0)
            .bind(key.1)
            .fetch_all(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_as("SELECT id, payload FROM dead_letters WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let mut changes = Vec::with_capacity(letters.len());
    for (letter, payload) in &letters {
        let still = |reason: String| LetterError::StillFailing {
            id: *letter,
            reason,
        };
        let envelope = Envelope::from_slice(payload).map_err(|e| still(e.to_string()))?;
        changes.push(projection.decode(&envelope).map_err(still)?);
    }
    if let Err(e) = projection.write(conn, &changes).await {
        return Err(if is_data_error(&e) {
            LetterError::StillFailing {
                id,
                reason: format!("database refused it: {e}"),
            }
        } else {
            LetterError::Database(e)
        });
    }
    let ids: Vec<i64> = letters.iter().map(|(id, _)| *id).collect();
    sqlx::query("DELETE FROM dead_letters WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    if let Some(key) = aggregate {
        bookkeeping::set_held(conn, name, &[key], false).await?;
    }
    Ok(ids)
}
