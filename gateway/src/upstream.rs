//! Calls to the internal services: a time limit per call, a circuit breaker per service,
//! and only the headers that belong in each direction passed on.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::breaker::Breaker;
use crate::error::ApiError;
use crate::settings::BreakerSettings;

/// Request headers a client may send through to a service.
const REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "idempotency-key",
    "if-none-match",
    "x-request-id",
];

/// Response headers a service may send back to the client.
const RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "idempotent-replayed",
    "retry-after",
    "etag",
    "cache-control",
    "last-modified",
];

/// One internal service.
pub struct Upstream {
    pub name: &'static str,
    base: String,
    http: reqwest::Client,
    timeout: Duration,
    pub breaker: Breaker,
}

/// What a service answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        *response.headers_mut() = self.headers;
        response
    }
}

impl Upstream {
    pub fn new(
        name: &'static str,
        base: &str,
        http: reqwest::Client,
        settings: &BreakerSettings,
    ) -> Self {
        Self {
            name,
            base: base.trim_end_matches('/').to_owned(),
            http,
            timeout: settings.timeout,
            breaker: Breaker::new(name, settings.failures, settings.open_for),
        }
    }

    /// Sends `method path_and_query` with the client's passable `headers` and `body`.
    /// Refused at once while the circuit is open; a refused connection, a timeout or a
    /// 502/503/504 counts against the circuit.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Answer, ApiError> {
        self.breaker
            .admit()
            .map_err(|retry_after_secs| ApiError::Unavailable {
                upstream: self.name,
                why: "its circuit is open after repeated failures".into(),
                retry_after_secs,
            })?;
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .timeout(self.timeout)
            .header(
                runtime::trace::TRACEPARENT,
                runtime::trace::outgoing(
                    headers
                        .get(runtime::trace::TRACEPARENT)
                        .and_then(|v| v.to_str().ok()),
                ),
            )
            .body(body);
        for name in REQUEST_HEADERS {
            if let Some(value) = headers.get(*name) {
                request = request.header(*name, value.clone());
            }
        }
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            let mut passed = HeaderMap::new();
            for name in RESPONSE_HEADERS {
                if let Some(value) = response.headers().get(*name) {
                    passed.insert(HeaderName::from_static(name), value.clone());
                }
            }
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers: passed,
                body,
            })
        }
        .await;
        match answer {
            Ok(answer)
                if matches!(
                    answer.status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) =>
            {
                self.breaker.failed();
                Ok(answer)
            }
            Ok(answer) => {
                self.breaker.succeeded();
                Ok(answer)
            }
            Err(e) => {
                self.breaker.failed();
                tracing::warn!(upstream = self.name, error = %e, "upstream call failed");
                Err(ApiError::Unavailable {
                    upstream: self.name,
                    why: if e.is_timeout() {
                        format!("it did not answer within {} ms", self.timeout.as_millis())
                    } else {
                        "it cannot be reached".into()
                    },
                    retry_after_secs: 1,
                })
            }
        }
    }
}

/// A path parameter as one path segment: everything but unreserved characters
/// percent-encoded, so a value cannot add segments (`/`) or a query (`?`). Dot segments are
/// refused by the caller, since URL parsers resolve even their encoded forms.
pub fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A JSON answer the gateway made itself from an upstream's (status and headers kept).
pub fn json_answer(status: StatusCode, headers: HeaderMap, body: &serde_json::Value) -> Answer {
    let mut headers = headers;
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Answer {
        status,
        headers,
        body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn a_parameter_stays_one_segment() {
        assert_eq!(segment("SKU-1"), "SKU-1");
        assert_eq!(segment("../orders/x/confirm"), "..%2Forders%2Fx%2Fconfirm");
        assert_eq!(segment("a?b#c d"), "a%3Fb%23c%20d");
    }
}
