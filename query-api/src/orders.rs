//! Reads of the order read model.

use chrono::{DateTime, Utc};
use read_contract::OrderStatus;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// An amount in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MoneyView {
    pub amount_minor: i64,
    pub currency: String,
}

/// One line as the read model holds it; prices once inventory answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderLineView {
    pub sku: String,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<MoneyView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_total: Option<MoneyView>,
}

/// `GET /orders/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub lines: Vec<OrderLineView>,
    /// Known once the order is priced.
    pub total: Option<MoneyView>,
    /// Why it was rejected (`out_of_stock`, `payment_declined`, `timeout`, `failed`).
    pub rejection_reason: Option<String>,
    pub rejection_detail: Option<String>,
    /// The payment as the payments projection has it (`status`, amounts), if any yet.
    pub payment: Option<serde_json::Value>,
    /// The saga's `status` and `outcome`, if it started.
    pub saga: Option<serde_json::Value>,
    /// Every saga event: `{sequence, at, kind, step, detail}`.
    pub timeline: serde_json::Value,
    /// The order aggregate's version this row reflects.
    pub version: u64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// True when `min_version` was asked for and the read model did not reach it in time.
    pub stale: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    order_id: Uuid,
    customer_id: Uuid,
    status: String,
    lines: sqlx::types::Json<Vec<OrderLineView>>,
    total_minor: Option<i64>,
    currency: Option<String>,
    rejection_reason: Option<String>,
    rejection_detail: Option<String>,
    payment: Option<serde_json::Value>,
    saga: Option<serde_json::Value>,
    timeline: serde_json::Value,
    version: i64,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Everything about an order in one statement: the row, its payment, its saga and timeline.
const ORDER_SELECT: &str = "SELECT o.order_id, o.customer_id, o.status, o.lines, o.total_minor, o.currency, \
        o.rejection_reason, o.rejection_detail, o.version, o.placed_at, o.updated_at, \
        (SELECT to_jsonb(p) - 'order_id' FROM payments_view p WHERE p.order_id = o.order_id) AS payment, \
        (SELECT jsonb_build_object('status', s.status, 'outcome', s.outcome) FROM sagas_view s \
          WHERE s.order_id = o.order_id) AS saga, \
        (SELECT coalesce(jsonb_agg(jsonb_build_object('sequence', t.sequence, 'at', t.at, 'kind', t.kind, \
                  'step', t.step, 'detail', t.detail) ORDER BY t.sequence), '[]'::jsonb) \
          FROM saga_timeline t WHERE t.order_id = o.order_id) AS timeline \
     FROM orders_view o";

impl From<Row> for OrderView {
    fn from(r: Row) -> Self {
        OrderView {
            order_id: r.order_id,
            customer_id: r.customer_id,
            status: r.status,
            lines: r.lines.0,
            total: r
                .total_minor
                .zip(r.currency)
                .map(|(amount_minor, currency)| MoneyView {
                    amount_minor,
                    currency,
                }),
            rejection_reason: r.rejection_reason,
            rejection_detail: r.rejection_detail,
            payment: r.payment,
            saga: r.saga,
            timeline: r.timeline,
            version: r.version as u64,
            placed_at: r.placed_at,
            updated_at: r.updated_at,
            stale: false,
        }
    }
}

/// The order, if the projection has it.
pub async fn find(pool: &PgPool, order_id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!("{ORDER_SELECT} WHERE o.order_id = $1"))
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(OrderView::from))
}

/// Where a page of a customer's orders starts: after this (placed_at, order_id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub placed_at: DateTime<Utc>,
    pub order_id: Uuid,
}

impl Cursor {
    /// Opaque to clients: `<microseconds since the epoch>.<order id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.placed_at.timestamp_micros(), self.order_id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('.')?;
        Some(Self {
            placed_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            order_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// A customer's orders, newest first, `limit` at most, after `cursor`; keyset pagination, so
/// orders placed meanwhile never shift a page.
pub async fn for_customer(
    pool: &PgPool,
    customer_id: Uuid,
    status: Option<OrderStatus>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<OrderView>, Option<Cursor>), sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{ORDER_SELECT} WHERE o.customer_id = $1 AND ($2::text IS NULL OR o.status = $2) \
           AND ($3::timestamptz IS NULL OR (o.placed_at, o.order_id) < ($3, $4)) \
         ORDER BY o.placed_at DESC, o.order_id DESC LIMIT $5"
    ))
    .bind(customer_id)
    .bind(status.map(OrderStatus::as_str))
    .bind(cursor.map(|c| c.placed_at))
    .bind(cursor.map(|c| c.order_id))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut orders: Vec<OrderView> = rows.into_iter().map(OrderView::from).collect();
    let next = if orders.len() as i64 > limit {
        orders.truncate(limit as usize);
        orders.last().map(|o| Cursor {
            placed_at: o.placed_at,
            order_id: o.order_id,
        })
    } else {
        None
    };
    Ok((orders, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            placed_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            order_id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "x.y", "12", "12.not-a-uuid"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
