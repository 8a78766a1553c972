//! The public routes: one table, [`ROUTES`], that both the router and the OpenAPI document
//! are built from. Each row says who may call it, which internal service answers it and
//! what the gateway adds (ownership, the customer id from the token, live updates).
//!
//! Invariant: a saga-internal command (price, confirm, reject, reserve, release, commit,
//! authorise, capture, void) has no row, so nothing routes to it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Extension, Router};
use bytes::Bytes;
use messaging::Namespace;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::{CatalogCache, Outcome};
use crate::edge::Caller;
use crate::error::ApiError;
use crate::oidc::Principal;
use crate::owners::Owners;
use crate::sse;
use crate::streams::OpenStreams;
use crate::upstream::{json_answer, segment, Answer, Upstream};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Anyone,
    /// A customer (for their own orders) or an operator.
    Customer,
    /// Operators only.
    Operator,
}

/// The internal service behind a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Orders,
    Inventory,
    Payments,
    Orchestrator,
    Projections,
    Query,
    Notifications,
    /// The gateway itself answers, from JetStream.
    Stream,
}

impl Target {
    /// The service's name (the topology's): its OpenAPI document is
    /// `schemas/openapi/<name>.json`.
    pub fn service(self) -> &'static str {
        match self {
            Self::Orders => topology::ORDERS.name,
            Self::Inventory => topology::INVENTORY.name,
            Self::Payments => topology::PAYMENTS.name,
            Self::Orchestrator => topology::ORCHESTRATOR.name,
            Self::Projections => topology::PROJECTIONS.name,
            Self::Query => topology::QUERY_API.name,
            Self::Notifications => topology::NOTIFICATIONS.name,
            Self::Stream => topology::GATEWAY.name,
        }
    }
}

/// What the gateway does with a request besides passing it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Passed on as it is.
    Proxy,
    /// A read of the catalog, the same for every caller: served from the gateway's shared
    /// cache for a moment, then revalidated ([`crate::catalog`]).
    Catalog,
    /// `customer_id` comes from the token (or must be named by an operator).
    PlaceOrder,
    /// Another customer's order answers 404.
    ReadOrder,
    /// Only the order's customer (or an operator) may cancel it.
    CancelOrder,
    /// The caller's own (orders, notification settings): the upstream path's one parameter
    /// is the token's customer.
    Mine,
    /// Server-Sent Events of one order.
    OrderEvents,
}

/// One row of the table.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub target: Target,
    /// The path at the target; its `{..}` parameters are the route's, in order.
    pub upstream_path: &'static str,
    pub kind: Kind,
    pub summary: &'static str,
}

macro_rules! route {
    ($method:ident $path:literal, $access:ident, $target:ident $upstream:literal, $kind:ident, $summary:literal) => {
        Route {
            method: Method::$method,
            path: $path,
            access: Access::$access,
            target: Target::$target,
            upstream_path: $upstream,
            kind: Kind::$kind,
            summary: $summary,
        }
    };
}

