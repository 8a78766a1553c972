//! The HTTP face of a command: `POST` routes whose path parameters and JSON body become one
//! [`Request`]; the [`Reply`] becomes 202 or a problem+json.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use serde_json::{Map, Value};
use service_kit::problem::Problem;

use crate::dispatch::{Dispatcher, Request};
use crate::spec::CommandSpec;
use contracts::{reasons, Reply};

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The context's command routes: one `POST` per command of its contract, on the contract's path.
pub fn routes<S: CommandSpec>() -> Router<Arc<Dispatcher<S>>> {
    S::bindings().iter().fold(Router::new(), |router, binding| {
        router.route(binding.info.path, command::<S>(binding.info.name))
    })
}

/// A `POST` route that runs the command `name`; path parameters become body fields.
pub fn command<S>(name: &'static str) -> MethodRouter<Arc<Dispatcher<S>>>
where
    S: CommandSpec,
{
    post(
        move |State(dispatcher): State<Arc<Dispatcher<S>>>,
              params: RawPathParams,
              headers: HeaderMap,
              body: Result<Bytes, BytesRejection>| async move {
            let params: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            match request(name, &params, &headers, body) {
                Ok(request) => into_response::<S>(dispatcher.dispatch(request).await),
                Err(problem) => problem.into_response(),
            }
        },
    )
    .fallback(service_kit::problem::method_not_allowed)
}

/// Builds the transport-neutral request, or the problem that refuses it.
fn request(
    name: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Request, Problem> {
    let mut fields = service_kit::problem::json_object(headers, body)?;
    for (key, value) in params {
        let value = Value::String(value.clone());
        match fields.get(key) {
            Some(existing) if *existing != value => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "The body disagrees with the path",
                )
                .detail(format!("{key} is {value} in the path")));
            }
            _ => {
                fields.insert(key.clone(), value);
            }
        }
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().filter(|k| {
                !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
            });
            match key {
                Some(k) => Some(format!("http:{k}")),
                None => {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid-idempotency-key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    ))
                }
            }
        }
    };
    Ok(Request {
        name: name.to_owned(),
        body: Value::Object(fields),
        idempotency_key,
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

/// 202 with `{<id field>, version, ...data}`, or the problem for the rejection.
pub fn into_response<S: CommandSpec>(reply: Reply) -> Response {
    match reply {
        Reply::Accepted {
            aggregate_id,
            version,
            data,
            replayed,
        } => {
            let mut body = Map::new();
            body.insert(S::ID_FIELD.to_owned(), Value::String(aggregate_id));
            body.insert("version".to_owned(), Value::from(version));
            body.extend(data);
            let mut response =
                (StatusCode::ACCEPTED, axum::Json(Value::Object(body))).into_response();
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Reply::Rejected {
            reason,
            message,
            retryable,
        } => rejection_problem::<S>(&reason, message, retryable).into_response(),
    }
}

fn rejection_problem<S: CommandSpec>(reason: &str, message: String, retryable: bool) -> Problem {
    let problem = match reason {
        reasons::INVALID_BODY => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "The body does not have the expected fields and types",
        ),
        reasons::TOO_LARGE => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-large",
            "The change is larger than the event log takes",
        ),
        reasons::UNKNOWN_COMMAND => {
            Problem::new(StatusCode::NOT_FOUND, "not-found", "No such command")
        }
        reasons::KEY_REUSED => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "This Idempotency-Key was used with a different request",
        ),
        reasons::NOT_FOUND => Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource"),
        // A customer's fair share: their open orders are what bounds them, so a retry may
        // pass once one of those is done.
        reasons::TOO_MANY_OPEN_ORDERS => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-open-orders",
            "The customer has as many open orders as one may",
        )
        .retry_after(30),
        reasons::CUSTOMER_LIMIT => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "customer-limit",
            "One customer may not hold that many units of a product",
        ),
        reasons::CONFLICT => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Concurrent changes kept conflicting; retry",
        )
        .retry_after(1),
        reasons::UNAVAILABLE => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "A dependency is unavailable; retry",
        )
        .retry_after(1),
        reasons::INTERNAL => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            )
        }
        _ if retryable => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The command could not be completed now; retry",
        )
        .retry_after(1),
        _ => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            S::REJECTED_KIND,
            "The command was rejected",
        ),
    };
    problem.detail(message).with("reason", reason)
}
