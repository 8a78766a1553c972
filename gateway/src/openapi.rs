//! The gateway's OpenAPI 3.1 document, built from the route table: each route's operation
//! is the internal service's own (from that service's document, so request and answer
//! schemas cannot drift), with the gateway's security, limits and changes applied.
//!
//! `schemas` writes it to `schemas/openapi/gateway.json` from the services' documents as the
//! code makes them; the binary serves it from the committed documents, which the drift check
//! keeps equal to the code.

use serde_json::{json, Map, Value};

use crate::routes::{Access, Kind, Target, ROUTES};

/// The committed document of an internal service.
pub fn committed(service: &str) -> Value {
    let text = match service {
        "orders" => include_str!("../../schemas/openapi/orders.json"),
        "inventory" => include_str!("../../schemas/openapi/inventory.json"),
        "payments" => include_str!("../../schemas/openapi/payments.json"),
        "orchestrator" => include_str!("../../schemas/openapi/orchestrator.json"),
        "projections" => include_str!("../../schemas/openapi/projections.json"),
        "query-api" => include_str!("../../schemas/openapi/query-api.json"),
        "notifications" => include_str!("../../schemas/openapi/notifications.json"),
        other => panic!("no committed document for {other}"),
    };
    serde_json::from_str(text).expect("a committed OpenAPI document is JSON")
}

/// The document the running gateway serves.
pub fn served() -> Value {
    document(&committed)
}

/// The gateway's document, from `upstream(service)`: each internal service's document.
pub fn document(upstream: &dyn Fn(&str) -> Value) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    for route in ROUTES {
        let mut operation = if route.target == Target::Stream {
            live_updates()
        } else {
            let doc = upstream(route.target.service());
            merge_components(&mut components, &doc, route.target.service());
            doc["paths"][route.upstream_path][route.method.as_str().to_ascii_lowercase()].clone()
        };
        assert!(
            operation.is_object(),
            "{} {} has no operation in the {} document",
            route.method,
            route.upstream_path,
            route.target.service()
        );
        let op = operation.as_object_mut().expect("an object");
        op.insert(
            "operationId".into(),
            Value::String(operation_id(route.method.as_str(), route.path)),
        );
        op.insert("summary".into(), Value::String(route.summary.into()));
        op.insert("security".into(), security(route.access));
        adjust(route.kind, op, &mut components);
        // The gateway puts the caller's subject in front of the key: it takes fewer bytes.
        for param in op
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if param["name"] == "Idempotency-Key" {
                param["schema"]["maxLength"] = json!(crate::routes::IDEMPOTENCY_KEY_MAX);
                param["description"] = json!(
                    "Yours alone (another caller's same key is another request): a retry with \
                     the same key and body returns the first answer; the same key with another \
                     body is 422"
                );
            }
        }
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("responses are an object");
        for (status, description) in gateway_problems(route.access, route.path.contains('{')) {
            responses
                .entry(status)
                .or_insert_with(|| service_kit::openapi::problem(description));
        }
        paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item")
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    let mut doc = service_kit::openapi::document(
        "streamshop gateway",
        "The public API. Send `Authorization: Bearer <access token>` from the OpenID provider \
         (`OIDC_ISSUER_URL`); customers are the token's `sub`, operators carry the `admin` \
         scope. Every answer has an `X-Request-Id`; limited answers carry `RateLimit-*` \
         headers, and 429 and 503 carry `Retry-After`.",
        paths,
        components,
    );
    // The gateway serves its metrics apart, on an internal listener, never on this side.
    doc["paths"]
        .as_object_mut()
        .expect("paths are an object")
        .remove("/metrics");
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An OpenID Connect access token (RS256 or ES256, header `typ: at+jwt` \
                            as RFC 9068 says) for the audience `OIDC_AUDIENCE`; \
                            `cargo xtask token` prints one locally"
        }
    });
    doc
}

