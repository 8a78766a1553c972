//! The orders service's HTTP errors, each mapped to one problem+json response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cqrs_es::AggregateError;
use domain::order::OrderError;
use runtime::problem::Problem;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a command endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(OrderError),
    /// Concurrent writers kept conflicting after the command bus's retries.
    #[error("the order was changed concurrently")]
    Conflict,
    /// The database is unreachable: worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(BoxError),
    /// Anything else: an opaque 500, logged once.
    #[error(transparent)]
    Internal(BoxError),
}

impl From<AggregateError<OrderError>> for ApiError {
    fn from(err: AggregateError<OrderError>) -> Self {
        match err {
            AggregateError::UserError(e) => Self::Rejected(e),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(e) => Self::Unavailable(e),
            AggregateError::DeserializationError(e) | AggregateError::UnexpectedError(e) => {
                Self::Internal(e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(e) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "order-rejected",
                "The order was rejected",
            )
            .detail(e.to_string())
            .with("reason", e.code())
            .into_response(),
            Self::Conflict => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "The order was changed concurrently; retry",
            )
            .retry_after(1)
            .into_response(),
            Self::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The service cannot reach its database; retry",
                )
                .retry_after(1)
                .into_response()
            }
            Self::Internal(e) => Problem::internal(e.as_ref()).into_response(),
        }
    }
}
