//! The orchestrator's HTTP face: health, and each saga's state and timeline.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use runtime::problem::{self, Json, Problem};
use std::collections::BTreeMap;

use domain::saga::{CompensationReason, SagaEvent, SagaOutcome, SagaStatus, StepState};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::driver::Driver;

/// The orchestrator's own routes (the shared start-up adds health, metrics and the document).
pub fn router(driver: Arc<Driver>) -> Router {
    Router::new()
        .route(
            "/sagas/{order_id}",
            get(saga).fallback(problem::method_not_allowed),
        )
        .with_state(driver)
}

/// `GET /sagas/{order_id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SagaView {
    pub order_id: Uuid,
    pub status: SagaStatus,
    pub outcome: Option<SagaOutcome>,
    pub compensation: Option<CompensationReason>,
    /// The saga's version: how many events it has.
    pub version: usize,
    /// Each step by name (`reserve:SKU-1`, `authorise`, ...).
    pub steps: BTreeMap<String, StepState>,
    pub timeline: Vec<TimelineEntry>,
}

/// One saga event.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TimelineEntry {
    pub sequence: usize,
    /// The event as stored (`{"<EventType>": {...}}`).
    pub event: SagaEvent,
}

/// The event as readers may see it: the payment token never leaves the write side.
fn without_token(event: SagaEvent) -> SagaEvent {
    match event {
        SagaEvent::SagaStarted {
            order_id,
            customer_id,
            lines,
            started_at,
            ..
        } => SagaEvent::SagaStarted {
            order_id,
            customer_id,
            lines,
            payment_token: None,
            started_at,
        },
        other => other,
    }
}

/// The orchestrator's OpenAPI document.
pub fn openapi() -> Value {
    let mut components = serde_json::Map::new();
    let view = runtime::openapi::add::<SagaView>(&mut components, "SagaView");
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/sagas/{order_id}".into(),
        runtime::openapi::get(
            "A saga's status, outcome, steps and timeline of events",
            vec![runtime::openapi::path_param("order_id")],
            view,
            &[
                ("400", "The order id is not a UUID"),
                ("404", "No saga for this order"),
                ("500", "Internal error"),
            ],
        ),
    );
    runtime::openapi::document(
        "streamshop orchestrator",
        "The saga orchestrator's reads: each order's saga.",
        paths,
        components,
    )
}

/// `GET /sagas/{order_id}`: status, outcome, steps and the timeline of saga events.
async fn saga(
    State(driver): State<Arc<Driver>>,
    Path(order_id): Path<String>,
) -> Result<Json<SagaView>, Problem> {
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
    let steps = saga
        .steps
        .iter()
        .map(|(step, state)| (step.to_string(), state.clone()))
        .collect();
    let timeline = events
        .iter()
        .map(|e| TimelineEntry {
            sequence: e.sequence,
            event: without_token(e.payload.clone()),
        })
        .collect();
    Ok(Json(SagaView {
        order_id,
        status: saga.status,
        outcome: saga.outcome,
        compensation: saga.compensation,
        version: events.len(),
        steps,
        timeline,
    }))
}
