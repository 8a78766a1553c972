//! Short constructors of the domain values tests write again and again.

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
