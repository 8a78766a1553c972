//! The query API's HTTP layer: one route table, [`routes`], that both [`router`] and the
//! OpenAPI document ([`crate::openapi::document`]) are built from, so a path cannot be served
//! without being documented or documented without being served.
//!
//! Each resource's module holds its handlers and its rows of the table; this module holds
//! what they share: the state, the table's row type, query parameters, pagination and the
//! read-your-writes wait.

mod analytics;
mod orders;
mod payments;
mod products;
mod projections;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::MethodRouter;
use axum::Router;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use service_kit::problem;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::freshness::{Freshness, Waited};

pub use analytics::SalesReport;

/// What the handlers share.
pub struct AppState {
    pub pool: PgPool,
    pub freshness: Freshness,
    pub min_version_timeout: Duration,
    /// How far past what the read model holds a `min_version` may be (400 beyond).
    pub min_version_max_ahead: u64,
    /// Longest a read may take before it is answered 503.
    pub request_timeout: Duration,
}

/// A documented query parameter: name, JSON type, description.
pub type Param = (&'static str, &'static str, &'static str);

/// The body a route answers 200 with: the name of its schema under `components/schemas`, and
/// how that schema is made. Kept beside the handler that returns the type, so the document
/// describes what is served.
pub struct Body {
    pub name: &'static str,
    /// Adds the schema (and those it uses) to the components; returns a `$ref` to it.
    pub add: fn(&mut Map<String, Value>, &str) -> Value,
}

impl Body {
    /// The body of type `T`, its schema named `name`.
    pub const fn of<T: JsonSchema>(name: &'static str) -> Self {
        Self {
            name,
            add: service_kit::openapi::add::<T>,
        }
    }
}

/// One row of the route table: a `GET` path, what the document says about it, and what
/// serves it. Path parameters are the path's `{name}` segments.
pub struct Route {
    pub path: &'static str,
    pub summary: &'static str,
    pub query: &'static [Param],
    pub body: Body,
    /// The path's handler, with its method fallback and layers (a read's come from `read`).
    pub serve: fn(&AppState) -> MethodRouter<Arc<AppState>>,
}

/// Every route of the API, resource by resource. The shared start-up adds `/healthz`,
/// `/readyz`, `/metrics` and `/openapi.json` beside them.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    [
        orders::ROUTES,
        products::ROUTES,
        payments::ROUTES,
        analytics::ROUTES,
        projections::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// The API's own routes, apart from `main` so tests can serve them on any port.
pub fn router(state: Arc<AppState>) -> Router {
    routes()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.serve)(&state))
        })
        .with_state(state)
}

/// A read of the read models: other methods get a problem+json 405, a 200 carries an `ETag`
/// (and a matching `If-None-Match` gets a 304), and a read that takes too long gets a 503.
fn read(state: &AppState, get: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    get.fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn(crate::caching::etag))
        .layer(axum::middleware::from_fn_with_state(
            state.request_timeout,
            crate::caching::time_limit,
        ))
}

/// Documents `min_version` of single-entity reads ([`ReadParams`]).
const MIN_VERSION: Param = (
    "min_version",
    "integer",
    "Wait (boundedly) until the read model reflects at least this aggregate version; a version far past what the read model holds (READ_YOUR_WRITES_MAX_AHEAD, default 1000) is refused with 400 at once",
);
/// Documents `limit` of lists ([`PageParams`]).
const LIMIT: Param = ("limit", "integer", "Items per page, 1 to 200 (default 50)");
/// Documents `cursor` of lists ([`PageParams`]).
const CURSOR: Param = ("cursor", "string", "The next_cursor of the previous page");

/// The query string read as `T`; one that does not read is answered 400 (problem+json)
/// before the handler runs.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(params)) => Ok(Self(params)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Query string of single-entity reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// Wait (boundedly) until the read model reflects at least this aggregate version.
    pub min_version: Option<u64>,
}

/// Most items one page holds; the default is 50.
pub const MAX_PAGE: i64 = 200;

/// Query string of lists. Orders and products share it so that a filter given to the wrong
/// list is named in a 400 rather than refused as an unknown field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Customer orders: only this status.
    pub status: Option<String>,
    /// Products: only those with at most this many available.
    pub low_stock: Option<i64>,
}

fn limit(params: &PageParams) -> Result<i64, ApiError> {
    match params.limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}, not {n}"
        ))),
    }
}

/// A page of items and where the next one starts (absent on the last page).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Reads once, or (with `min_version`) until the version is reached or the wait times out;
/// a single entity's read-your-writes without the staleness flag of orders.
async fn read_at_least<T, F, Fut>(
    state: &AppState,
    projection: &str,
    min_version: Option<u64>,
    read: F,
    version: impl Fn(&T) -> u64,
) -> Result<Option<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let mut read = read;
    let Some(min) = min_version else {
        return Ok(read().await?);
    };
    let waited = state
        .freshness
        .wait_for(
            projection,
            state.min_version_timeout,
            read,
            |t: &T| version(t) >= min,
            |t: Option<&T>| too_far(min, t.map_or(0, &version), state.min_version_max_ahead),
        )
        .await?;
    match waited {
        Waited::Fresh(t) => Ok(Some(t)),
        Waited::Stale(t) => Ok(t),
        Waited::TooFar => Err(ApiError::too_far(min, state.min_version_max_ahead)),
    }
}

/// Whether `min` is more than `max_ahead` versions past `have`: not a version any command
/// answered lately, so not worth a wait.
pub fn too_far(min: u64, have: u64, max_ahead: u64) -> bool {
    min > have.saturating_add(max_ahead)
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a UUID")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;

    /// The paths `service_kit::service` adds to every service's router and document.
    const COMMON: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

    /// A router whose database is never reached: every request below is refused before a
    /// handler runs.
    fn offline_router() -> Router {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        // Cancelled before it starts, the freshness listener never connects.
        let stopped = CancellationToken::new();
        stopped.cancel();
        router(Arc::new(AppState {
            freshness: Freshness::start(pool.clone(), stopped),
            pool,
            min_version_timeout: Duration::from_millis(10),
            min_version_max_ahead: 1000,
            request_timeout: Duration::from_secs(1),
        }))
    }

    /// A concrete URL of `path`, each `{param}` filled in.
    fn concrete(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    async fn status_of(router: &Router, method: Method, uri: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_router_serves_exactly_the_documented_paths() {
        let document = crate::openapi::document();
        let documented: BTreeSet<&str> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|p| !COMMON.contains(p))
            .collect();
        let table: BTreeSet<&str> = routes().map(|r| r.path).collect();
        assert_eq!(table, documented);
        assert_eq!(
            table.len(),
            routes().count(),
            "each path is in the table once"
        );
        assert!(table.contains(read_contract::lag::PATH));

        // Each documented path is routed: another method is refused with 405, where a path
        // the router lacks would be a 404.
        let router = offline_router();
        for path in &documented {
            let status = status_of(&router, Method::DELETE, &concrete(path)).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        }
        let status = status_of(&router, Method::GET, "/not-documented").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
