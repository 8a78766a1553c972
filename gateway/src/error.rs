//! The gateway's errors, each mapped to one problem+json answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use service_kit::problem::Problem;

use crate::oidc::TokenError;

/// Everything the gateway answers besides what an upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or one that is not acceptable.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Not found, or not the caller's (the same answer, so existence does not leak).
    #[error("no such order")]
    OrderNotFound,
    /// As [`ApiError::OrderNotFound`] for a read with `min_version`: the query API's own
    /// answer for an order it does not hold yet, word for word.
    #[error("the order is not visible yet")]
    OrderNotVisible,
    #[error("{0}")]
    BadRequest(String),
    /// A refusal the shared request readers made (413, 415, 400, 422).
    #[error("{}", .0.title)]
    Refused(Problem),
    /// An upstream is down, its circuit open, or it did not answer in time.
    #[error("{upstream} is unavailable: {why}")]
    Unavailable {
        upstream: &'static str,
        why: String,
        retry_after_secs: u64,
    },
    /// The caller holds as many live streams as they may.
    #[error("at most {0} live streams at once")]
    TooManyStreams(u32),
    /// All callers together hold as many live streams as the gateway serves.
    #[error("the gateway serves at most {0} live streams at once")]
    StreamsFull(u32),
    /// The request took longer than the gateway's time limit.
    #[error("the request took longer than {0} ms")]
    Timeout(u128),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(why) => Self::Unauthorized(why),
            TokenError::NoRole => Self::Forbidden(e.to_string()),
            TokenError::IssuerUnavailable(why) => Self::Unavailable {
                upstream: "identity provider",
                why,
                retry_after_secs: 5,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match self {
            Self::Unauthorized(_) => {
                let mut response = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "A valid bearer token is required",
                )
                .detail(detail)
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="streamshop", error="invalid_token""#),
                );
                response
            }
            Self::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed")
                .detail(detail)
                .into_response(),
            Self::OrderNotFound => Problem::order_not_found(false).into_response(),
            Self::OrderNotVisible => Problem::order_not_found(true).into_response(),
            Self::BadRequest(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "The request is not valid",
            )
            .detail(detail)
            .into_response(),
            Self::Refused(problem) => problem.into_response(),
            Self::Unavailable {
                retry_after_secs, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "A service behind the gateway is unavailable; retry",
            )
            .detail(detail)
            .retry_after(retry_after_secs)
            .into_response(),
            Self::TooManyStreams(_) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                "Too many live streams open; close one first",
            )
            .detail(detail)
            .retry_after(5)
            .into_response(),
            Self::StreamsFull(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "streams-full",
                "The gateway serves as many live streams as it can; retry later",
            )
            .detail(detail)
            .retry_after(10)
            .into_response(),
            Self::Timeout(_) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "The request took too long; retry",
            )
            .detail(detail)
            .retry_after(1)
            .into_response(),
            Self::Internal(e) => Problem::internal(e.as_ref()).into_response(),
        }
    }
}
