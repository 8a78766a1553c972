//! SQL for what every projection records besides its own tables: per-aggregate positions,
//! checkpoints and dead letters.

use std::collections::HashMap;

use sqlx::PgConnection;

/// An aggregate's place in a projection: its last applied (or dead-lettered) sequence, and
/// whether it is held behind a dead letter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub sequence: u64,
    /// An earlier event of it is dead-lettered: its later events are dead-lettered behind
    /// that one, never applied out of order, until an operator replays or discards them.
    pub held: bool,
}

/// Locks the position rows of `keys` (`(aggregate type, aggregate id)`, sorted and without
/// repeats), creating missing ones at 0, and returns each one's position. Locking
/// serialises workers that hold events of the same aggregate; taking the locks in one sorted
/// statement means two workers never wait on each other in a cycle.
pub async fn claim_positions<'k>(
    conn: &mut PgConnection,
    projection: &str,
    keys: &[(&'k str, &'k str)],
) -> Result<HashMap<(&'k str, &'k str), Position>, sqlx::Error> {
    let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "INSERT INTO projection_positions (projection, aggregate_type, aggregate_id, sequence) \
         SELECT $1, t, i, 0 FROM unnest($2::text[], $3::text[]) AS u(t, i) ORDER BY t, i \
         ON CONFLICT (projection, aggregate_type, aggregate_id) \
         DO UPDATE SET sequence = projection_positions.sequence \
         RETURNING aggregate_type, aggregate_id, sequence, held",
    )
    .bind(projection)
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|(t, i, seq, held)| {
            let at = keys.binary_search(&(t.as_str(), i.as_str())).ok()?;
            let position = Position {
                sequence: *seq as u64,
                held: *held,
            };
            Some((keys[at], position))
        })
        .collect())
}

/// Sets the positions of `moved` aggregates (`(type, id, sequence)`), already claimed.
pub async fn set_positions(
    conn: &mut PgConnection,
    projection: &str,
    moved: &[(&str, &str, u64)],
) -> Result<(), sqlx::Error> {
    if moved.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE projection_positions p SET sequence = u.s \
         FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(t, i, s) \
         WHERE p.projection = $1 AND p.aggregate_type = u.t AND p.aggregate_id = u.i",
    )
    .bind(projection)
    .bind(moved.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(moved.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(moved.iter().map(|m| m.2 as i64).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Holds (or releases) `keys`' aggregates, already claimed.
pub async fn set_held(
    conn: &mut PgConnection,
    projection: &str,
    keys: &[(&str, &str)],
    held: bool,
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE projection_positions p SET held = $4 \
         FROM unnest($2::text[], $3::text[]) AS u(t, i) \
         WHERE p.projection = $1 AND p.aggregate_type = u.t AND p.aggregate_id = u.i",
    )
    .bind(projection)
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(held)
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

/// Where a (re)created consumer of the projection starts on a stream created at
/// `stream_created`: after the checkpoint, when the checkpoint counts in that stream (or
/// predates this record); from the beginning, with the checkpoint reset to 0, when it counts
/// in a stream since deleted and made again. Records `stream_created` either way.
pub async fn start_on_stream(
    conn: &mut PgConnection,
    projection: &str,
    stream: &str,
    stream_created: chrono::DateTime<chrono::Utc>,
) -> Result<u64, sqlx::Error> {
    let row: Option<(i64, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT stream_sequence, stream_created FROM projection_checkpoints \
         WHERE projection = $1 FOR UPDATE",
    )
    .bind(projection)
    .fetch_optional(&mut *conn)
    .await?;
    let (after, replaced) = match row {
        Some((sequence, Some(created))) if created != stream_created => {
            tracing::warn!(projection, stream, checkpoint = sequence, "the stream was made again since the checkpoint; reading it from the beginning (applied events stay applied: positions drop them)");
            (0, true)
        }
        Some((sequence, _)) => (sequence as u64, false),
        None => (0, false),
    };
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream, stream_sequence, stream_created) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection) DO UPDATE \
         SET stream_sequence = EXCLUDED.stream_sequence, stream_created = EXCLUDED.stream_created, \
             stream_last_sequence = CASE WHEN $5 THEN 0 \
                 ELSE projection_checkpoints.stream_last_sequence END, \
             updated_at = now()",
    )
    .bind(projection)
    .bind(stream)
    .bind(after as i64)
    .bind(stream_created)
    .bind(replaced)
    .execute(conn)
    .await?;
    Ok(after)
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
    /// The event's aggregate (type, id) and sequence, when its envelope could be read.
    pub aggregate: Option<(&'a str, &'a str, u64)>,
}

pub async fn record_dead_letter(
    conn: &mut PgConnection,
    letter: &DeadLetter<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (projection, stream, stream_sequence, subject, reason, payload, \
                                   aggregate_type, aggregate_id, sequence) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(letter.projection)
    .bind(letter.stream)
    .bind(letter.stream_sequence as i64)
    .bind(letter.subject)
    .bind(letter.reason)
    .bind(letter.payload)
    .bind(letter.aggregate.map(|a| a.0))
    .bind(letter.aggregate.map(|a| a.1))
    .bind(letter.aggregate.map(|a| a.2 as i64))
    .execute(conn)
    .await?;
    Ok(())
}
