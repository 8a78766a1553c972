//! The orchestrator's HTTP face: each saga's state and timeline, the sagas parked for
//! attention, and an operator's resumption of one.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use event_store::Executed;
use service_kit::problem::{self, Json, Problem};
use std::collections::BTreeMap;

use domain::saga::{CompensationReason, SagaEvent, SagaOutcome, SagaStatus, StepState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::driver::{Driver, Parked};

/// The routes the gateway forwards to (operators': parked sagas, one saga, a retry).
pub fn gateway_routes() -> Vec<(axum::http::Method, String)> {
    use axum::http::Method;
    vec![
        (Method::GET, "/sagas".into()),
        (Method::GET, "/sagas/{order_id}".into()),
        (Method::POST, "/sagas/{order_id}/retry".into()),
    ]
}

/// The orchestrator's own routes (the shared start-up adds health, metrics and the document).
pub fn router(driver: Arc<Driver>) -> Router {
    Router::new()
        .route("/sagas", get(parked).fallback(problem::method_not_allowed))
        .route(
            "/sagas/{order_id}",
            get(saga).fallback(problem::method_not_allowed),
        )
        .route(
            "/sagas/{order_id}/retry",
            post(retry).fallback(problem::method_not_allowed),
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

/// `GET /sagas?status=needs_attention`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParkedList {
    pub items: Vec<Parked>,
}

/// The query of `GET /sagas`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

/// `POST /sagas/{order_id}/retry`: why the saga may go on now.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// What was fixed, recorded in the saga's `SagaResumed` event.
    #[schemars(length(min = 1, max = 1000))]
    pub reason: String,
}

/// The answer to a resumption.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Resumed {
    pub order_id: Uuid,
    pub status: SagaStatus,
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
    let view = service_kit::openapi::add::<SagaView>(&mut components, "SagaView");
    let parked = service_kit::openapi::add::<ParkedList>(&mut components, "ParkedList");
    let retry_request = service_kit::openapi::add::<RetryRequest>(&mut components, "RetryRequest");
    let resumed = service_kit::openapi::add::<Resumed>(&mut components, "Resumed");
    let mut paths = serde_json::Map::new();
    let mut list = service_kit::openapi::get(
        "The sagas parked for attention, with the step and the reason each stopped on",
        vec![serde_json::json!({
            "name": "status", "in": "query", "required": true,
            "schema": {"type": "string", "enum": ["needs_attention"]}
        })],
        parked,
        &[
            ("400", "A status other than needs_attention"),
            ("500", "Internal error"),
        ],
    );
    list["get"]["summary"] = "Sagas parked for attention".into();
    paths.insert("/sagas".into(), list);
    paths.insert(
        "/sagas/{order_id}/retry".into(),
        serde_json::json!({"post": {
            "summary": "Resume a parked saga once its cause is removed; the reason is recorded",
            "parameters": [service_kit::openapi::path_param("order_id")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": retry_request}}},
            "responses": {
                "202": {"description": "Resumed", "content": {"application/json": {"schema": resumed}}},
                "400": service_kit::openapi::problem("The order id is not a UUID, or the body is not valid JSON"),
                "404": service_kit::openapi::problem("No saga for this order"),
                "409": service_kit::openapi::problem("The saga is not parked"),
                "413": service_kit::openapi::problem("The body is too large"),
                "415": service_kit::openapi::problem("The body is not sent as application/json"),
                "422": service_kit::openapi::problem("Not a retry request: no reason, one over 1000 characters, or other fields"),
                "500": service_kit::openapi::problem("Internal error")
            }
        }}),
    );
    paths.insert(
        "/sagas/{order_id}".into(),
        service_kit::openapi::get(
            "A saga's status, outcome, steps and timeline of events",
            vec![service_kit::openapi::path_param("order_id")],
            view,
            &[
                ("400", "The order id is not a UUID"),
                ("404", "No saga for this order"),
                ("500", "Internal error"),
            ],
        ),
    );
    service_kit::openapi::document(
        "streamshop orchestrator",
        "The saga orchestrator's reads: each order's saga.",
        paths,
        components,
    )
}

fn order_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The order id is not a UUID",
        )
    })
}

/// `GET /sagas?status=needs_attention`: every parked saga, oldest first.
async fn parked(
    State(driver): State<Arc<Driver>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ParkedList>, Problem> {
    if query.status.as_deref() != Some("needs_attention") {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "List sagas by status=needs_attention",
        )
        .detail("Only the sagas parked for attention are listed here; read any one at /sagas/{order_id}."));
    }
    let items = driver
        .parked_sagas()
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(ParkedList { items }))
}

/// `POST /sagas/{order_id}/retry`: resumes a parked saga, recording the operator's reason.
/// The body is read as every JSON body is (`problem::json_object`: 413, 415, 400 for
/// malformed JSON), and a body of the wrong shape is 422 `invalid-body`.
async fn retry(
    State(driver): State<Arc<Driver>>,
    Path(raw): Path<String>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Resumed>), Problem> {
    let order_id = order_id(&raw)?;
    let fields = problem::json_object(&headers, body)?;
    let request: RetryRequest = serde_json::from_value(Value::Object(fields))
        .ok()
        .filter(|r: &RetryRequest| !r.reason.trim().is_empty() && r.reason.chars().count() <= 1000)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Say why the saga may go on: {\"reason\": \"...\"}, 1 to 1000 characters",
            )
        })?;
    match driver
        .resume(order_id, request.reason)
        .await
        .map_err(|e| Problem::internal(&e))?
    {
        Executed::Accepted { state, .. } => Ok((
            StatusCode::ACCEPTED,
            Json(Resumed {
                order_id,
                status: state.status,
            }),
        )),
        Executed::Rejected {
            not_found: true, ..
        } => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No saga for this order",
        )),
        Executed::Rejected { message, .. } => Err(Problem::new(
            StatusCode::CONFLICT,
            "not-parked",
            "The saga is not parked for attention",
        )
        .detail(message)),
    }
}

/// `GET /sagas/{order_id}`: status, outcome, steps and the timeline of saga events.
async fn saga(
    State(driver): State<Arc<Driver>>,
    Path(order_id): Path<String>,
) -> Result<Json<SagaView>, Problem> {
    let order_id = self::order_id(&order_id)?;
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
