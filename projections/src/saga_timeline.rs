//! The saga read models: every saga event as a timeline row, and each saga's status and
//! outcome, from the `SAGAS` stream.

use messaging::{BoundedContext, Envelope};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projection::{ApplyError, Projection};

/// Keeps `saga_timeline` and `sagas_view` up to date.
#[derive(Debug, Default, Clone)]
pub struct SagaTimeline;

const KINDS: &[&str] = &[
    "SagaStarted",
    "StepAttempted",
    "StepCompleted",
    "StepFailed",
    "StepGaveUp",
    "CompensationStarted",
    "SagaCompleted",
    "SagaNeedsAttention",
];

impl Projection for SagaTimeline {
    fn name(&self) -> &'static str {
        "saga_timeline"
    }

    fn context(&self) -> BoundedContext {
        BoundedContext::Sagas
    }

    fn tables(&self) -> &'static [&'static str] {
        &["saga_timeline", "sagas_view"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &Envelope) -> Result<(), ApplyError> {
        let kind = event.name();
        if !KINDS.contains(&kind) || event.version() != 1 {
            return Err(ApplyError::Poison(format!(
                "unknown event type {kind} v{}",
                event.version()
            )));
        }
        let order_id = Uuid::parse_str(&event.subject).map_err(|_| {
            ApplyError::Poison(format!("saga id {:?} is not a UUID", event.subject))
        })?;
        let step = event.data.get("step").and_then(|s| s.as_str());
        let (status, outcome) = match kind {
            "SagaStarted" => (Some("running"), None),
            "CompensationStarted" => (Some("compensating"), None),
            "SagaCompleted" => (
                Some("completed"),
                event.data.get("outcome").and_then(|o| o.as_str()),
            ),
            "SagaNeedsAttention" => (Some("needs_attention"), None),
            _ => (None, None),
        };
        sqlx::query(
            "INSERT INTO saga_timeline (order_id, sequence, at, kind, step, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(order_id)
        .bind(event.sequence as i64)
        .bind(event.time)
        .bind(kind)
        .bind(step)
        .bind(&event.data)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO sagas_view (order_id, status, outcome, version, updated_at) \
             VALUES ($1, coalesce($2, 'running'), $3, $4, $5) \
             ON CONFLICT (order_id) DO UPDATE SET \
               status = coalesce($2, sagas_view.status), \
               outcome = coalesce($3, sagas_view.outcome), \
               version = $4, updated_at = $5",
        )
        .bind(order_id)
        .bind(status)
        .bind(outcome)
        .bind(event.sequence as i64)
        .bind(event.time)
        .execute(conn)
        .await?;
        Ok(())
    }
}
