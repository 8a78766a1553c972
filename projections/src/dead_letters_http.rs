//! The projections service's HTTP face for dead letters: list, replay, discard (for operators;
//! the gateway forwards `/api/dead-letters...` to it for the admin role).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use service_kit::problem::{self, Json, Problem};
use sqlx::PgPool;

use crate::dead_letters::{self, DeadLetterView, LetterError, Replayed, MAX_LIMIT};

/// `GET /dead-letters`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterView>,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    projection: Option<String>,
    limit: Option<String>,
}

/// The routes the gateway forwards to (operators' dead letters); `GET /projections` it asks
/// of the query API.
pub fn gateway_routes() -> Vec<(axum::http::Method, String)> {
    use axum::http::Method;
    vec![
        (Method::GET, "/dead-letters".into()),
        (Method::DELETE, "/dead-letters/{id}".into()),
        (Method::POST, "/dead-letters/{id}/replay".into()),
    ]
}

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route(
            "/dead-letters",
            get(list).fallback(problem::method_not_allowed),
        )
        .route(
            "/dead-letters/{id}",
            delete(discard).fallback(problem::method_not_allowed),
        )
        .route(
            "/dead-letters/{id}/replay",
            post(replay).fallback(problem::method_not_allowed),
        )
        .with_state(pool)
}

fn invalid(title: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-request", title)
}

fn letter_id(raw: &str) -> Result<i64, Problem> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid("The dead letter id is not a positive integer"))
}

fn refusal(error: LetterError) -> Problem {
    match error {
        LetterError::NotFound(_) => {
            Problem::new(StatusCode::NOT_FOUND, "not-found", "No such dead letter")
        }
        LetterError::StillFailing { id, reason } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "still-failing",
            "The event still cannot be applied; nothing changed",
        )
        .detail(reason)
        .with("letter", id),
        LetterError::Database(e) => Problem::internal(&e),
    }
}

/// `GET /dead-letters?projection=&limit=`: oldest first.
async fn list(
    State(pool): State<PgPool>,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeadLetterList>, Problem> {
    let limit = match query.limit.as_deref() {
        None => 100,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| invalid("limit must be an integer from 1 to 1000"))?,
    };
    if let Some(name) = &query.projection {
        if !crate::NAMES.contains(&name.as_str()) {
            return Err(invalid("No projection of that name")
                .detail(format!("The projections are {}", crate::NAMES.join(", "))));
        }
    }
    let items = dead_letters::list(&pool, query.projection.as_deref(), limit)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(DeadLetterList { items }))
}

/// `POST /dead-letters/{id}/replay`.
async fn replay(
    State(pool): State<PgPool>,
    Path(raw): Path<String>,
) -> Result<Json<Replayed>, Problem> {
    let id = letter_id(&raw)?;
    dead_letters::replay(&pool, id)
        .await
        .map(Json)
        .map_err(refusal)
}

/// `DELETE /dead-letters/{id}`.
async fn discard(
    State(pool): State<PgPool>,
    Path(raw): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = letter_id(&raw)?;
    dead_letters::discard(&pool, id)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(refusal)
}

/// The dead letters' paths for the projections service's OpenAPI document.
pub fn paths(paths: &mut Map<String, Value>, components: &mut Map<String, Value>) {
    let list = service_kit::openapi::add::<DeadLetterList>(components, "DeadLetterList");
    let replayed = service_kit::openapi::add::<Replayed>(components, "Replayed");
    let id = json!({"name": "id", "in": "path", "required": true,
                    "schema": {"type": "integer", "minimum": 1}});
    let mut get = service_kit::openapi::get(
        "Dead letters, oldest first (their payloads stay in the database)",
        vec![
            json!({"name": "projection", "in": "query", "required": false,
                   "schema": {"type": "string", "enum": crate::NAMES}}),
            json!({"name": "limit", "in": "query", "required": false,
                   "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}}),
        ],
        list,
        &[
            ("400", "An unknown projection, or a limit out of range"),
            ("500", "Internal error"),
        ],
    );
    get["get"]["summary"] = "Dead letters".into();
    paths.insert("/dead-letters".into(), get);
    paths.insert(
        "/dead-letters/{id}/replay".into(),
        json!({"post": {
            "summary": "Apply a dead letter again, with every later event of its aggregate held behind it, in order",
            "parameters": [id.clone()],
            "responses": {
                "200": {"description": "Applied and removed", "content": {"application/json": {"schema": replayed}}},
                "400": service_kit::openapi::problem("The id is not a positive integer"),
                "404": service_kit::openapi::problem("No such dead letter"),
                "422": service_kit::openapi::problem("It still cannot be applied; nothing changed"),
                "500": service_kit::openapi::problem("Internal error")
            }
        }}),
    );
    paths.insert(
        "/dead-letters/{id}".into(),
        json!({"delete": {
            "summary": "Discard a dead letter for good: the read model goes without that event",
            "parameters": [id],
            "responses": {
                "204": {"description": "Discarded"},
                "400": service_kit::openapi::problem("The id is not a positive integer"),
                "404": service_kit::openapi::problem("No such dead letter"),
                "500": service_kit::openapi::problem("Internal error")
            }
        }}),
    );
}