/// Every public route.
pub static ROUTES: &[Route] = &[
    route!(GET "/api/products", Anyone, Query "/products", Catalog, "The catalog"),
    route!(GET "/api/products/{sku}", Anyone, Query "/products/{sku}", Catalog, "One product with its stock"),
    route!(POST "/api/orders", Customer, Orders "/orders", PlaceOrder, "Place an order for the token's customer"),
    route!(GET "/api/me/orders", Customer, Query "/customers/{id}/orders", Mine, "The caller's orders, newest first"),
    route!(GET "/api/me/notifications", Customer, Notifications "/customers/{id}/notifications", Mine, "Whether the caller gets emails about their orders"),
    route!(PUT "/api/me/notifications", Customer, Notifications "/customers/{id}/notifications", Mine, "Turn the caller's order emails off or on: {\"email\": false}"),
    route!(GET "/api/orders/{id}", Customer, Query "/orders/{id}", ReadOrder, "One of the caller's orders"),
    route!(POST "/api/orders/{order_id}/cancel", Customer, Orders "/orders/{order_id}/cancel", CancelOrder, "Cancel one of the caller's orders before it is confirmed"),
    route!(GET "/api/orders/{id}/events", Customer, Stream "/api/orders/{id}/events", OrderEvents, "The order's status changes and saga steps, live (Server-Sent Events)"),
    route!(POST "/api/products", Operator, Inventory "/products", Proxy, "Create a product (operators)"),
    route!(POST "/api/products/{sku}/restock", Operator, Inventory "/products/{sku}/restock", Proxy, "Restock a product (operators)"),
    route!(POST "/api/products/{sku}/price", Operator, Inventory "/products/{sku}/price", Proxy, "Change a product's price (operators)"),
    route!(POST "/api/products/{sku}/customer-limit", Operator, Inventory "/products/{sku}/customer-limit", Proxy, "Limit the units one customer may hold of a product, for a flash sale (operators)"),
    route!(POST "/api/webhooks/stripe", Anyone, Payments "/webhooks/stripe", Proxy, "Stripe's signed events about payments (the payments service checks the Stripe-Signature)"),
    route!(POST "/api/payments/{order_id}/refund", Operator, Payments "/payments/{order_id}/refund", Proxy, "Refund a captured payment (operators)"),
    route!(GET "/api/payments/{order_id}", Operator, Query "/payments/{order_id}", Proxy, "An order's payment (operators)"),
    route!(GET "/api/customers/{id}/orders", Operator, Query "/customers/{id}/orders", Proxy, "Any customer's orders (operators)"),
    route!(POST "/api/customers/{customer_id}/erase", Operator, Orders "/customers/{customer_id}/erase", Proxy, "Erase a customer: their sealed payment tokens never open again, and they place no more orders (operators)"),
    route!(GET "/api/sagas", Operator, Orchestrator "/sagas", Proxy, "The sagas parked for attention: ?status=needs_attention (operators)"),
    route!(GET "/api/sagas/{order_id}", Operator, Orchestrator "/sagas/{order_id}", Proxy, "An order's saga (operators)"),
    route!(POST "/api/sagas/{order_id}/retry", Operator, Orchestrator "/sagas/{order_id}/retry", Proxy, "Resume a parked saga, with the reason (operators)"),
    route!(GET "/api/projections", Operator, Query "/projections", Proxy, "Projection lag and dead letters (operators)"),
    route!(GET "/api/dead-letters", Operator, Projections "/dead-letters", Proxy, "The projections' dead letters, oldest first (operators)"),
    route!(POST "/api/dead-letters/{id}/replay", Operator, Projections "/dead-letters/{id}/replay", Proxy, "Replay a dead letter after a fix, with its aggregate's held events (operators)"),
    route!(DELETE "/api/dead-letters/{id}", Operator, Projections "/dead-letters/{id}", Proxy, "Discard a dead letter for good (operators)"),
    route!(GET "/api/analytics/sales", Operator, Query "/analytics/sales", Proxy, "Sales over time (operators)"),
    route!(GET "/api/webhooks", Operator, Notifications "/webhooks", Proxy, "Every webhook endpoint (operators)"),
    route!(POST "/api/webhooks", Operator, Notifications "/webhooks", Proxy, "Register a partner's webhook endpoint; the answer holds its signing secret, once (operators)"),
    route!(GET "/api/webhooks/{id}", Operator, Notifications "/webhooks/{id}", Proxy, "A webhook endpoint (operators)"),
    route!(DELETE "/api/webhooks/{id}", Operator, Notifications "/webhooks/{id}", Proxy, "Delete a webhook endpoint and its deliveries (operators)"),
    route!(POST "/api/webhooks/{id}/pause", Operator, Notifications "/webhooks/{id}/pause", Proxy, "Pause a webhook endpoint (operators)"),
    route!(POST "/api/webhooks/{id}/resume", Operator, Notifications "/webhooks/{id}/resume", Proxy, "Resume a webhook endpoint (operators)"),
    route!(POST "/api/webhooks/{id}/rotate", Operator, Notifications "/webhooks/{id}/rotate", Proxy, "Rotate a webhook endpoint's signing secret; the old one signs too for a grace period (operators)"),
    route!(GET "/api/webhooks/{id}/deliveries", Operator, Notifications "/webhooks/{id}/deliveries", Proxy, "A webhook endpoint's deliveries, newest first (operators)"),
    route!(GET "/api/webhooks/{id}/deliveries/{delivery_id}", Operator, Notifications "/webhooks/{id}/deliveries/{delivery_id}", Proxy, "A delivery with every attempt (operators)"),
    route!(POST "/api/webhooks/{id}/deliveries/{delivery_id}/resend", Operator, Notifications "/webhooks/{id}/deliveries/{delivery_id}/resend", Proxy, "Send a delivery again (operators)"),
];

