//! Opening a sealed value: what payments (the payment token, on `keys.orders.open`) and
//! notifications (the email address, on `keys.orders.email`) ask of orders, which keeps the
//! customers' data keys (NATS request/reply; `messaging::Namespace::open_subject`,
//! `open_email_subject`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A request: the order the value belongs to, and the value as the event carried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    pub order_id: Uuid,
    pub token: String,
}

/// The answer: the clear token, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenAnswer {
    Token(String),
    /// The customer was erased: nothing of theirs opens again.
    Erased,
    /// Not a value sealed for that order and field.
    Invalid,
    /// The keys could not be read now: worth retrying.
    Unavailable,
}

impl OpenAnswer {
    /// The clear value, or why there is none, as the sealing port says it (for every context
    /// that asks: payments for a token, notifications for an address).
    pub fn opened(self) -> Result<String, domain::sealing::SealingError> {
        use domain::sealing::SealingError;
        match self {
            Self::Token(clear) => Ok(clear),
            Self::Erased => Err(SealingError::Erased),
            Self::Invalid => Err(SealingError::Invalid),
            Self::Unavailable => Err(SealingError::Unavailable(
                "orders could not read the keys".into(),
            )),
        }
    }
}
