//! HTTP routes of the query API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use runtime::health::Readiness;
use runtime::problem::{self, Json};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::freshness::{Freshness, Waited};
use crate::orders::{self, OrderView};

/// What the handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub freshness: Freshness,
    pub min_version_timeout: Duration,
}

/// Query string of single-entity reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// Wait (boundedly) until the read model reflects at least this aggregate version.
    pub min_version: Option<u64>,
}

/// The API's routes, apart from `main` so tests can serve them on any port.
pub fn router(state: Arc<AppState>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/orders/{id}",
            get(get_order).fallback(problem::method_not_allowed),
        )
        .with_state(state)
        .merge(runtime::health::routes(readiness))
        .fallback(problem::not_found)
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
