//! RFC 9457 problem+json responses, and the JSON body reader whose refusals are problems too,
//! so malformed input gets the same error shape as a broken business rule.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// Prefix of every problem `type`: stable, so clients may match on it.
pub const TYPE_PREFIX: &str = "urn:streamshop:problem:";

/// A problem+json response.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// Short stable slug such as `invalid-body`; rendered as `urn:streamshop:problem:<slug>`.
    pub kind: &'static str,
    pub title: String,
    pub detail: Option<String>,
    pub extensions: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, title: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            title: title.into(),
            detail: None,
            extensions: Map::new(),
            retry_after_secs: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extensions.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// `order-not-found`: no such order; with `stale`, none yet, because the read model did
    /// not reach the `min_version` asked for in time (the query API's answer, which the
    /// gateway gives too when it waits for an order it just accepted).
    pub fn order_not_found(stale: bool) -> Self {
        if !stale {
            return Self::new(StatusCode::NOT_FOUND, "order-not-found", "No such order");
        }
        Self::new(
            StatusCode::NOT_FOUND,
            "order-not-found",
            "The order is not visible yet",
        )
        .detail("the read model did not catch up with min_version in time; retry")
        .with("stale", true)
        .retry_after(1)
    }

    /// The opaque 500: the cause is logged here, once, and never shown to the client. A
    /// database that is only busy or away (no free connection in time, a statement cancelled
    /// by its timeout, a server restarting or unreachable) is a 503 with `Retry-After`, which a
    /// client may retry.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        if busy_database(error) {
            tracing::warn!(error = %ErrorChain(error), "the database is busy");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is busy; try again shortly",
            )
            .retry_after(1);
        }
        tracing::error!(error = %ErrorChain(error), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
    }

    /// The type URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.kind)
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), Value::String(self.type_uri()));
        body.insert("title".into(), Value::String(self.title.clone()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(detail) = &self.detail {
            body.insert("detail".into(), Value::String(detail.clone()));
        }
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Runs the request, or answers 503 problem+json once `limit` has passed.
pub async fn within(
    limit: std::time::Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("The request took longer than {} ms", limit.as_millis()),
        )
        .retry_after(1)
        .into_response(),
    }
}

/// Whether `error`, or one of its causes, says the database is busy or away rather than
/// broken: away as `db::unavailable` says, or a statement cancelled by its timeout (57014).
fn busy_database(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<sqlx::Error>() {
            let cancelled = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "57014");
            if cancelled || crate::db::unavailable(e) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// Formats an error with its whole `source()` chain on one line.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The problem for a body that could not be read: 413 when it is over the limit.
pub fn unreadable(rejection: BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The body is larger than this endpoint accepts",
        )
    } else {
        Problem::new(
            rejection.status(),
            "invalid-body",
            "The body could not be read",
        )
    }
}

/// Reads a request body as a JSON object, or gives the problem that refuses it: 413 too large,
/// 415 not `application/json`, 400 not JSON, 422 not an object. An empty body is `{}`, so
/// commands without fields need no body. Every JSON body of every service goes through here.
pub fn json_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, Problem> {
    let body = body.map_err(unreadable)?;
    if body.is_empty() {
        return Ok(Map::new());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Send the body as application/json",
        ));
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "The body must be a JSON object",
        )),
        Err(e) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The body is not valid JSON",
        )
        .detail(e.to_string())),
    }
}

/// A JSON response body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Fallback for unknown routes, so even a 404 is problem+json.
pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource")
}

/// Fallback for a known route called with the wrong method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "This resource does not accept that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content_type: Option<&str>, body: &'static str) -> Result<Map<String, Value>, u16> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        json_object(&headers, Ok(Bytes::from_static(body.as_bytes())))
            .map_err(|p| p.status.as_u16())
    }

    #[test]
    fn json_bodies_are_read_or_refused_with_the_right_status() {
        let json = Some("application/json");
        assert_eq!(read(None, "").unwrap().len(), 0, "an empty body is {{}}");
        assert_eq!(read(json, r#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(
            read(Some("application/json; charset=utf-8"), "{}").map(|m| m.len()),
            Ok(0)
        );
        assert_eq!(read(Some("text/plain"), "{}"), Err(415));
        assert_eq!(read(None, "{}"), Err(415));
        assert_eq!(read(json, "{"), Err(400));
        assert_eq!(read(json, "[1]"), Err(422));
    }

    #[test]
    fn body_carries_type_status_and_extensions() {
        let p = Problem::new(StatusCode::CONFLICT, "conflict", "Conflict")
            .detail("try again")
            .with("order_id", "x");
        let body = p.body();
        assert_eq!(body["type"], "urn:streamshop:problem:conflict");
        assert_eq!(body["status"], 409);
        assert_eq!(body["detail"], "try again");
        assert_eq!(body["order_id"], "x");
    }
}
