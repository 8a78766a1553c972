//! The streamshop domain: aggregates, commands, events and their errors.
//!
//! Invariant: this crate does no I/O and depends on no sqlx, axum or async-nats. Time comes in
//! through commands, never from a clock read inside an aggregate.
#![forbid(unsafe_code)]

#[cfg(test)]
mod given;
pub mod money;
pub mod order;
pub mod payment;
pub mod product;
pub mod saga;
pub mod sealing;
pub mod sku;

pub use money::{Currency, Money};
pub use sku::Sku;

/// What every domain error tells a caller: a stable reason and whether retrying may help.
pub trait Rejection: std::error::Error {
    /// A stable machine-readable reason, such as `out_of_stock`.
    fn code(&self) -> &'static str;
    /// Whether the same command may succeed later (a provider outage, say).
    fn is_retryable(&self) -> bool {
        false
    }
    /// Whether the rejection means the aggregate does not exist.
    fn is_not_found(&self) -> bool {
        self.code() == "not_found"
    }
}

impl Rejection for order::OrderError {
    fn code(&self) -> &'static str {
        order::OrderError::code(self)
    }
    fn is_retryable(&self) -> bool {
        matches!(self, order::OrderError::KeysUnavailable(_))
    }
}

impl Rejection for product::ProductError {
    fn code(&self) -> &'static str {
        product::ProductError::code(self)
    }
}

impl Rejection for payment::PaymentError {
    fn code(&self) -> &'static str {
        payment::PaymentError::code(self)
    }
    fn is_retryable(&self) -> bool {
        payment::PaymentError::is_retryable(self)
    }
}
