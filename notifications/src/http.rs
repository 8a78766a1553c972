//! The notification service's API: for operators, webhook endpoints (behind the gateway at
//! `/api/webhooks`): register (the answer holds the signing secret, once), list, read, pause,
//! resume, rotate the secret, delete, and read or resend an endpoint's deliveries; for
//! customers, their order emails off or on (`crate::preferences`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use service_kit::problem::{self, Json, Problem};
use sqlx::PgPool;
use uuid::Uuid;

use crate::endpoints::{self, DeliveryList, DeliveryLog, Endpoint, EndpointList, NewEndpoint};
use crate::guard::Guard;

/// What the handlers share.
pub struct Api {
    pub pool: PgPool,
    pub guard: Guard,
    pub secret_grace: std::time::Duration,
}

type Shared = State<Arc<Api>>;

/// The routes the gateway forwards (`/api` in front of each).
pub fn gateway_routes() -> Vec<(Method, String)> {
    let mut routes = Vec::new();
    for (path, methods) in PATHS {
        for method in *methods {
            routes.push((method.clone(), (*path).to_owned()));
        }
    }
    routes
}

/// Every path and its methods: the router, the gateway's admission and the document agree.
const PATHS: &[(&str, &[Method])] = &[
    ("/webhooks", &[Method::GET, Method::POST]),
    ("/webhooks/{id}", &[Method::GET, Method::DELETE]),
    ("/webhooks/{id}/pause", &[Method::POST]),
    ("/webhooks/{id}/resume", &[Method::POST]),
    ("/webhooks/{id}/rotate", &[Method::POST]),
    ("/webhooks/{id}/deliveries", &[Method::GET]),
    ("/webhooks/{id}/deliveries/{delivery_id}", &[Method::GET]),
    (
        "/webhooks/{id}/deliveries/{delivery_id}/resend",
        &[Method::POST],
    ),
    ("/customers/{id}/notifications", &[Method::GET, Method::PUT]),
];

pub fn router(state: Arc<Api>) -> Router {
    let na = problem::method_not_allowed;
    Router::new()
        .route("/webhooks", get(list).post(register).fallback(na))
        .route("/webhooks/{id}", get(read).delete(remove).fallback(na))
        .route("/webhooks/{id}/pause", post(pause).fallback(na))
        .route("/webhooks/{id}/resume", post(resume).fallback(na))
        .route("/webhooks/{id}/rotate", post(rotate).fallback(na))
        .route("/webhooks/{id}/deliveries", get(deliveries).fallback(na))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}",
            get(delivery).fallback(na),
        )
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/resend",
            post(resend).fallback(na),
        )
        .route(
            "/customers/{id}/notifications",
            get(crate::preferences::read)
                .put(crate::preferences::change)
                .fallback(na),
        )
        .with_state(state)
}

fn internal(e: sqlx::Error) -> Problem {
    Problem::internal(&e)
}

fn uuid(raw: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            format!("The {what} is not a UUID"),
        )
    })
}

fn no_endpoint() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such webhook endpoint",
    )
}

fn invalid(title: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", title)
}

/// The event names an endpoint may ask for: those of the order stream, from its schema.
pub fn event_names() -> &'static std::collections::BTreeSet<String> {
    static NAMES: std::sync::LazyLock<std::collections::BTreeSet<String>> =
        std::sync::LazyLock::new(|| {
            let schema = schemars::schema_for!(domain::order::OrderEvent).to_value();
            schema["oneOf"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|variant| variant["required"][0].as_str().map(str::to_owned))
                .collect()
        });
    &NAMES
}

/// `POST /webhooks`.
async fn register(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<endpoints::WithSecret>), Problem> {
    let fields = problem::json_object(&headers, body)?;
    let new: NewEndpoint = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        invalid("Send {\"url\": \"https://...\", \"event_types\": [\"OrderConfirmed\", ...]}")
            .detail(e.to_string())
    })?;
    if new.url.len() > 2000 || new.description.chars().count() > 500 {
        return Err(invalid(
            "The URL is longer than 2000 bytes or the description than 500 characters",
        ));
    }
    let known = event_names();
    if new.event_types.is_empty()
        || new.event_types.len() > 50
        || new
            .event_types
            .iter()
            .any(|t| t != "*" && !known.contains(t))
    {
        return Err(
            invalid("Name 1 to 50 event types of the order stream, or *").with("known", known),
        );
    }
    state.guard.check(&new.url).await.map_err(|refusal| {
        invalid("The URL is not one webhooks are sent to").detail(refusal.to_string())
    })?;
    let secret = crate::signing::new_secret();
    let endpoint = endpoints::insert(&state.pool, &new, &secret)
        .await
        .map_err(internal)?;
    // The host only: a partner's URL may carry a token of theirs in its path or query.
    let host = reqwest::Url::parse(&endpoint.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    tracing::info!(endpoint = %endpoint.id, %host, "webhook endpoint registered");
    Ok((
        StatusCode::CREATED,
        Json(endpoints::WithSecret {
            endpoint,
            secret,
            previous_secret_valid_until: None,
        }),
    ))
}

