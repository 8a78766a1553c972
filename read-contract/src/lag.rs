//! How far behind its stream each projection is, read from the checkpoints. Both the
//! projections worker and the query API serve it as `GET /projections`, so the query, the
//! answer's type, the handler and the OpenAPI operation live here, once.

use axum::extract::State;
use axum::routing::{get, MethodRouter};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;

/// Where both services serve the lag read.
pub const PATH: &str = "/projections";

/// The operation's summary in both services' OpenAPI documents.
pub const SUMMARY: &str = "Each projection's checkpoint, lag and dead letters";

/// The component name of the answer's schema (`Vec<ProjectionLag>`).
pub const SCHEMA: &str = "ProjectionLags";

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

/// The `GET` handler of [`PATH`] with its own state, so it can sit in a router of any state:
/// the worker's, which has none, and the query API's.
pub fn handler<S: Clone + Send + Sync + 'static>(pool: PgPool) -> MethodRouter<S> {
    get(list).with_state(pool)
}

/// A router that serves only [`PATH`].
pub fn routes<S: Clone + Send + Sync + 'static>(pool: PgPool) -> Router<S> {
    Router::new().route(PATH, handler(pool))
}

async fn list(
    State(pool): State<PgPool>,
) -> Result<axum::Json<Vec<ProjectionLag>>, service_kit::problem::Problem> {
    lags(&pool)
        .await
        .map(axum::Json)
        .map_err(|e| service_kit::problem::Problem::internal(&e))
}

/// The OpenAPI path item of [`PATH`] as the worker documents it; adds the answer's schema to
/// `components` as [`SCHEMA`].
pub fn operation(components: &mut Map<String, Value>) -> Value {
    let lags = service_kit::openapi::add::<Vec<ProjectionLag>>(components, SCHEMA);
    service_kit::openapi::get(SUMMARY, vec![], lags, &[("500", "Internal error")])
}