/// What the routes share.
pub struct Gateway {
    pub orders: Upstream,
    pub inventory: Upstream,
    pub payments: Upstream,
    pub orchestrator: Upstream,
    pub projections: Upstream,
    pub query: Upstream,
    pub notifications: Upstream,
    pub owners: Owners,
    pub catalog: CatalogCache,
    pub js: async_nats::jetstream::Context,
    pub ns: Namespace,
    pub request_timeout: Duration,
    /// Ends the live streams at shutdown, so the server can finish.
    pub stop: CancellationToken,
    /// The live streams each caller holds.
    pub streams: Arc<OpenStreams>,
}

impl Gateway {
    fn upstream(&self, target: Target) -> &Upstream {
        match target {
            Target::Orders => &self.orders,
            Target::Inventory => &self.inventory,
            Target::Payments => &self.payments,
            Target::Orchestrator => &self.orchestrator,
            Target::Projections => &self.projections,
            Target::Notifications => &self.notifications,
            // The live stream's route never forwards (it reads JetStream); the query API
            // stands in only so the match is whole.
            Target::Query | Target::Stream => &self.query,
        }
    }
}

/// The router of [`ROUTES`]; the methods of one path share its entry.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut paths: Vec<(&'static str, MethodRouter<Arc<Gateway>>)> = Vec::new();
    for route in ROUTES {
        let filter = MethodFilter::try_from(route.method.clone()).expect("GET, POST or DELETE");
        let handler = move |State(gw): State<Arc<Gateway>>,
                            caller: Option<Extension<Caller>>,
                            params: RawPathParams,
                            uri: Uri,
                            headers: HeaderMap,
                            body: Result<Bytes, BytesRejection>| async move {
            let call = Call {
                route,
                caller: caller.and_then(|Extension(Caller(p))| p),
                params: params.iter().map(|(_, v)| v.to_owned()).collect(),
                query: uri.query().map(str::to_owned),
                headers,
                body,
            };
            respond(&gw, call).await
        };
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, methods)) => *methods = std::mem::take(methods).on(filter, handler),
            None => paths.push((route.path, on(filter, handler))),
        }
    }
    paths
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(
                path,
                methods.fallback(service_kit::problem::method_not_allowed),
            )
        })
        .with_state(gateway)
}

/// One request to one route.
struct Call {
    route: &'static Route,
    caller: Option<Principal>,
    params: Vec<String>,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
}

