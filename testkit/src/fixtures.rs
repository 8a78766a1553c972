//! Short constructors of the domain values (and command metadata) tests write again and again.

use domain::order::OrderLine;
use domain::{Currency, Sku};

/// A SKU the test knows is valid.
pub fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Euros.
pub fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is a currency")
}

/// An order line.
pub fn line(s: &str, quantity: u32) -> OrderLine {
    OrderLine {
        sku: sku(s),
        quantity,
    }
}

/// The metadata of a command sent straight to a command bus: a fresh command id and trace, no
/// idempotency key.
pub fn metadata() -> event_store::CommandMetadata {
    event_store::CommandMetadata {
        command_id: uuid::Uuid::now_v7(),
        correlation_id: "c".into(),
        traceparent: service_kit::trace::new_traceparent(),
        idempotency: None,
    }
}
