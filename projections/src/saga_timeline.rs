//! The saga read models: every saga event as a timeline row, and each saga's status and
//! outcome, from the `SAGAS` stream.

use chrono::{DateTime, Utc};
use domain::saga::SagaEvent;
use messaging::{BoundedContext, Envelope};
use read_contract::SagaStatus;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projection::{decode, Folds, Projection};

/// Keeps `saga_timeline` and `sagas_view` up to date.
#[derive(Debug, Default, Clone)]
pub struct SagaTimeline;

/// One saga event as the timeline keeps it.
#[derive(Debug)]
pub struct SagaChange {
    order_id: Uuid,
    sequence: i64,
    at: DateTime<Utc>,
    kind: String,
    step: Option<String>,
    detail: Value,
    /// The saga's status and outcome after this event, when it sets them.
    status: Option<SagaStatus>,
    outcome: Option<String>,
}

impl Projection for SagaTimeline {
    type Change = SagaChange;

    const NAME: &'static str = read_contract::SAGA_TIMELINE;
    const CONTEXT: BoundedContext = BoundedContext::Sagas;
    const TABLES: &'static [&'static str] = &["saga_timeline", "sagas_view"];

    fn decode(&self, event: &Envelope) -> Result<SagaChange, String> {
        let order_id = Uuid::parse_str(&event.subject)
            .map_err(|_| format!("saga id {:?} is not a UUID", event.subject))?;
        let saga_event: SagaEvent = decode(event)?;
        let (step, status, outcome) = match &saga_event {
            SagaEvent::SagaStarted { .. } => (None, Some(SagaStatus::Running), None),
            SagaEvent::StepAttempted { step, .. }
            | SagaEvent::StepCompleted { step, .. }
            | SagaEvent::StepFailed { step, .. }
            | SagaEvent::StepGaveUp { step, .. } => (Some(step.to_string()), None, None),
            SagaEvent::CompensationStarted { .. } => (None, Some(SagaStatus::Compensating), None),
            SagaEvent::SagaCompleted { outcome, .. } => {
                let outcome = serde_json::to_value(outcome)
                    .ok()
                    .and_then(|o| o.as_str().map(str::to_owned));
                (None, Some(SagaStatus::Completed), outcome)
            }
            SagaEvent::SagaNeedsAttention { step, .. } => (
                Some(step.to_string()),
                Some(SagaStatus::NeedsAttention),
                None,
            ),
            SagaEvent::SagaResumed {
                step, compensating, ..
            } => {
                let status = if *compensating {
                    SagaStatus::Compensating
                } else {
                    SagaStatus::Running
                };
                (step.as_ref().map(ToString::to_string), Some(status), None)
            }
        };
        // The payment token never leaves the write side: the timeline keeps the rest.
        let mut detail = event.data.clone();
        if let Some(fields) = detail.as_object_mut() {
            fields.remove("payment_token");
        }
        Ok(SagaChange {
            order_id,
            sequence: event.sequence as i64,
            at: event.time,
            // The event decoded, so its name is a saga event type.
            kind: event.name().to_owned(),
            step,
            detail,
            status,
            outcome,
        })
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        changes: &[SagaChange],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO saga_timeline (order_id, sequence, at, kind, step, detail) \
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::text[], \
                                  $5::text[], $6::jsonb[])",
        )
        .bind(changes.iter().map(|c| c.order_id).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.sequence).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.at).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.step.clone()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.detail.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;

        // Each saga's last status and outcome in this batch, folded in stream order.
        let mut sagas: Folds<Uuid, Fold> = Folds::default();
        for c in changes {
            let f = sagas.entry(c.order_id, || Fold {
                order_id: c.order_id,
                ..Fold::default()
            });
            f.status = c.status.or(f.status);
            f.outcome = c.outcome.clone().or(f.outcome.take());
            f.version = c.sequence;
            f.at = Some(c.at);
        }
        sqlx::query(
            "INSERT INTO sagas_view (order_id, status, outcome, version, updated_at) \
             SELECT u.order_id, coalesce(u.status, s.status, $6), \
                    coalesce(u.outcome, s.outcome), u.version, u.at \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[]) \
                  AS u(order_id, status, outcome, version, at) \
             LEFT JOIN sagas_view s USING (order_id) \
             ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
               outcome = EXCLUDED.outcome, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        )
        .bind(sagas.column(|f| f.order_id))
        .bind(sagas.column(|f| f.status.map(SagaStatus::as_str)))
        .bind(sagas.column(|f| f.outcome.clone()))
        .bind(sagas.column(|f| f.version))
        .bind(sagas.column(|f| f.at))
        // `status` is NOT NULL: a saga whose events so far set none (its `SagaStarted` was
        // dead-lettered, say) is taken to be running.
        .bind(SagaStatus::Running.as_str())
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// One saga's row as this batch leaves it.
#[derive(Default)]
struct Fold {
    order_id: Uuid,
    status: Option<SagaStatus>,
    outcome: Option<String>,
    version: i64,
    at: Option<DateTime<Utc>>,
}