/// The internal service's schemas, under the same names; two services must agree on a
/// name they share.
fn merge_components(components: &mut Map<String, Value>, doc: &Value, service: &str) {
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        match components.get(name) {
            Some(existing) => assert_eq!(
                existing, schema,
                "schema {name} differs between {service} and another service"
            ),
            None => {
                components.insert(name.clone(), schema.clone());
            }
        }
    }
}

/// `GET /api/orders/{id}` -> `get_api_orders_id`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(part.trim_matches(|c| c == '{' || c == '}'));
    }
    id
}

fn security(access: Access) -> Value {
    match access {
        // A token is optional; a bad one is still refused.
        Access::Anyone => json!([{}, {"bearer": []}]),
        Access::Customer | Access::Operator => json!([{"bearer": []}]),
    }
}

/// The answers the gateway itself may give on a route.
fn gateway_problems(access: Access, has_params: bool) -> Vec<(&'static str, &'static str)> {
    let mut problems = vec![
        (
            "401",
            "No valid bearer token (`WWW-Authenticate: Bearer error=\"invalid_token\"`)",
        ),
        (
            "429",
            "Over the rate limit; see `Retry-After` and `RateLimit-*`",
        ),
        (
            "503",
            "A service behind the gateway is unavailable; see `Retry-After`",
        ),
        ("504", "The request took longer than the gateway allows"),
        (
            "408",
            "The request's body did not arrive within BODY_READ_TIMEOUT_MS (the connection is closed)",
        ),
    ];
    if access != Access::Anyone {
        problems.push(("403", "The token may not do this"));
    }
    if has_params {
        problems.push(("400", "A path parameter is not acceptable"));
        problems.push(("404", "No such resource, or not the caller's"));
    }
    problems
}

/// What the gateway changes in a route's operation.
fn adjust(kind: Kind, op: &mut Map<String, Value>, components: &mut Map<String, Value>) {
    match kind {
        Kind::PlaceOrder => {
            // The customer comes from the token: the field is optional and, when given,
            // must be the caller.
            let mut request = components["PlaceOrder"].clone();
            if let Some(required) = request["required"].as_array_mut() {
                required.retain(|f| f != "customer_id");
            }
            // The gateway sets it from the token.
            if let Some(properties) = request["properties"].as_object_mut() {
                properties.remove("email");
            }
            request["properties"]["customer_id"]["description"] = json!(
                "Optional for a customer (it is the token's `sub`; another id is 403); \
                 required for an operator ordering for a customer"
            );
            components.insert("PlaceOrderRequest".into(), request);
            op["requestBody"]["content"]["application/json"]["schema"] =
                service_kit::openapi::reference("PlaceOrderRequest");
        }
        Kind::Mine => {
            // The customer is the caller: no path parameter.
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                params.retain(|p| p["in"] != "path");
            }
        }
        Kind::Proxy | Kind::Catalog | Kind::ReadOrder | Kind::CancelOrder | Kind::OrderEvents => {}
    }
}

/// The live order stream's operation (the gateway's own).
fn live_updates() -> Value {
    json!({
        "parameters": [
            service_kit::openapi::path_param("id"),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": false,
                "description": "Resume after this event id (`<order sequence>.<saga sequence>`)",
                "schema": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+$"}
            }
        ],
        "responses": {
            "200": {
                "description": "Server-Sent Events: `event: order` (with the order's `status`) \
                                or `event: saga`, each `id: <order seq>.<saga seq>`; the stream \
                                ends after the order's terminal event",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_security() {
        let doc = served();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", route.method, route.path);
            assert_eq!(op["security"], security(route.access));
            assert!(op["responses"]["401"].is_object());
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with("/api/"))
            .map(|(_, item)| item.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn the_served_document_is_the_committed_one() {
        let committed: Value =
            serde_json::from_str(include_str!("../../schemas/openapi/gateway.json")).unwrap();
        assert!(
            served() == committed,
            "schemas/openapi/gateway.json is stale: run `cargo run -p schemas`"
        );
    }

    #[test]
    fn operation_ids_follow_the_path() {
        assert_eq!(operation_id("GET", "/api/orders/{id}"), "get_api_orders_id");
    }
}
