//! How far behind its stream each projection is, read from the checkpoints: served by the
//! worker (`GET /projections`) and by the query API.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// One projection's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ProjectionLag {
    pub projection: String,
    pub stream: String,
    /// The last stream sequence applied (or skipped as a duplicate or dead letter).
    pub checkpoint: i64,
    /// The stream's last sequence as the worker last saw it.
    pub stream_last_sequence: i64,
    /// `stream_last_sequence - checkpoint`.
    pub lag: i64,
    pub dead_letters: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Every projection's lag.
pub async fn lags(pool: &PgPool) -> Result<Vec<ProjectionLag>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.projection, c.stream, c.stream_sequence AS checkpoint, c.stream_last_sequence, \
                GREATEST(c.stream_last_sequence - c.stream_sequence, 0) AS lag, \
                (SELECT count(*) FROM dead_letters d WHERE d.projection = c.projection) AS dead_letters, \
                c.updated_at \
         FROM projection_checkpoints c ORDER BY c.projection",
    )
    .fetch_all(pool)
    .await
}

/// `GET /projections`.
pub fn routes<S: Clone + Send + Sync + 'static>(pool: PgPool) -> Router<S> {
    Router::new()
        .route("/projections", get(list))
        .with_state(pool)
}

async fn list(
    State(pool): State<PgPool>,
) -> Result<axum::Json<Vec<ProjectionLag>>, runtime::problem::Problem> {
    lags(&pool)
        .await
        .map(axum::Json)
        .map_err(|e| runtime::problem::Problem::internal(&e))
}

/// The projections worker's OpenAPI document: `GET /projections` beside the common paths.
pub fn openapi() -> serde_json::Value {
    let mut components = serde_json::Map::new();
    let lags = runtime::openapi::add::<Vec<ProjectionLag>>(&mut components, "ProjectionLags");
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/projections".into(),
        runtime::openapi::get(
            "Each projection's checkpoint, lag and dead letters",
            vec![],
            lags,
            &[("500", "Internal error")],
        ),
    );
    runtime::openapi::document(
        "streamshop projections worker",
        "The projection workers' health, metrics and progress.",
        paths,
        components,
    )
}
