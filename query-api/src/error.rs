//! The query API's errors, each mapped to one problem+json response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::problem::Problem;

/// Everything a read can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A product or payment the read model does not hold.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The order is not in the read model; `stale` when a `min_version` wait timed out.
    #[error("order not found")]
    OrderNotFound { stale: bool },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// A `min_version` too far past what the read model holds to be waited for.
    pub fn too_far(min_version: u64, max_ahead: u64) -> Self {
        Self::BadRequest(format!(
            "min_version {min_version} is more than {max_ahead} versions past what the read model holds"
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "The request is not valid",
            )
            .detail(detail)
            .into_response(),
            Self::NotFound(what) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource")
                    .detail(format!("no such {what}"))
                    .into_response()
            }
            Self::OrderNotFound { stale } => Problem::order_not_found(stale).into_response(),
            Self::Database(e) => Problem::internal(&e).into_response(),
        }
    }
}