async fn respond(gw: &Gateway, call: Call) -> Response {
    if call.route.kind == Kind::OrderEvents {
        // A live stream is as long as the order takes: no time limit.
        return handle(gw, call)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    match tokio::time::timeout(gw.request_timeout, handle(gw, call)).await {
        Ok(answer) => answer.unwrap_or_else(IntoResponse::into_response),
        Err(_) => ApiError::Timeout(gw.request_timeout.as_millis()).into_response(),
    }
}

async fn handle(gw: &Gateway, mut call: Call) -> Result<Response, ApiError> {
    let route = call.route;
    match (route.access, &call.caller) {
        (Access::Anyone, _) => {}
        (_, None) => {
            return Err(ApiError::Unauthorized(
                "this route needs a bearer token".into(),
            ))
        }
        (Access::Operator, Some(Principal::Customer { .. })) => {
            return Err(ApiError::Forbidden("operators only".into()))
        }
        _ => {}
    }
    own_idempotency_key(&mut call)?;
    // URL parsers resolve `.` and `..` even percent-encoded: never pass them on.
    if call.params.iter().any(|p| p == "." || p == "..") {
        return Err(ApiError::BadRequest(
            "a path segment may not be . or ..".into(),
        ));
    }
    match route.kind {
        Kind::Proxy => {
            let body = body_of(call.body)?;
            forward(
                gw,
                route,
                &call.params,
                call.query.as_deref(),
                &call.headers,
                body,
            )
            .await
            .map(Answer::into_response)
        }
        Kind::Catalog => read_catalog(gw, call).await,
        Kind::PlaceOrder => place_order(gw, call).await,
        Kind::ReadOrder => read_order(gw, call).await,
        Kind::CancelOrder => cancel_order(gw, call).await,
        Kind::Mine => {
            let Some(Principal::Customer { id: me, .. }) = call.caller else {
                return Err(ApiError::Forbidden(
                    "an operator has no orders or notification settings of their own (a \
                     customer's orders: /api/customers/{id}/orders)"
                        .into(),
                ));
            };
            let params = [me.to_string()];
            let body = body_of(call.body)?;
            forward(
                gw,
                route,
                &params,
                call.query.as_deref(),
                &call.headers,
                body,
            )
            .await
            .map(Answer::into_response)
        }
        Kind::OrderEvents => order_events(gw, call).await,
    }
}

/// The longest `Idempotency-Key` a client may send: the services take 255 bytes, and the
/// gateway puts the caller's subject in front.
pub const IDEMPOTENCY_KEY_MAX: usize = 200;

/// The services keep idempotency keys for everyone alike; behind the gateway each caller's
/// keys are their own (`<subject>:<key>`), so no caller can replay, block or probe another's
/// by sending the same key first.
fn own_idempotency_key(call: &mut Call) -> Result<(), ApiError> {
    const KEY: &str = "idempotency-key";
    let (Some(caller), Some(key)) = (&call.caller, call.headers.get(KEY)) else {
        return Ok(());
    };
    if key.len() > IDEMPOTENCY_KEY_MAX {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key may be at most {IDEMPOTENCY_KEY_MAX} bytes"
        )));
    }
    let mut own = caller.subject().into_bytes();
    own.push(b':');
    own.extend_from_slice(key.as_bytes());
    let own = HeaderValue::from_bytes(&own)
        .map_err(|_| ApiError::BadRequest("Idempotency-Key is not a valid header value".into()))?;
    call.headers.insert(KEY, own);
    Ok(())
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| ApiError::Refused(service_kit::problem::unreadable(rejection)))
}

/// Sends the call to the route's service, at its path with `params` and the client's query,
/// and returns what it answered: a route that checks the answer first reads it, the others
/// pass it on as it is (`Answer::into_response`).
async fn forward(
    gw: &Gateway,
    route: &Route,
    params: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Answer, ApiError> {
    let path = upstream_path(route.upstream_path, params);
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    gw.upstream(route.target)
        .call(route.method.clone(), &path_and_query, headers, body)
        .await
}

/// `template` with its `{..}` parameters replaced, in order, by `params` as single segments.
fn upstream_path(template: &str, params: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 40);
    let mut params = params.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(&params.next().map(|p| segment(p)).unwrap_or_default());
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// Whether a read asks the query API to wait for a version (`min_version`).
fn waits_for_version(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p.starts_with("min_version=")))
}