/// `GET /webhooks`.
async fn list(State(state): Shared) -> Result<Json<EndpointList>, Problem> {
    let items = endpoints::list(&state.pool).await.map_err(internal)?;
    Ok(Json(EndpointList { items }))
}

async fn found(state: &Api, raw: &str) -> Result<Endpoint, Problem> {
    endpoints::find(&state.pool, uuid(raw, "endpoint id")?)
        .await
        .map_err(internal)?
        .ok_or_else(no_endpoint)
}

/// `GET /webhooks/{id}`.
async fn read(State(state): Shared, Path(id): Path<String>) -> Result<Json<Endpoint>, Problem> {
    Ok(Json(found(&state, &id).await?))
}

/// `DELETE /webhooks/{id}`.
async fn remove(State(state): Shared, Path(id): Path<String>) -> Result<StatusCode, Problem> {
    let id = uuid(&id, "endpoint id")?;
    match endpoints::delete(&state.pool, id).await.map_err(internal)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_endpoint()),
    }
}

/// `POST /webhooks/{id}/pause`.
async fn pause(State(state): Shared, Path(id): Path<String>) -> Result<Json<Endpoint>, Problem> {
    let id = uuid(&id, "endpoint id")?;
    endpoints::set_paused(&state.pool, id, Some("paused by an operator"))
        .await
        .map_err(internal)?
        .map(Json)
        .ok_or_else(no_endpoint)
}

/// `POST /webhooks/{id}/resume`.
async fn resume(State(state): Shared, Path(id): Path<String>) -> Result<Json<Endpoint>, Problem> {
    let id = uuid(&id, "endpoint id")?;
    endpoints::set_paused(&state.pool, id, None)
        .await
        .map_err(internal)?
        .map(Json)
        .ok_or_else(no_endpoint)
}

/// `POST /webhooks/{id}/rotate`.
async fn rotate(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Json<endpoints::WithSecret>, Problem> {
    let id = uuid(&id, "endpoint id")?;
    let secret = crate::signing::new_secret();
    let (endpoint, until) = endpoints::rotate(&state.pool, id, &secret, state.secret_grace)
        .await
        .map_err(internal)?
        .ok_or_else(no_endpoint)?;
    Ok(Json(endpoints::WithSecret {
        endpoint,
        secret,
        previous_secret_valid_until: Some(until),
    }))
}

/// The query of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<i64>,
}

/// `GET /webhooks/{id}/deliveries`.
async fn deliveries(
    State(state): Shared,
    Path(id): Path<String>,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryList>, Problem> {
    let Query(page) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "invalid-request", e.body_text()))?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "limit must be 1 to 1000",
        ));
    }
    let endpoint = found(&state, &id).await?;
    let items = endpoints::deliveries(&state.pool, endpoint.id, limit)
        .await
        .map_err(internal)?;
    Ok(Json(DeliveryList { items }))
}

/// `GET /webhooks/{id}/deliveries/{delivery_id}`.
async fn delivery(
    State(state): Shared,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Json<DeliveryLog>, Problem> {
    let (id, delivery) = (uuid(&id, "endpoint id")?, uuid(&delivery, "delivery id")?);
    endpoints::delivery_log(&state.pool, id, delivery)
        .await
        .map_err(internal)?
        .map(Json)
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "not-found", "No such delivery"))
}

/// `POST /webhooks/{id}/deliveries/{delivery_id}/resend`.
async fn resend(
    State(state): Shared,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let (id, delivery) = (uuid(&id, "endpoint id")?, uuid(&delivery, "delivery id")?);
    match endpoints::resend(&state.pool, id, delivery)
        .await
        .map_err(internal)?
    {
        true => Ok(StatusCode::ACCEPTED),
        false => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such delivery",
        )),
    }
}

/// One operation of the document.
fn operation(
    summary: &str,
    parameters: &[&str],
    body: Option<&Value>,
    ok: (&str, Option<&Value>),
    problems: &[(&str, &str)],
) -> Value {
    let mut responses = Map::new();
    let (status, schema) = ok;
    responses.insert(
        status.into(),
        match schema {
            Some(schema) => {
                json!({"description": "OK", "content": {"application/json": {"schema": schema}}})
            }
            None => json!({"description": "Done"}),
        },
    );
    for (status, description) in problems.iter().chain(&[("500", "Internal error")]) {
        responses.insert((*status).into(), service_kit::openapi::problem(description));
    }
    let mut op = json!({
        "summary": summary,
        "parameters": parameters.iter().map(|p| service_kit::openapi::path_param(p)).collect::<Vec<_>>(),
        "responses": responses,
    });
    if let Some(body) = body {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": body}}});
    }
    op
}

