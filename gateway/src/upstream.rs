//! Calls to the internal services: a time limit per call, a circuit breaker per service,
//! and only the headers that belong in each direction passed on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{self as http, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use service_kit::tls::TlsSettings;

use crate::error::ApiError;
use crate::settings::BreakerSettings;
use service_kit::breaker::Breaker;

/// Request headers a client may send through to a service.
const REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "idempotency-key",
    "if-none-match",
    "x-request-id",
    // Stripe's webhook signature, which only the payments service checks.
    "stripe-signature",
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

/// The HTTP/1.1 client the gateway calls the services with: hyper's pooled client, with
/// no URL parsing per call (the services' addresses are parsed once, at start-up).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long a connection to a service may take to open. The services are inside the
/// deployment's network: more than a second means the replica is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A client that keeps idle connections (and their TLS sessions) for 20 s, less than the
/// services wait for a request on one, and sends without
/// Nagle's delay. With `tls`, it calls HTTPS only, trusts the local CA only and shows the
/// gateway's certificate; without (`TLS=off`), plain HTTP only.
pub fn client(tls: Option<&TlsSettings>) -> anyhow::Result<HttpClient> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // A replica that does not even accept the connection (its host gone) is passed over in
    // this time rather than taking the call's whole time limit.
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    let connector = match tls {
        Some(tls) => HttpsConnectorBuilder::new()
            .with_tls_config(tls.client_config().with_context(|| {
                format!("the gateway's TLS configuration in {}", tls.dir.display())
            })?)
            .https_only()
            .enable_http1()
            .wrap_connector(http),
        None => HttpsConnectorBuilder::new()
            .with_tls_config(nothing_trusted())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(service_kit::https::CLIENT_IDLE_TIMEOUT)
        .build(connector))
}

/// A TLS configuration that trusts no server: with TLS off, an `https://` upstream fails
/// rather than being trusted on sight.
fn nothing_trusted() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

/// One internal service: one address, or the addresses of its replicas.
pub struct Upstream {
    pub name: &'static str,
    endpoints: Vec<Endpoint>,
    /// Where the next call starts, so calls take the replicas in turn.
    next: AtomicUsize,
    http: HttpClient,
    timeout: Duration,
    pub breaker: Breaker,
}

/// One replica's address, and until when it is passed over after refusing a connection.
struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    down_until: Mutex<Option<Instant>>,
}

/// How long a replica that refused a connection is passed over while others remain: long
/// enough that a replica being restarted costs each call nothing, short enough that it
/// takes its share again soon after it is back.
const PASSED_OVER: Duration = Duration::from_secs(1);

impl Endpoint {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| now < until)
    }

    fn set_down(&self, until: Option<Instant>) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

/// What a service answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        *response.headers_mut() = self.headers;
        response
    }
}

/// Why one replica gave no answer.
enum Failure {
    /// The request never reached it (connection refused, say): another replica may take it.
    NotSent(String),
    /// It may have reached it: only a request that is safe to repeat goes to another.
    Lost(String),
}

