//! A customer's choice of order emails (`GET`/`PUT /customers/{id}/notifications`, behind the
//! gateway at `/api/me/notifications` for the token's customer): on unless they turned them
//! off.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::problem::{self, Json, Problem};
use uuid::Uuid;

use crate::http::Api;

/// A customer's notification settings.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Preferences {
    pub customer_id: Uuid,
    /// Whether they get an email when an order is confirmed, rejected or cancelled.
    pub email: bool,
}

/// What a customer may change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePreferences {
    /// `false` turns order emails off, `true` on again.
    pub email: bool,
}

fn customer(raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The customer id is not a UUID",
        )
    })
}

/// `GET /customers/{id}/notifications`.
pub async fn read(
    State(state): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Preferences>, Problem> {
    let customer_id = customer(&id)?;
    let email: Option<bool> =
        sqlx::query_scalar("SELECT email FROM email_preferences WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&state.pool)
            .await
            .map_err(|e| Problem::internal(&e))?;
    Ok(Json(Preferences {
        customer_id,
        email: email.unwrap_or(true),
    }))
}

/// `PUT /customers/{id}/notifications`.
pub async fn change(
    State(state): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Preferences>, Problem> {
    let customer_id = customer(&id)?;
    let fields = problem::json_object(&headers, body)?;
    let change: ChangePreferences = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Send {\"email\": true} or {\"email\": false}",
        )
        .detail(e.to_string())
    })?;
    sqlx::query(
        "INSERT INTO email_preferences (customer_id, email) VALUES ($1, $2) \
         ON CONFLICT (customer_id) DO UPDATE SET email = $2, updated_at = now()",
    )
    .bind(customer_id)
    .bind(change.email)
    .execute(&state.pool)
    .await
    .map_err(|e| Problem::internal(&e))?;
    tracing::info!(customer = %customer_id, emails_on = change.email, "a customer's order emails changed");
    Ok(Json(Preferences {
        customer_id,
        email: change.email,
    }))
}