/// The service's OpenAPI document.
pub fn openapi() -> Value {
    use service_kit::openapi::add;
    let mut c = Map::new();
    let new = add::<NewEndpoint>(&mut c, "NewEndpoint");
    let endpoint = add::<Endpoint>(&mut c, "WebhookEndpoint");
    let with_secret = add::<endpoints::WithSecret>(&mut c, "WebhookEndpointWithSecret");
    let list = add::<EndpointList>(&mut c, "WebhookEndpointList");
    let deliveries = add::<DeliveryList>(&mut c, "DeliveryList");
    let log = add::<DeliveryLog>(&mut c, "DeliveryLog");
    let preferences = add::<crate::preferences::Preferences>(&mut c, "NotificationPreferences");
    let change =
        add::<crate::preferences::ChangePreferences>(&mut c, "ChangeNotificationPreferences");
    let bad_id = ("400", "An id is not a UUID");
    let none = ("404", "No such webhook endpoint");
    let id = &["id"][..];
    let mut paths = Map::new();
    paths.insert("/webhooks".into(), json!({
        "get": operation("Every webhook endpoint", &[], None, ("200", Some(&list)), &[]),
        "post": operation("Register a webhook endpoint; the answer holds its signing secret, once", &[], Some(&new), ("201", Some(&with_secret)), &[
            ("400", "The body is not valid JSON"), ("413", "The body is too large"),
            ("415", "The body is not sent as application/json"),
            ("422", "Not an endpoint: an unknown event type, or a URL that is not http(s) at a public address")]),
    }));
    paths.insert("/webhooks/{id}".into(), json!({
        "get": operation("A webhook endpoint", id, None, ("200", Some(&endpoint)), &[bad_id, none]),
        "delete": operation("Delete a webhook endpoint and its deliveries", id, None, ("204", None), &[bad_id, none]),
    }));
    for (action, summary) in [
        ("pause", "Pause an endpoint: its deliveries wait"),
        ("resume", "Resume an endpoint"),
    ] {
        paths.insert(
            format!("/webhooks/{{id}}/{action}"),
            json!({
                "post": operation(summary, id, None, ("200", Some(&endpoint)), &[bad_id, none]),
            }),
        );
    }
    paths.insert("/webhooks/{id}/rotate".into(), json!({
        "post": operation("A new signing secret; the previous one also signs for the grace period", id, None, ("200", Some(&with_secret)), &[bad_id, none]),
    }));
    let mut list_op = operation(
        "An endpoint's deliveries, newest first",
        id,
        None,
        ("200", Some(&deliveries)),
        &[
            ("400", "An id is not a UUID, or limit is not 1 to 1000"),
            none,
        ],
    );
    list_op["parameters"]
        .as_array_mut()
        .expect("parameters")
        .push(json!({
        "name": "limit", "in": "query", "required": false,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}));
    paths.insert("/webhooks/{id}/deliveries".into(), json!({"get": list_op}));
    let both = &["id", "delivery_id"][..];
    let no_delivery = ("404", "No such delivery");
    paths.insert("/webhooks/{id}/deliveries/{delivery_id}".into(), json!({
        "get": operation("A delivery with every attempt", both, None, ("200", Some(&log)), &[bad_id, no_delivery]),
    }));
    paths.insert("/webhooks/{id}/deliveries/{delivery_id}/resend".into(), json!({
        "post": operation("Send a delivery again now, with a fresh retry window", both, None, ("202", None), &[bad_id, no_delivery]),
    }));
    let bad_customer = ("400", "The customer id is not a UUID");
    paths.insert("/customers/{id}/notifications".into(), json!({
        "get": operation("Whether a customer gets emails about their orders", id, None, ("200", Some(&preferences)), &[bad_customer]),
        "put": operation("Turn a customer's order emails off or on", id, Some(&change), ("200", Some(&preferences)), &[
            bad_customer, ("413", "The body is too large"),
            ("415", "The body is not sent as application/json"),
            ("422", "Not {\"email\": true|false}")]),
    }));
    service_kit::openapi::document(
        "streamshop notifications",
        "Webhook endpoints for partners and their deliveries (signed CloudEvents, Standard Webhooks, retried with backoff), and customers' choice of order emails.",
        paths,
        c,
    )
}

#[cfg(test)]
mod tests {
    /// The gateway's admission (`PATHS`) and the document list the same operations.
    #[test]
    fn the_admitted_routes_are_the_documented_ones() {
        let document = super::openapi();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            if !path.starts_with("/webhooks") && !path.starts_with("/customers") {
                continue;
            }
            for method in item.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut admitted: Vec<(String, String)> = super::gateway_routes()
            .into_iter()
            .map(|(method, path)| (method.to_string(), path))
            .collect();
        documented.sort();
        admitted.sort();
        assert_eq!(admitted, documented);
    }
}