/// The address `base` (`https://host:port`) split for calls.
fn endpoint(name: &str, base: &str) -> anyhow::Result<Endpoint> {
    let uri: Uri = base
        .parse()
        .with_context(|| format!("{name}'s address {base:?} is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        anyhow::bail!("{name}'s address {base:?} needs a scheme and a host");
    };
    if !matches!(uri.path(), "" | "/") {
        anyhow::bail!("{name}'s address {base:?} may not have a path");
    }
    Ok(Endpoint {
        scheme: scheme.clone(),
        authority: authority.clone(),
        down_until: Mutex::new(None),
    })
}

impl Upstream {
    /// The service at `base`: `https://host:port` (or `http://` with TLS off), or several
    /// such addresses separated by commas, one per replica, when nothing in front of the
    /// replicas spreads the calls (a Kubernetes Service does; the local cluster has none).
    pub fn new(
        name: &'static str,
        base: &str,
        http: HttpClient,
        settings: &BreakerSettings,
    ) -> anyhow::Result<Self> {
        let endpoints = base
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| endpoint(name, b))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            anyhow::bail!("{name} has no address");
        }
        Ok(Self {
            name,
            endpoints,
            next: AtomicUsize::new(0),
            http,
            timeout: settings.timeout,
            breaker: Breaker::new(
                name,
                settings.failures,
                settings.open_for,
                service_kit::breaker::UPSTREAM,
            ),
        })
    }

    /// The replicas in the order this call tries them: from the next in turn, those passed
    /// over last (all of them, if every one is).
    fn order(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let (mut up, down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| !self.endpoints[i].is_down(now));
        up.extend(down);
        up
    }

    /// Sends `method path_and_query` with the client's passable `headers` and `body`.
    /// Refused at once while the circuit is open; a refused connection, a timeout or a
    /// 502/503/504 counts against the circuit. A replica that cannot be reached hands the
    /// call to the next; so does one that dropped the connection, when the call is safe to
    /// repeat (a read, or a command with an `Idempotency-Key`).
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
        let path_and_query = PathAndQuery::try_from(path_and_query)
            .map_err(|e| ApiError::BadRequest(format!("the path cannot be passed on: {e}")))?;
        let repeatable =
            matches!(method, Method::GET | Method::HEAD) || headers.contains_key("idempotency-key");
        let answer = tokio::time::timeout(self.timeout, async {
            let mut why = String::new();
            for i in self.order() {
                let endpoint = &self.endpoints[i];
                match self
                    .send(endpoint, &method, &path_and_query, headers, body.clone())
                    .await
                {
                    Ok(answer) => {
                        endpoint.set_down(None);
                        return Ok(answer);
                    }
                    Err(Failure::NotSent(e)) => {
                        endpoint.set_down(Some(Instant::now() + PASSED_OVER));
                        why = e;
                    }
                    Err(Failure::Lost(e)) if repeatable => why = e,
                    Err(Failure::Lost(e)) => return Err(e),
                }
            }
            Err(why)
        })
        .await;
        match answer {
            Ok(Ok(answer))
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
            Ok(Ok(answer)) => {
                self.breaker.succeeded();
                Ok(answer)
            }
            failed => {
                self.breaker.failed();
                let why = match failed {
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = self.name, error = %e, "upstream call failed");
                        "it cannot be reached".to_owned()
                    }
                    _ => format!("it did not answer within {} ms", self.timeout.as_millis()),
                };
                Err(ApiError::Unavailable {
                    upstream: self.name,
                    why,
                    retry_after_secs: 1,
                })
            }
        }
    }

    /// One attempt at one replica.
    async fn send(
        &self,
        endpoint: &Endpoint,
        method: &Method,
        path_and_query: &PathAndQuery,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Failure> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(endpoint.scheme.clone());
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = Some(path_and_query.clone());
        let uri = Uri::from_parts(parts).map_err(|e| Failure::NotSent(e.to_string()))?;
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        let out = request.headers_mut();
        for name in REQUEST_HEADERS {
            if let Some(value) = headers.get(*name) {
                out.insert(*name, value.clone());
            }
        }
        let traceparent = service_kit::trace::outgoing(
            headers
                .get(service_kit::trace::TRACEPARENT)
                .and_then(|v| v.to_str().ok()),
        );
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            out.insert(service_kit::trace::TRACEPARENT, value);
        }
        let response = match self.http.request(request).await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Err(Failure::NotSent(e.to_string())),
            Err(e) => return Err(Failure::Lost(e.to_string())),
        };
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return Err(Failure::Lost(e.to_string())),
        };
        let mut passed = HeaderMap::new();
        for name in RESPONSE_HEADERS {
            if let Some(value) = parts.headers.get(*name) {
                passed.insert(HeaderName::from_static(name), value.clone());
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: passed,
            body,
        })
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

    fn replicas(list: &str) -> anyhow::Result<super::Upstream> {
        let settings = crate::settings::BreakerSettings {
            timeout: std::time::Duration::from_secs(1),
            failures: 5,
            open_for: std::time::Duration::from_secs(5),
        };
        super::Upstream::new("orders", list, super::client(None)?, &settings)
    }

    #[test]
    fn replicas_take_calls_in_turn_and_one_that_refused_goes_last() {
        let up = replicas("http://a:1, http://b:2,http://c:3").unwrap();
        assert_eq!(up.order(), [0, 1, 2]);
        assert_eq!(up.order(), [1, 2, 0]);
        up.endpoints[2].set_down(Some(std::time::Instant::now() + super::PASSED_OVER));
        assert_eq!(up.order(), [0, 1, 2]);
        assert_eq!(up.order(), [0, 1, 2]);
        assert_eq!(up.order(), [1, 0, 2]);
        up.endpoints[2].set_down(None);
        assert_eq!(up.order(), [2, 0, 1]);
        assert!(replicas(" , ").is_err());
        assert!(replicas("http://a:1,http://b:2/path").is_err());
    }

    #[test]
    fn a_parameter_stays_one_segment() {
        assert_eq!(segment("SKU-1"), "SKU-1");
        assert_eq!(segment("../orders/x/confirm"), "..%2Forders%2Fx%2Fconfirm");
        assert_eq!(segment("a?b#c d"), "a%3Fb%23c%20d");
    }
}
