//! HTTP routes of the orders service.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use domain::order::{Order, OrderCommand, OrderLine, PlaceOrder};
use event_store::{CommandBus, CommandMetadata};
use runtime::health::Readiness;
use runtime::problem::{self, Json};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// What the handlers share.
pub struct AppState {
    pub orders: CommandBus<Order>,
}

/// `POST /orders` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
}

/// A command's answer: the aggregate and the version it reached.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub order_id: Uuid,
    pub version: u64,
}

/// The service's routes, apart from `main` so tests can serve them on any port.
pub fn router(state: Arc<AppState>, readiness: Readiness, body_limit: usize) -> Router {
    Router::new()
        .route(
            "/orders",
            post(place_order).fallback(problem::method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .merge(runtime::health::routes(readiness))
        .fallback(problem::not_found)
}

/// The trace context of a request: its valid `traceparent`, or a new one.
fn traceparent(headers: &HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| messaging::trace::is_valid_traceparent(v))
        .map_or_else(messaging::trace::new_traceparent, str::to_owned)
}

async fn place_order(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<PlaceOrderRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let order_id = Uuid::now_v7();
    let metadata = CommandMetadata {
        command_id: Uuid::now_v7(),
        correlation_id: order_id.to_string(),
        traceparent: traceparent(&headers),
    };
    let command = OrderCommand::Place(PlaceOrder {
        order_id,
        customer_id: body.customer_id,
        lines: body.lines,
        placed_at: Utc::now(),
    });
    let committed = state
        .orders
        .execute(&order_id.to_string(), command, &metadata)
        .await?;
    tracing::info!(%order_id, version = committed.version, "order placed");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            order_id,
            version: committed.version,
        }),
    ))
}
