//! `POST /customers/{customer_id}/erase`: an operator erases a customer (their right to
//! erasure). Their data key is deleted, so every sensitive value sealed with it (the payment
//! tokens of their orders, in the log, the streams and every export) never opens again,
//! while every event still decodes; and they can place no more orders. The gateway forwards
//! it for operators (`POST /api/customers/{customer_id}/erase`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use service_kit::problem::Problem;
use uuid::Uuid;

use crate::keys::CustomerKeys;

/// The route's path.
pub const PATH: &str = "/customers/{customer_id}/erase";

pub fn router(keys: CustomerKeys) -> Router {
    Router::new()
        .route(
            PATH,
            post(erase).fallback(service_kit::problem::method_not_allowed),
        )
        .with_state(keys)
}

async fn erase(State(keys): State<CustomerKeys>, Path(customer): Path<String>) -> Response {
    let Ok(customer) = Uuid::parse_str(&customer) else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The customer id is not a UUID",
        )
        .into_response();
    };
    match keys.erase(customer).await {
        Ok(had_key) => {
            // The audit trail of an erasure: who is in the log line's trace (the operator's
            // request), what in its fields.
            tracing::info!(%customer, had_key, "customer erased: their data key is deleted");
            axum::Json(json!({"customer_id": customer, "erased": true, "had_key": had_key}))
                .into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The route's OpenAPI path item.
pub fn openapi() -> (&'static str, Value) {
    let problem = |description: &str| service_kit::openapi::problem(description);
    (
        PATH,
        json!({"post": {
            "operationId": "EraseCustomer",
            "summary": "Erase a customer: delete their data key, so their sealed payment tokens never open again, and refuse their new orders",
            "parameters": [service_kit::openapi::path_param("customer_id")],
            "responses": {
                "200": {"description": "Erased (also when they had placed no order yet)",
                        "content": {"application/json": {"schema": {
                            "type": "object",
                            "required": ["customer_id", "erased", "had_key"],
                            "properties": {
                                "customer_id": {"type": "string", "format": "uuid"},
                                "erased": {"type": "boolean"},
                                "had_key": {"type": "boolean", "description": "Whether they had a data key (had placed an order) before"}
                            }
                        }}}},
                "400": problem("The customer id is not a UUID"),
                "500": problem("Internal error"),
                "503": problem("A dependency is unavailable; retry")
            }
        }}),
    )
}
