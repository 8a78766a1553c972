//! The orchestrator's HTTP face: health, and each saga's state and timeline.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use runtime::health::Readiness;
use runtime::problem::{self, Json, Problem};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::driver::Driver;

pub fn router(driver: Arc<Driver>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/sagas/{order_id}",
            get(saga).fallback(problem::method_not_allowed),
        )
        .with_state(driver)
        .merge(runtime::health::routes(readiness))
        .fallback(problem::not_found)
        .layer(axum::middleware::from_fn(runtime::metrics::track_http))
        .layer(axum::middleware::from_fn(runtime::trace::http_span))
}

/// `GET /sagas/{order_id}`: status, outcome, steps and the timeline of saga events.
async fn saga(
    State(driver): State<Arc<Driver>>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let order_id = Uuid::parse_str(&order_id).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The order id is not a UUID",
        )
    })?;
    let (saga, events) = driver
        .load(order_id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    if events.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No saga for this order",
        ));
    }
    let steps: serde_json::Map<String, Value> = saga
        .steps
        .iter()
        .map(|(step, state)| {
            (
                step.to_string(),
                serde_json::to_value(state).unwrap_or(Value::Null),
            )
        })
        .collect();
    let timeline: Vec<Value> = events
        .iter()
        .map(|e| json!({"sequence": e.sequence, "event": e.payload}))
        .collect();
    Ok(Json(json!({
        "order_id": order_id,
        "status": saga.status,
        "outcome": saga.outcome,
        "compensation": saga.compensation,
        "version": events.len(),
        "steps": steps,
        "timeline": timeline,
    })))
}