/// A catalog read through the shared cache: a fresh kept answer as it is, a stale one
/// revalidated with its `ETag`, a missing one fetched and kept; the client's own
/// `If-None-Match` is then answered 304 when it names the answer's `ETag`. A read that waits
/// for a version (`min_version`) goes to the query API, as does every read with the cache off.
async fn read_catalog(gw: &Gateway, call: Call) -> Result<Response, ApiError> {
    let query = call.query.as_deref();
    if waits_for_version(query) || !gw.catalog.enabled() {
        return forward(
            gw,
            call.route,
            &call.params,
            query,
            &call.headers,
            Bytes::new(),
        )
        .await
        .map(Answer::into_response);
    }
    let key = match query {
        Some(q) => format!(
            "{}?{q}",
            upstream_path(call.route.upstream_path, &call.params)
        ),
        None => upstream_path(call.route.upstream_path, &call.params),
    };
    let asked = call.headers.get(axum::http::header::IF_NONE_MATCH).cloned();
    let (answer, outcome) = match gw.catalog.fresh(&key) {
        Some(kept) => (kept, Outcome::Hit),
        None => {
            // The cache's own condition, never the client's: a 304 must be for what it holds.
            let mut headers = call.headers.clone();
            headers.remove(axum::http::header::IF_NONE_MATCH);
            let held = gw.catalog.etag(&key);
            if let Some(etag) = &held {
                headers.insert(axum::http::header::IF_NONE_MATCH, etag.clone());
            }
            let answer =
                forward(gw, call.route, &call.params, query, &headers, Bytes::new()).await?;
            let current = match (&held, answer.status) {
                (Some(etag), StatusCode::NOT_MODIFIED) => gw.catalog.revalidated(&key, etag),
                _ => None,
            };
            match current {
                Some(kept) => (kept, Outcome::Revalidated),
                None if answer.status == StatusCode::NOT_MODIFIED => {
                    // Replaced meanwhile by another request: ask once more, in full.
                    headers.remove(axum::http::header::IF_NONE_MATCH);
                    let full = forward(gw, call.route, &call.params, query, &headers, Bytes::new())
                        .await?;
                    gw.catalog.keep(&key, &full);
                    (full, Outcome::Miss)
                }
                None => {
                    gw.catalog.keep(&key, &answer);
                    (answer, Outcome::Miss)
                }
            }
        }
    };
    metrics::counter!("gateway_catalog_cache_total", "outcome" => outcome.as_str()).increment(1);
    let etag = answer.headers.get(axum::http::header::ETAG).cloned();
    let mut answer = match (answer.status, asked, etag) {
        (StatusCode::OK, Some(asked), Some(etag)) if crate::catalog::matches(&asked, &etag) => {
            crate::catalog::not_modified(answer)
        }
        _ => answer,
    };
    answer
        .headers
        .insert("x-cache", HeaderValue::from_static(outcome.as_str()));
    Ok(answer.into_response())
}

/// The customer id is the token's; a body naming another customer is refused, and an
/// operator must say for whom they order.
async fn place_order(gw: &Gateway, call: Call) -> Result<Response, ApiError> {
    let mut fields =
        service_kit::problem::json_object(&call.headers, call.body).map_err(ApiError::Refused)?;
    let named = fields.get("customer_id").cloned();
    let customer = match (&call.caller, named) {
        (Some(Principal::Customer { id: me, .. }), None) => *me,
        (Some(Principal::Customer { id: me, .. }), Some(named)) => {
            if named.as_str().and_then(|s| Uuid::parse_str(s).ok()) != Some(*me) {
                return Err(ApiError::Forbidden(
                    "a customer may place orders only for themselves".into(),
                ));
            }
            *me
        }
        (_, Some(named)) => match named.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
            Some(id) => id,
            None => return Err(ApiError::BadRequest("customer_id must be a UUID".into())),
        },
        (_, None) => {
            return Err(ApiError::BadRequest(
                "an operator must name the customer_id the order is for".into(),
            ))
        }
    };
    fields.insert("customer_id".into(), Value::String(customer.to_string()));
    // The address for the order's emails is the token's, never the body's: an operator's
    // order for a customer carries none.
    fields.remove("email");
    if let Some(Principal::Customer {
        email: Some(email), ..
    }) = &call.caller
    {
        fields.insert("email".into(), Value::String(email.clone()));
    }
    let mut headers = call.headers;
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body =
        Bytes::from(serde_json::to_vec(&Value::Object(fields)).map_err(anyhow::Error::from)?);
    forward(gw, call.route, &[], None, &headers, body)
        .await
        .map(Answer::into_response)
}

