//! SQL for what every projection records besides its own tables: per-aggregate positions,
//! checkpoints and dead letters.

use sqlx::PgConnection;

/// Locks the aggregate's position row (creating it at 0) and returns the last applied
/// sequence. Locking serialises workers that hold events of the same aggregate.
pub async fn claim_position(
    conn: &mut PgConnection,
    projection: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<u64, sqlx::Error> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO projection_positions (projection, aggregate_type, aggregate_id, sequence) \
         VALUES ($1, $2, $3, 0) \
         ON CONFLICT (projection, aggregate_type, aggregate_id) \
         DO UPDATE SET sequence = projection_positions.sequence \
         RETURNING sequence",
    )
    .bind(projection)
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(conn)
    .await?;
    Ok(seq as u64)
}

pub async fn set_position(
    conn: &mut PgConnection,
    projection: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_positions SET sequence = $4 \
         WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
    )
    .bind(projection)
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the checkpoint forward (never back) to `stream_sequence`, and records the last
/// stream sequence seen (for lag).
pub async fn advance_checkpoint(
    conn: &mut PgConnection,
    projection: &str,
    stream: &str,
    stream_sequence: u64,
    stream_last_sequence: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream, stream_sequence, stream_last_sequence) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection) DO UPDATE \
         SET stream_sequence = GREATEST(projection_checkpoints.stream_sequence, EXCLUDED.stream_sequence), \
             stream_last_sequence = GREATEST(projection_checkpoints.stream_last_sequence, EXCLUDED.stream_last_sequence), \
             updated_at = now()",
    )
    .bind(projection)
    .bind(stream)
    .bind(stream_sequence as i64)
    .bind(stream_last_sequence as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// The projection's checkpoint, 0 before its first batch.
pub async fn checkpoint(conn: &mut PgConnection, projection: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT stream_sequence FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await?;
    Ok(seq.unwrap_or(0) as u64)
}

/// A message that can never be applied.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub projection: &'a str,
    pub stream: &'a str,
    pub stream_sequence: u64,
    pub subject: &'a str,
    pub reason: &'a str,
    pub payload: &'a [u8],
}

pub async fn record_dead_letter(
    conn: &mut PgConnection,
    letter: &DeadLetter<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (projection, stream, stream_sequence, subject, reason, payload) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(letter.projection)
    .bind(letter.stream)
    .bind(letter.stream_sequence as i64)
    .bind(letter.subject)
    .bind(letter.reason)
    .bind(letter.payload)
    .execute(conn)
    .await?;
    Ok(())
}
