//! HTTP routes of the query API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use projections::orders_view::OrdersView;
use projections::payments_view::PaymentsView;
use projections::products_view::ProductsView;
use projections::projection::Projection;
use runtime::problem::{self, Json};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::catalog;
use crate::error::ApiError;
use crate::freshness::{Freshness, Waited};
use crate::orders::{self, OrderView};

/// What the handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub freshness: Freshness,
    pub min_version_timeout: Duration,
    /// Longest a read may take before it is answered 503.
    pub request_timeout: Duration,
}

/// Query string of single-entity reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// Wait (boundedly) until the read model reflects at least this aggregate version.
    pub min_version: Option<u64>,
}

/// Most items one page holds; the default is 50.
pub const MAX_PAGE: i64 = 200;

/// The API's own routes, apart from `main` so tests can serve them on any port (the shared
/// start-up adds health, metrics and `/openapi.json`).
pub fn router(state: Arc<AppState>) -> Router {
    let pool = state.pool.clone();
    Router::new()
        .route(
            "/orders/{id}",
            get(get_order).fallback(problem::method_not_allowed),
        )
        .route(
            "/customers/{id}/orders",
            get(customer_orders).fallback(problem::method_not_allowed),
        )
        .route(
            "/products",
            get(list_products).fallback(problem::method_not_allowed),
        )
        .route(
            "/products/{sku}",
            get(get_product).fallback(problem::method_not_allowed),
        )
        .route(
            "/payments/{order_id}",
            get(get_payment).fallback(problem::method_not_allowed),
        )
        .route(
            "/analytics/sales",
            get(sales).fallback(problem::method_not_allowed),
        )
        .layer(axum::middleware::from_fn(crate::caching::etag))
        .layer(axum::middleware::from_fn_with_state(
            state.request_timeout,
            crate::caching::time_limit,
        ))
        .with_state(state)
        .merge(projections::lag::routes(pool))
}

/// Query string of lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Customer orders: only this status.
    pub status: Option<String>,
    /// Products: only those with at most this many available.
    pub low_stock: Option<i64>,
}

fn limit(params: &PageParams) -> Result<i64, ApiError> {
    match params.limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}, not {n}"
        ))),
    }
}

/// A page of items and where the next one starts (absent on the last page).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

async fn customer_orders(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<OrderView>>, ApiError> {
    let customer = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if params.low_stock.is_some() {
        return Err(ApiError::BadRequest("low_stock applies to products".into()));
    }
    const STATUSES: [&str; 5] = ["placed", "priced", "confirmed", "rejected", "cancelled"];
    if let Some(status) = &params.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let cursor =
        match &params.cursor {
            None => None,
            Some(c) => Some(orders::Cursor::decode(c).ok_or_else(|| {
                ApiError::BadRequest("the cursor is not one this API gave".into())
            })?),
        };
    let (items, next) = orders::for_customer(
        &state.pool,
        customer,
        params.status.as_deref(),
        cursor,
        limit(&params)?,
    )
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: next.map(|c| c.encode()),
    }))
}

async fn list_products(
    State(state): State<Arc<AppState>>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Page<catalog::ProductView>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if params.status.is_some() {
        return Err(ApiError::BadRequest("status applies to orders".into()));
    }
    let (items, next) = catalog::products(
        &state.pool,
        params.cursor.as_deref(),
        params.low_stock,
        limit(&params)?,
    )
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: next,
    }))
}

async fn get_product(
    State(state): State<Arc<AppState>>,
    Path(sku): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<catalog::ProductView>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let found = read_at_least(
        &state,
        ProductsView.name(),
        params.min_version,
        || catalog::product(&state.pool, &sku),
        |p| p.version as u64,
    )
    .await?;
    found.map(Json).ok_or(ApiError::NotFound("product"))
}

async fn get_payment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<catalog::PaymentView>, ApiError> {
    let order_id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let found = read_at_least(
        &state,
        PaymentsView.name(),
        params.min_version,
        || catalog::payment(&state.pool, order_id),
        |p| p.version as u64,
    )
    .await?;
    found.map(Json).ok_or(ApiError::NotFound("payment"))
}

/// `from` and `to` days (inclusive), default the last 30 days.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

async fn sales(
    State(state): State<Arc<AppState>>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let to = params.to.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let from = params.from.unwrap_or(to - chrono::Days::new(30));
    if from > to || (to - from).num_days() > 366 {
        return Err(ApiError::BadRequest(
            "from must be on or before to, and at most 366 days apart".into(),
        ));
    }
    let (sales, outcomes) = catalog::analytics(&state.pool, from, to).await?;
    Ok(Json(serde_json::json!({
        "from": from, "to": to, "sales": sales, "outcomes": outcomes
    })))
}

/// Reads once, or (with `min_version`) until the version is reached or the wait times out;
/// a single entity's read-your-writes without the staleness flag of orders.
async fn read_at_least<T, F, Fut>(
    state: &AppState,
    projection: &str,
    min_version: Option<u64>,
    read: F,
    version: impl Fn(&T) -> u64,
) -> Result<Option<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let mut read = read;
    let Some(min) = min_version else {
        return Ok(read().await?);
    };
    let waited = state
        .freshness
        .wait_for(projection, state.min_version_timeout, read, |t: &T| {
            version(t) >= min
        })
        .await?;
    Ok(match waited {
        Waited::Fresh(t) => Some(t),
        Waited::Stale(t) => t,
    })
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a UUID")))
}

async fn get_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = parse_id(&id)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Some(min_version) = params.min_version else {
        return orders::find(&state.pool, order_id)
            .await?
            .map(Json)
            .ok_or(ApiError::OrderNotFound { stale: false });
    };
    let waited = state
        .freshness
        .wait_for(
            OrdersView.name(),
            state.min_version_timeout,
            || orders::find(&state.pool, order_id),
            |o: &OrderView| o.version >= min_version,
        )
        .await?;
    match waited {
        Waited::Fresh(order) => Ok(Json(order)),
        Waited::Stale(Some(order)) => Ok(Json(OrderView {
            stale: true,
            ..order
        })),
        Waited::Stale(None) => Err(ApiError::OrderNotFound { stale: true }),
    }
}
