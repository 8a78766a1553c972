//! The ports through which the aggregates reach the sealed (encrypted) form of sensitive
//! fields, the payment token and the email address: the orders context seals them before they
//! are stored in an event; the payments context opens the token right before the provider
//! needs it (and the notification service the address, outside any aggregate). How values are
//! sealed (envelope encryption, per-customer keys) is the adapters' business; the aggregates
//! only carry the sealed value, an opaque string.

use uuid::Uuid;

use crate::payment::BoxFuture;

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealingError {
    /// The customer was erased: their key is gone, and nothing of theirs is sealed or opened
    /// again.
    #[error("the customer's data was erased")]
    Erased,
    /// The keys could not be reached: worth retrying.
    #[error("the keys are unavailable: {0}")]
    Unavailable(String),
    /// Not a value sealed for this order (tampered with, or copied from another).
    #[error("the sealed value does not open for this order")]
    Invalid,
}

/// Which sensitive field a value is: a value sealed as one never opens as another, so a
/// context allowed to open one (payments, the token; notifications, the address) cannot have
/// the other opened by passing it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    PaymentToken,
    Email,
}

impl Field {
    /// Its name in the event (and in what binds a sealed value to its order).
    pub fn name(self) -> &'static str {
        match self {
            Self::PaymentToken => "payment_token",
            Self::Email => "email",
        }
    }
}

/// Seals a sensitive field's value for its customer and order (orders).
pub trait TokenSealer: Send + Sync {
    fn seal<'a>(
        &'a self,
        customer_id: Uuid,
        order_id: Uuid,
        field: Field,
        value: &'a str,
    ) -> BoxFuture<'a, Result<String, SealingError>>;
}

/// Opens a payment token sealed for `order_id` (payments); a value that was never sealed (an
/// event from before sealing) is given back as it is.
pub trait TokenOpener: Send + Sync {
    fn open<'a>(
        &'a self,
        order_id: Uuid,
        token: &'a str,
    ) -> BoxFuture<'a, Result<String, SealingError>>;
}
