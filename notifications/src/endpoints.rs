//! Webhook endpoints and their deliveries as the database holds them: what operators register,
//! pause, resume, rotate and delete, and what they read of each delivery.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// `POST /webhooks`: a partner's endpoint and the events it wants.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where deliveries are POSTed: http or https, at a public address.
    pub url: String,
    /// Event names of the order stream (`OrderPlaced`, `OrderConfirmed`, ...), or `*` for all.
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// An endpoint as operators see it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    /// `active` or `paused` (by an operator, or after a delivery failed for good).
    pub status: String,
    pub paused_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer to a registration or a rotation: the secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: verify deliveries with it (Standard Webhooks).
    pub secret: String,
    /// After a rotation: until when the previous secret still signs too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
}

/// `GET /webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EndpointList {
    pub items: Vec<Endpoint>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, sqlx::FromRow)]
pub struct Delivery {
    /// Its `webhook-id`: the same for every attempt.
    pub id: Uuid,
    pub event_id: String,
    pub event_type: String,
    /// The order the event is of.
    pub aggregate_id: String,
    pub sequence: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, sqlx::FromRow)]
pub struct Attempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// `GET /webhooks/{id}/deliveries`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryList {
    pub items: Vec<Delivery>,
}

/// `GET /webhooks/{id}/deliveries/{delivery_id}`: the delivery and every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryLog {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub log: Vec<Attempt>,
}

const ENDPOINT_COLUMNS: &str =
    "id, url, description, event_types, status, paused_reason, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "id, event_id, event_type, aggregate_id, sequence, status, \
     attempts, last_status_code, last_error, last_attempt_at, next_attempt_at, created_at, \
     delivered_at";

pub async fn insert(
    pool: &PgPool,
    new: &NewEndpoint,
    secret: &str,
) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, status, secret) \
         VALUES ($1, $2, $3, $4, 'active', $5) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&new.url)
    .bind(&new.description)
    .bind(&new.event_types)
    .bind(secret)
    .fetch_one(pool)
    .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Pauses (with why) or resumes (`None`) an endpoint.
pub async fn set_paused(
    pool: &PgPool,
    id: Uuid,
    reason: Option<&str>,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET status = CASE WHEN $2::text IS NULL THEN 'active' \
         ELSE 'paused' END, paused_reason = $2, updated_at = now() WHERE id = $1 \
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(id)
    .bind(reason)
    .fetch_optional(pool)
    .await
}

/// A new secret; the old one signs too for `grace`.
pub async fn rotate(
    pool: &PgPool,
    id: Uuid,
    secret: &str,
    grace: std::time::Duration,
) -> Result<Option<(Endpoint, DateTime<Utc>)>, sqlx::Error> {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let row: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2, \
         previous_secret_until = now() + make_interval(secs => $3::float8 / 1000), \
         updated_at = now() WHERE id = $1 RETURNING previous_secret_until",
    )
    .bind(id)
    .bind(secret)
    .bind(grace_ms)
    .fetch_optional(pool)
    .await?;
    match row {
        Some((until,)) => Ok(find(pool, id).await?.map(|e| (e, until))),
        None => Ok(None),
    }
}

/// Deletes an endpoint and its deliveries; whether there was one.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// An endpoint's deliveries, newest first, at most `limit`.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = $1 \
         ORDER BY created_at DESC, sequence DESC LIMIT $2"
    ))
    .bind(endpoint)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One delivery of an endpoint with its attempts, oldest first.
pub async fn delivery_log(
    pool: &PgPool,
    endpoint: Uuid,
    id: Uuid,
) -> Result<Option<DeliveryLog>, sqlx::Error> {
    let delivery: Option<Delivery> = sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = $1 AND id = $2"
    ))
    .bind(endpoint)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(delivery) = delivery else {
        return Ok(None);
    };
    let log = sqlx::query_as(
        "SELECT attempt, at, status_code, error, duration_ms FROM delivery_attempts \
         WHERE delivery_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(DeliveryLog { delivery, log }))
}

/// Sends a delivery again now, with a fresh retry window; whether there was one.
pub async fn resend(pool: &PgPool, endpoint: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), \
         window_start = now(), locked_until = NULL, delivered_at = NULL \
         WHERE endpoint_id = $1 AND id = $2",
    )
    .bind(endpoint)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
