//! The payment read model: per order, authorised / captured / voided / refunded, from the
//! `PAYMENTS` stream.

use chrono::{DateTime, Utc};
use domain::payment::PaymentEvent;
use messaging::{BoundedContext, Envelope};
use read_contract::PaymentStatus;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projection::{add, decode, Folds, Projection};

/// Keeps `payments_view` up to date.
#[derive(Debug, Default, Clone)]
pub struct PaymentsView;

/// What a payment event does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Authorised,
    Declined,
    Captured,
    Voided,
    Refunded,
}

#[derive(Debug)]
pub struct PaymentChange {
    kind: Kind,
    order_id: Uuid,
    amount_minor: i64,
    currency: String,
    reason: Option<String>,
    version: i64,
    at: DateTime<Utc>,
}

/// One payment's row as this batch leaves it: absolute values where an event sets them,
/// deltas where events add up.
#[derive(Default)]
struct Fold {
    order_id: Uuid,
    /// Authorised or declined in this batch: the row starts here.
    created: bool,
    status: Option<PaymentStatus>,
    currency: Option<String>,
    authorised: Option<i64>,
    captured: i64,
    voided: Option<i64>,
    refunded: i64,
    decline_reason: Option<String>,
    version: i64,
    at: Option<DateTime<Utc>>,
}

impl Projection for PaymentsView {
    type Change = PaymentChange;

    const NAME: &'static str = read_contract::PAYMENTS_VIEW;
    const CONTEXT: BoundedContext = BoundedContext::Payments;
    const TABLES: &'static [&'static str] = &["payments_view"];

    fn decode(&self, event: &Envelope) -> Result<PaymentChange, String> {
        let (kind, order_id, amount, reason) = match decode::<PaymentEvent>(event)? {
            PaymentEvent::PaymentAuthorised {
                order_id, amount, ..
            } => (Kind::Authorised, order_id, amount, None),
            PaymentEvent::PaymentDeclined {
                order_id,
                amount,
                reason,
            } => (Kind::Declined, order_id, amount, Some(reason)),
            PaymentEvent::PaymentCaptured {
                order_id, amount, ..
            } => (Kind::Captured, order_id, amount, None),
            PaymentEvent::PaymentVoided { order_id, amount } => {
                (Kind::Voided, order_id, amount, None)
            }
            PaymentEvent::PaymentRefunded {
                order_id, amount, ..
            } => (Kind::Refunded, order_id, amount, None),
        };
        if amount.amount_minor < 0 {
            return Err(format!("a negative amount ({})", amount.amount_minor));
        }
        Ok(PaymentChange {
            kind,
            order_id,
            amount_minor: amount.amount_minor,
            currency: amount.currency.as_str().to_owned(),
            reason,
            version: event.sequence as i64,
            at: event.time,
        })
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        changes: &[PaymentChange],
    ) -> Result<(), sqlx::Error> {
        let mut rows: Folds<Uuid, Fold> = Folds::default();
        for c in changes {
            let f = rows.entry(c.order_id, || Fold {
                order_id: c.order_id,
                ..Fold::default()
            });
            f.currency = Some(c.currency.clone());
            f.version = c.version;
            f.at = Some(c.at);
            match c.kind {
                Kind::Authorised => {
                    f.created = true;
                    f.status = Some(PaymentStatus::Authorised);
                    f.authorised = Some(c.amount_minor);
                }
                Kind::Declined => {
                    f.created = true;
                    f.status = Some(PaymentStatus::Declined);
                    f.decline_reason = c.reason.clone();
                }
                Kind::Captured => {
                    f.status = Some(PaymentStatus::Captured);
                    f.captured = add(f.captured, c.amount_minor, "captured")?;
                }
                Kind::Voided => {
                    f.status = Some(PaymentStatus::Voided);
                    f.voided = Some(c.amount_minor);
                }
                Kind::Refunded => {
                    f.status = Some(PaymentStatus::Refunded);
                    f.refunded = add(f.refunded, c.amount_minor, "refunded")?;
                }
            }
        }
        // Rows of payments neither created now nor known are skipped, as an UPDATE of a
        // missing row would be.
        sqlx::query(
            "INSERT INTO payments_view (order_id, status, currency, authorised, captured, voided, \
               refunded, decline_reason, version, updated_at) \
             SELECT u.order_id, coalesce(u.status, p.status), coalesce(u.currency, p.currency), \
               coalesce(u.authorised, CASE WHEN u.created THEN 0 ELSE p.authorised END), \
               CASE WHEN u.created THEN 0 ELSE p.captured END + u.captured, \
               coalesce(u.voided, CASE WHEN u.created THEN 0 ELSE p.voided END), \
               CASE WHEN u.created THEN 0 ELSE p.refunded END + u.refunded, \
               CASE WHEN u.created THEN u.decline_reason ELSE p.decline_reason END, \
               u.version, u.at \
             FROM unnest($1::uuid[], $2::bool[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
                         $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::timestamptz[]) \
                  AS u(order_id, created, status, currency, authorised, captured, voided, refunded, \
                       decline_reason, version, at) \
             LEFT JOIN payments_view p USING (order_id) \
             WHERE u.created OR p.order_id IS NOT NULL \
             ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
               currency = EXCLUDED.currency, authorised = EXCLUDED.authorised, \
               captured = EXCLUDED.captured, voided = EXCLUDED.voided, refunded = EXCLUDED.refunded, \
               decline_reason = EXCLUDED.decline_reason, version = EXCLUDED.version, \
               updated_at = EXCLUDED.updated_at",
        )
        .bind(rows.column(|f| f.order_id))
        .bind(rows.column(|f| f.created))
        .bind(rows.column(|f| f.status.map(PaymentStatus::as_str)))
        .bind(rows.column(|f| f.currency.clone()))
        .bind(rows.column(|f| f.authorised))
        .bind(rows.column(|f| f.captured))
        .bind(rows.column(|f| f.voided))
        .bind(rows.column(|f| f.refunded))
        .bind(rows.column(|f| f.decline_reason.clone()))
        .bind(rows.column(|f| f.version))
        .bind(rows.column(|f| f.at))
        .execute(conn)
        .await?;
        Ok(())
    }
}
