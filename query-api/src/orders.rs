//! Reads of the order read model.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// An amount in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyView {
    pub amount_minor: i64,
    pub currency: String,
}

/// One line as the read model holds it; prices once inventory answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLineView {
    pub sku: String,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<MoneyView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_total: Option<MoneyView>,
}

/// `GET /orders/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    version: i64,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The order's row, if the projection has it.
pub async fn find(pool: &PgPool, order_id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT order_id, customer_id, status, lines, total_minor, currency, rejection_reason, \
                rejection_detail, version, placed_at, updated_at \
         FROM orders_view WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| OrderView {
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
        version: r.version as u64,
        placed_at: r.placed_at,
        updated_at: r.updated_at,
        stale: false,
    }))
}
