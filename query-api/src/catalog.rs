//! Reads of products, payments and sales analytics.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// `GET /products/{sku}` and the items of `GET /products`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub unit_price: i64,
    pub currency: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// The most units one customer's open orders may hold of it (a flash sale); absent when
    /// there is no such limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_limit: Option<i64>,
}

const PRODUCT_SELECT: &str =
    "SELECT sku, name, unit_price, currency, on_hand, reserved, available, \
    version, updated_at, customer_limit FROM products_view";

pub async fn product(pool: &PgPool, sku: &str) -> Result<Option<ProductView>, sqlx::Error> {
    sqlx::query_as(&format!("{PRODUCT_SELECT} WHERE sku = $1"))
        .bind(sku)
        .fetch_optional(pool)
        .await
}

/// Products by SKU after `after`; with `low_stock`, only those with at most that many
/// available.
pub async fn products(
    pool: &PgPool,
    after: Option<&str>,
    low_stock: Option<i64>,
    limit: i64,
) -> Result<(Vec<ProductView>, Option<String>), sqlx::Error> {
    let mut rows: Vec<ProductView> = sqlx::query_as(&format!(
        "{PRODUCT_SELECT} WHERE ($1::text IS NULL OR sku > $1) \
           AND ($2::bigint IS NULL OR available <= $2) ORDER BY sku LIMIT $3"
    ))
    .bind(after)
    .bind(low_stock)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|p| p.sku.clone())
    } else {
        None
    };
    Ok((rows, next))
}

/// `GET /payments/{order_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct PaymentView {
    pub order_id: Uuid,
    pub status: String,
    pub currency: String,
    pub authorised: i64,
    pub captured: i64,
    pub voided: i64,
    pub refunded: i64,
    pub decline_reason: Option<String>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

pub async fn payment(pool: &PgPool, order_id: Uuid) -> Result<Option<PaymentView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, status, currency, authorised, captured, voided, refunded, decline_reason, \
                version, updated_at FROM payments_view WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// One day's sales of one SKU (confirmed orders only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct SalesRow {
    pub day: NaiveDate,
    pub sku: String,
    pub currency: String,
    pub units: i64,
    pub revenue_minor: i64,
    pub orders: i64,
}

/// How many orders ended one way on one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct OutcomeRow {
    pub day: NaiveDate,
    pub outcome: String,
    pub orders: i64,
}

/// Sales and outcomes between two days, inclusive.
pub async fn analytics(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(Vec<SalesRow>, Vec<OutcomeRow>), sqlx::Error> {
    let sales = sqlx::query_as(
        "SELECT day, sku, currency, units, revenue_minor, orders FROM sales_daily \
         WHERE day BETWEEN $1 AND $2 ORDER BY day, sku",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let outcomes = sqlx::query_as(
        "SELECT day, outcome, orders FROM order_outcomes_daily \
         WHERE day BETWEEN $1 AND $2 ORDER BY day, outcome",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok((sales, outcomes))
}
