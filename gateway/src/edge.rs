//! What every `/api` request passes before a route sees it: whether its client is within its
//! rate limit, who is calling (the bearer token, verified), then the body, read within a time
//! limit.
//!
//! A token bucket per subject limits callers with a valid token; one per client address
//! limits everything else, and is charged before a token is verified (a token verified a
//! moment ago excepted), so verifying, the costliest part, is bounded per client. The client's
//! address is the connection's peer, or, when that peer is a trusted proxy, what the
//! proxy says in `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use service_kit::problem::Problem;

use crate::error::ApiError;
use crate::oidc::{Principal, Verifier};
use crate::settings::{Limits, Quota};

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// A bucket per key, and how it is described in the `RateLimit-*` headers.
struct Buckets {
    limiter: Limiter,
    quota: Quota,
}

impl Buckets {
    fn new(quota: Quota) -> Self {
        let per_minute = NonZeroU32::new(quota.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(governor::Quota::per_minute(per_minute).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>(),
            quota,
        }
    }

    /// Takes one token for `key`: the headers to send, or the 429 to answer.
    fn take(&self, key: String) -> Result<HeaderMap, Box<Response>> {
        let refill = Duration::from_secs(60) / self.quota.per_minute.max(1);
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset = refill * (self.quota.burst - remaining.min(self.quota.burst));
                Ok(self.headers(remaining, reset))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                metrics::counter!("gateway_rate_limited_total").increment(1);
                let mut response = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests; slow down",
                )
                .detail(format!(
                    "at most {} requests a minute, {} at once",
                    self.quota.per_minute, self.quota.burst
                ))
                .retry_after(secs.max(1))
                .into_response();
                response
                    .headers_mut()
                    .extend(self.headers(0, wait.max(Duration::from_secs(1))));
                Err(Box::new(response))
            }
        }
    }

    fn headers(&self, remaining: u32, reset: Duration) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        put("ratelimit-limit", self.quota.burst.to_string());
        put("ratelimit-remaining", remaining.to_string());
        put("ratelimit-reset", reset.as_secs().max(1).to_string());
        put(
            "ratelimit-policy",
            format!("{};w=60;burst={}", self.quota.per_minute, self.quota.burst),
        );
        headers
    }
}

/// The checks, and what they need.
pub struct Edge {
    pub verifier: Verifier,
    subjects: Buckets,
    anonymous: Buckets,
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// The client's address, as [`client_ip`] found it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The address of the client behind a request from `peer`. Only a trusted proxy's word is
/// taken: then `X-Forwarded-For` is read from its right end (what the nearest proxy added)
/// leftwards, past every trusted proxy, to the first address that is not one. A client can
/// put anything at the left of that header, so the left end is never believed; an entry that
/// is not an address stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Who is calling, as the routes see it: `None` for a call without a token.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

impl Edge {
    pub fn new(verifier: Verifier, limits: &Limits) -> Self {
        Self {
            verifier,
            subjects: Buckets::new(limits.per_subject),
            anonymous: Buckets::new(limits.anonymous),
            trusted_proxies: limits.trusted_proxies.clone(),
        }
    }

    /// Forgets buckets that are full again, so the maps do not grow with every caller ever
    /// seen.
    pub fn forget_idle(&self) {
        self.subjects.limiter.retain_recent();
        self.anonymous.limiter.retain_recent();
    }

    /// The bearer token of the request: `None` without an `Authorization` header.
    fn token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .map(Some)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into())
            })
    }
}

/// Axum middleware: rate-limit and authenticate, then let the route decide.
pub async fn check(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_ip(peer.ip(), request.headers(), &edge.trusted_proxies);
    request.extensions_mut().insert(ClientIp(client));
    let token = Edge::token(request.headers());
    let remembered = match &token {
        Ok(Some(token)) => edge.verifier.remembered(token),
        _ => None,
    };
    // Everything but a token verified a moment ago spends the client's own tokens first: a
    // flood of forged tokens is refused before any signature is checked.
    let mut limit_headers = HeaderMap::new();
    if remembered.is_none() {
        match edge.anonymous.take(client.to_string()) {
            Ok(headers) => limit_headers = headers,
            Err(too_many) => return *too_many,
        }
    }
    let caller = match (remembered, token) {
        (Some(principal), _) => Ok(Some(principal)),
        (None, Ok(Some(token))) => edge
            .verifier
            .verify(token)
            .await
            .map(Some)
            .map_err(ApiError::from),
        (None, Ok(None)) => Ok(None),
        (None, Err(malformed)) => Err(malformed),
    };
    if let Ok(Some(principal)) = &caller {
        match edge.subjects.take(principal.subject()) {
            Ok(headers) => limit_headers = headers,
            Err(too_many) => return *too_many,
        }
    }
    let mut response = match caller {
        Ok(principal) => {
            request.extensions_mut().insert(Caller(principal));
            next.run(request).await
        }
        Err(refused) => refused.into_response(),
    };
    response.headers_mut().extend(limit_headers);
    response
}

/// Axum middleware: reads the request's body whole, within `timeout` however slowly it
/// arrives (408 after, and the connection is closed), and at most `limit` bytes (413), before
/// the route sees it. A client that trickles a body therefore holds a connection for
/// `timeout` at most.
pub async fn read_body(
    State((timeout, limit)): State<(Duration, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The request body is too large",
        )
        .detail(format!("at most {limit} bytes"))
        .into_response(),
        Err(_) => {
            metrics::counter!("gateway_body_timeouts_total").increment(1);
            let mut response = Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "The request body did not arrive in time",
            )
            .detail(format!(
                "the whole body must arrive within {} ms",
                timeout.as_millis()
            ))
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn only_a_trusted_proxy_is_believed_and_only_from_the_right() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let client = |peer: IpAddr, values: &[&str]| client_ip(peer, &forwarded(values), &trusted);
        // Without a trusted proxy the header is a client's say-so.
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client(stranger, &["198.51.100.1"]), stranger);
        // The proxy's word: the address it added (the rightmost).
        assert_eq!(
            client(proxy, &["198.51.100.1"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // A client forging the left end does not choose its bucket.
        assert_eq!(
            client(proxy, &["1.2.3.4, 198.51.100.1"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Two proxies of ours: past both.
        assert_eq!(
            client(proxy, &["198.51.100.1", "10.0.0.7"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last trusted hop; no header, the proxy itself.
        assert_eq!(client(proxy, &["nonsense"]), proxy);
        assert_eq!(client(proxy, &[]), proxy);
    }
}
