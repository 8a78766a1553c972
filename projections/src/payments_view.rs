//! The payment read model: per order, authorised / captured / voided / refunded, from the
//! `PAYMENTS` stream.

use domain::Money;
use messaging::{BoundedContext, Envelope};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projection::{decode, ApplyError, Projection};

/// Keeps `payments_view` up to date.
#[derive(Debug, Default, Clone)]
pub struct PaymentsView;

#[derive(Deserialize)]
struct Amount {
    order_id: Uuid,
    amount: Money,
    #[serde(default)]
    reason: Option<String>,
}

impl Projection for PaymentsView {
    fn name(&self) -> &'static str {
        "payments_view"
    }

    fn context(&self) -> BoundedContext {
        BoundedContext::Payments
    }

    fn tables(&self) -> &'static [&'static str] {
        &["payments_view"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &Envelope) -> Result<(), ApplyError> {
        let sql = match (event.name(), event.version()) {
            ("PaymentAuthorised", 1) => {
                "INSERT INTO payments_view (order_id, status, currency, authorised, version, updated_at) \
                 VALUES ($1, 'authorised', $2, $3, $4, $5)"
            }
            ("PaymentDeclined", 1) => {
                "INSERT INTO payments_view (order_id, status, currency, decline_reason, version, updated_at) \
                 VALUES ($1, 'declined', $2, $6, $4, $5)"
            }
            ("PaymentCaptured", 1) => {
                "UPDATE payments_view SET status = 'captured', currency = $2, captured = captured + $3, \
                   version = $4, updated_at = $5 WHERE order_id = $1"
            }
            ("PaymentVoided", 1) => {
                "UPDATE payments_view SET status = 'voided', currency = $2, voided = $3, version = $4, \
                   updated_at = $5 WHERE order_id = $1"
            }
            ("PaymentRefunded", 1) => {
                "UPDATE payments_view SET status = 'refunded', currency = $2, refunded = refunded + $3, \
                   version = $4, updated_at = $5 WHERE order_id = $1"
            }
            (name, v) => return Err(ApplyError::Poison(format!("unknown event type {name} v{v}"))),
        };
        let e: Amount = decode(event)?;
        let mut query = sqlx::query(sql)
            .bind(e.order_id)
            .bind(e.amount.currency.as_str().to_owned())
            .bind(e.amount.amount_minor)
            .bind(event.sequence as i64)
            .bind(event.time);
        if event.name() == "PaymentDeclined" {
            query = query.bind(e.reason);
        }
        query.execute(conn).await?;
        Ok(())
    }
}
