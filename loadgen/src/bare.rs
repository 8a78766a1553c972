//! The bare baseline server: axum and sqlx with no framework around them (no cqrs-es, no
//! command bus, no middleware), doing only the SQL the real services do.
//!
//! `POST /orders` appends the same `OrderPlaced` row to the same `events` table (so the same
//! outbox and idempotency triggers fire); `GET /orders/{id}` runs the query API's own
//! statement.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct PlaceOrder {
    customer_id: Uuid,
    lines: Vec<Line>,
    payment_token: Option<String>,
}

/// Serves until killed. `database_url` is an orders database (migrated here) or a read one.
pub async fn serve(
    database_url: &str,
    addr: SocketAddr,
    max_connections: u32,
    migrate: bool,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(database_url)
        .await?;
    if migrate {
        event_store::MIGRATOR.run(&pool).await?;
    }
    let app = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route("/orders", post(place))
        .route("/orders/{id}", get(read))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn place(
    State(pool): State<PgPool>,
    headers: axum::http::HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> Response {
    let order_id = Uuid::now_v7();
    let lines: Vec<_> = body
        .lines
        .iter()
        .map(|l| json!({"sku": l.sku, "quantity": l.quantity}))
        .collect();
    let payload = json!({"OrderPlaced": {
        "order_id": order_id,
        "customer_id": body.customer_id,
        "lines": lines,
        "payment_token": body.payment_token,
        "placed_at": chrono::Utc::now(),
    }});
    let command_id = Uuid::new_v4().to_string();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("http:{k}"));
    let metadata = json!({
        "causation_id": command_id,
        "correlation_id": order_id,
        "traceparent": format!("00-{}-{}-01", Uuid::new_v4().simple(), &Uuid::new_v4().simple().to_string()[..16]),
        "idempotency_key": key,
        "request_hash": "bare",
    });
    let inserted = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Order', $1, 1, 'OrderPlaced', '2', $2, $3)",
    )
    .bind(order_id.to_string())
    .bind(payload)
    .bind(metadata)
    .execute(&pool)
    .await;
    match inserted {
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(json!({"order_id": order_id, "status": "placed", "version": 1})),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn read(State(pool): State<PgPool>, Path(id): Path<Uuid>) -> Response {
    match query_api::orders::find(&pool, id).await {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
