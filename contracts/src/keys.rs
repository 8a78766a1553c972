//! Opening a sealed payment token: what payments asks of orders, which keeps the customers'
//! data keys (NATS request/reply on `keys.orders.open`, `messaging::Namespace::open_subject`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A request: the order the token belongs to, and the token as the command carried it.
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
    /// Not a token sealed for that order.
    Invalid,
    /// The keys could not be read now: worth retrying.
    Unavailable,
}
