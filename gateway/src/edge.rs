//! What every `/api` request passes before a route sees it: who is calling (the bearer
//! token, verified) and whether they are within their rate limit (a token bucket per
//! subject, or per client IP for calls without a valid token).

use std::net::SocketAddr;
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
use runtime::problem::Problem;

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
        }
    }

    /// Forgets buckets that are full again, so the maps do not grow with every caller ever
    /// seen.
    pub fn forget_idle(&self) {
        self.subjects.limiter.retain_recent();
        self.anonymous.limiter.retain_recent();
    }

    async fn caller(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into())
            })?;
        Ok(Some(self.verifier.verify(token).await?))
    }
}

/// Axum middleware: authenticate, rate-limit, then let the route decide.
pub async fn check(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = edge.caller(request.headers()).await;
    let taken = match &caller {
        Ok(Some(principal)) => edge.subjects.take(principal.subject()),
        // A bad token spends the client address's tokens: guessing costs like any call.
        _ => edge.anonymous.take(peer.ip().to_string()),
    };
    let limit_headers = match taken {
        Ok(headers) => headers,
        Err(too_many) => return *too_many,
    };
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
