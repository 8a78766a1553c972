//! The order read models: one row per order (`orders_view`) and orders per customer
//! (`customer_order_counts`).

use domain::order::{order_placed_v1_to_v2, OrderPlaced, PricedLine};
use domain::Money;
use messaging::{BoundedContext, Envelope};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projection::{decode, ApplyError, Projection};

/// Keeps `orders_view` and `customer_order_counts` up to date from the `ORDERS` stream.
#[derive(Debug, Default, Clone)]
pub struct OrdersView;

impl Projection for OrdersView {
    fn name(&self) -> &'static str {
        "orders_view"
    }

    fn context(&self) -> BoundedContext {
        BoundedContext::Orders
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "orders_view",
            "customer_order_counts",
            "sales_daily",
            "order_outcomes_daily",
        ]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &Envelope) -> Result<(), ApplyError> {
        let version = event.sequence as i64;
        match (event.name(), event.version()) {
            ("OrderPlaced", 1 | 2) => {
                // v1 (no payment token) is upcast the way the domain upcasts stored events.
                let data = if event.version() == 1 {
                    order_placed_v1_to_v2(event.data.clone())
                } else {
                    event.data.clone()
                };
                let placed: OrderPlaced = serde_json::from_value(data)
                    .map_err(|e| ApplyError::Poison(format!("OrderPlaced does not decode: {e}")))?;
                let lines: Vec<Value> = placed
                    .lines
                    .iter()
                    .map(|l| json!({"sku": l.sku, "quantity": l.quantity}))
                    .collect();
                sqlx::query(
                    "INSERT INTO orders_view \
                       (order_id, customer_id, status, lines, version, placed_at, updated_at) \
                     VALUES ($1, $2, 'placed', $3, $4, $5, $6)",
                )
                .bind(placed.order_id)
                .bind(placed.customer_id)
                .bind(Value::Array(lines))
                .bind(version)
                .bind(placed.placed_at)
                .bind(event.time)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO customer_order_counts (customer_id, orders) VALUES ($1, 1) \
                     ON CONFLICT (customer_id) \
                     DO UPDATE SET orders = customer_order_counts.orders + 1",
                )
                .bind(placed.customer_id)
                .execute(&mut *conn)
                .await?;
            }
            ("OrderPriced", 1) => {
                let priced: Priced = decode(event)?;
                sqlx::query(
                    "UPDATE orders_view SET status = 'priced', lines = $2, total_minor = $3, \
                       currency = $4, version = $5, updated_at = $6 WHERE order_id = $1",
                )
                .bind(priced.order_id)
                .bind(serde_json::to_value(&priced.lines).unwrap_or_default())
                .bind(priced.total.amount_minor)
                .bind(priced.total.currency.as_str())
                .bind(version)
                .bind(event.time)
                .execute(&mut *conn)
                .await?;
            }
            ("OrderConfirmed", 1) => {
                let id: OrderId = decode(event)?;
                set_status(conn, id.order_id, "confirmed", None, version, event).await?;
                record_sale(conn, id.order_id, event).await?;
                count_outcome(conn, "confirmed", event).await?;
            }
            ("OrderCancelled", 1) => {
                let id: OrderId = decode(event)?;
                set_status(conn, id.order_id, "cancelled", None, version, event).await?;
                count_outcome(conn, "cancelled", event).await?;
            }
            ("OrderRejected", 1) => {
                let rejected: Rejected = decode(event)?;
                count_outcome(conn, &rejected.reason, event).await?;
                set_status(
                    conn,
                    rejected.order_id,
                    "rejected",
                    Some((rejected.reason, rejected.detail)),
                    version,
                    event,
                )
                .await?;
            }
            (name, version) => {
                return Err(ApplyError::Poison(format!(
                    "unknown event type {name} v{version}"
                )))
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Priced {
    order_id: Uuid,
    lines: Vec<PricedLine>,
    total: Money,
}

#[derive(Deserialize)]
struct OrderId {
    order_id: Uuid,
}

#[derive(Deserialize)]
struct Rejected {
    order_id: Uuid,
    reason: String,
    detail: String,
}

async fn set_status(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: &str,
    rejection: Option<(String, String)>,
    version: i64,
    event: &Envelope,
) -> Result<(), sqlx::Error> {
    let (reason, detail) = rejection.unzip();
    sqlx::query(
        "UPDATE orders_view SET status = $2, rejection_reason = $3, rejection_detail = $4, \
           version = $5, updated_at = $6 WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(status)
    .bind(reason)
    .bind(detail)
    .bind(version)
    .bind(event.time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds a confirmed order's priced lines to the day's sales (the day of confirmation, UTC).
async fn record_sale(
    conn: &mut PgConnection,
    order_id: Uuid,
    event: &Envelope,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sales_daily (day, sku, currency, units, revenue_minor, orders) \
         SELECT ($2 AT TIME ZONE 'UTC')::date, line->>'sku', line->'line_total'->>'currency', \
                (line->>'quantity')::bigint, (line->'line_total'->>'amount_minor')::bigint, 1 \
         FROM orders_view, jsonb_array_elements(lines) line \
         WHERE order_id = $1 AND line ? 'line_total' \
         ON CONFLICT (day, sku, currency) DO UPDATE SET \
           units = sales_daily.units + EXCLUDED.units, \
           revenue_minor = sales_daily.revenue_minor + EXCLUDED.revenue_minor, \
           orders = sales_daily.orders + 1",
    )
    .bind(order_id)
    .bind(event.time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts how an order ended, per day.
async fn count_outcome(
    conn: &mut PgConnection,
    outcome: &str,
    event: &Envelope,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_outcomes_daily (day, outcome, orders) \
         VALUES (($1 AT TIME ZONE 'UTC')::date, $2, 1) \
         ON CONFLICT (day, outcome) DO UPDATE SET orders = order_outcomes_daily.orders + 1",
    )
    .bind(event.time)
    .bind(outcome)
    .execute(conn)
    .await?;
    Ok(())
}