/// Reads the order; another customer's answers 404, exactly as a missing one does, and at
/// once: the owner is checked (from the log) before the query API is asked, so neither a
/// `min_version` wait nor its answer can tell whether another customer's order exists.
async fn read_order(gw: &Gateway, call: Call) -> Result<Response, ApiError> {
    let customer = match call.caller {
        Some(Principal::Customer { id: me, .. }) => Some(me),
        _ => None,
    };
    if customer.is_some() {
        let waits = waits_for_version(call.query.as_deref());
        let order = call.params.first().map_or("", String::as_str);
        if authorise_order(gw, &call.caller, order).await.is_err() {
            // As the query API answers an order it does not hold (yet): with `min_version`,
            // one that may still appear.
            return Err(if waits {
                ApiError::OrderNotVisible
            } else {
                ApiError::OrderNotFound
            });
        }
    }
    // The client's `If-None-Match` goes along: a customer's 304 comes only after the owner
    // was read from the stream above, so an ETag never tells whether another's order exists.
    let answer = forward(
        gw,
        call.route,
        &call.params,
        call.query.as_deref(),
        &call.headers,
        Bytes::new(),
    )
    .await?;
    if answer.status != StatusCode::OK {
        return Ok(answer.into_response());
    }
    if let Some(me) = customer {
        #[derive(serde::Deserialize)]
        struct Owner {
            customer_id: Uuid,
        }
        let owner = serde_json::from_slice::<Owner>(&answer.body)
            .map_err(|e| anyhow::anyhow!(e).context("reading the owner of an order"))?;
        if owner.customer_id != me {
            return Err(ApiError::OrderNotFound);
        }
    }
    // The read model holds no payment token; should one ever appear, it is cut here.
    if names_payment_token(&answer.body) {
        let mut order: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| anyhow::anyhow!(e).context("reading an order"))?;
        sse::scrub(&mut order);
        return Ok(json_answer(answer.status, answer.headers, &order).into_response());
    }
    Ok(answer.into_response())
}

/// Whether the body names a `payment_token` field anywhere (a SIMD substring search, its
/// searcher built once: this runs on every order read).
fn names_payment_token(body: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"payment_token\""));
    FINDER.find(body).is_some()
}

/// Whether the caller may act on `order`: an operator always, a customer only on their own
/// (as the order's `OrderPlaced` in the log says).
async fn authorise_order(
    gw: &Gateway,
    caller: &Option<Principal>,
    order: &str,
) -> Result<Uuid, ApiError> {
    let order = Uuid::parse_str(order).map_err(|_| ApiError::OrderNotFound)?;
    if let Some(Principal::Customer { id: me, .. }) = caller {
        if gw.owners.owner_of(order).await? != Some(*me) {
            return Err(ApiError::OrderNotFound);
        }
    }
    Ok(order)
}

async fn cancel_order(gw: &Gateway, call: Call) -> Result<Response, ApiError> {
    authorise_order(
        gw,
        &call.caller,
        call.params.first().map_or("", String::as_str),
    )
    .await?;
    let body = body_of(call.body)?;
    forward(gw, call.route, &call.params, None, &call.headers, body)
        .await
        .map(Answer::into_response)
}

async fn order_events(gw: &Gateway, call: Call) -> Result<Response, ApiError> {
    let order = authorise_order(
        gw,
        &call.caller,
        call.params.first().map_or("", String::as_str),
    )
    .await?;
    let from = match call.headers.get("last-event-id") {
        None => sse::Position::default(),
        Some(id) => id
            .to_str()
            .ok()
            .and_then(sse::Position::parse)
            .ok_or_else(|| {
                ApiError::BadRequest("Last-Event-ID is not an id this stream sent".into())
            })?,
    };
    let caller = call
        .caller
        .as_ref()
        .map_or_else(String::new, Principal::subject);
    let slot = gw.streams.take(caller).map_err(|full| match full {
        crate::streams::Full::Caller => ApiError::TooManyStreams(gw.streams.max()),
        crate::streams::Full::All => ApiError::StreamsFull(gw.streams.total()),
    })?;
    let events =
        sse::order_events(&gw.js, &gw.ns, order, from, slot, gw.stop.child_token()).await?;
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_fill_the_upstream_path_in_order_as_single_segments() {
        assert_eq!(
            upstream_path("/products/{sku}/restock", &["SKU-1".into()]),
            "/products/SKU-1/restock"
        );
        assert_eq!(
            upstream_path("/orders/{id}", &["a/../../x".into()]),
            "/orders/a%2F..%2F..%2Fx"
        );
        assert_eq!(upstream_path("/products", &[]), "/products");
    }

    #[test]
    fn no_route_reaches_a_saga_internal_command() {
        let internal: Vec<_> = contracts::all()
            .into_iter()
            .filter(|c| c.saga_internal)
            .collect();
        assert_eq!(
            internal.len(),
            9,
            "price, confirm, reject, reserve, release, commit, authorise, capture, void"
        );
        for route in ROUTES {
            assert!(
                !internal.iter().any(|c| c.path == route.upstream_path
                    && c.context.token() == route.target.service()),
                "{} reaches a saga-internal command",
                route.path
            );
        }
    }
}
