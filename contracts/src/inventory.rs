//! The inventory context's commands and their answer.

use domain::product::ReservationState;
use domain::{Currency, Sku};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{command, info, CommandInfo};

/// Adds a product to the catalog with its price and initial stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub sku: Sku,
    #[schemars(length(max = 200))]
    pub name: String,
    /// Minor units.
    pub unit_price: i64,
    pub currency: Currency,
    #[schemars(range(max = 1_000_000))]
    pub initial_stock: u32,
}
command!(
    CreateProduct,
    Inventory,
    "CreateProduct",
    "/products",
    StockAnswer,
    "Create a product",
    public
);

/// Adds units to a product's stock on hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockProduct {
    pub sku: Sku,
    #[schemars(range(max = 1_000_000))]
    pub quantity: u32,
}
command!(
    RestockProduct,
    Inventory,
    "RestockProduct",
    "/products/{sku}/restock",
    StockAnswer,
    "Restock a product",
    public
);

/// Changes a product's unit price (same currency).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    pub sku: Sku,
    /// Minor units.
    pub unit_price: i64,
    pub currency: Currency,
}
command!(
    ChangePrice,
    Inventory,
    "ChangePrice",
    "/products/{sku}/price",
    StockAnswer,
    "Change a product's unit price",
    public
);

/// Reserves units for an order; the answer carries the unit price (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveStock {
    pub sku: Sku,
    pub order_id: Uuid,
    /// As an order line's: 1 to 1000.
    #[schemars(range(max = 1000))]
    pub quantity: u32,
    /// The customer the order is for: counted against the product's per-customer limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
}
command!(
    ReserveStock,
    Inventory,
    "ReserveStock",
    "/products/{sku}/reservations",
    StockAnswer,
    "Reserve stock for an order (saga-internal)",
    saga_internal
);

/// Sets how many units one customer's live reservations of a product may hold, for a flash
/// sale (`limit: null` lifts it). A reservation past it is refused (`customer_limit`), and
/// the order is rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCustomerLimit {
    pub sku: Sku,
    #[schemars(range(min = 1, max = 1_000_000))]
    pub limit: Option<u32>,
}
command!(
    SetCustomerLimit,
    Inventory,
    "SetCustomerLimit",
    "/products/{sku}/customer-limit",
    StockAnswer,
    "Limit the units one customer may hold of a product",
    public
);

/// Releases an order's reservation (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseStock {
    pub sku: Sku,
    pub order_id: Uuid,
}
command!(
    ReleaseStock,
    Inventory,
    "ReleaseStock",
    "/products/{sku}/reservations/{order_id}/release",
    StockAnswer,
    "Release an order's reservation (saga-internal)",
    saga_internal
);

/// Commits an order's reservation: the units leave stock (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitStock {
    pub sku: Sku,
    pub order_id: Uuid,
}
command!(
    CommitStock,
    Inventory,
    "CommitStock",
    "/products/{sku}/reservations/{order_id}/commit",
    StockAnswer,
    "Commit an order's reservation (saga-internal)",
    saga_internal
);

/// The product's stock after the command; for a reservation command also that order's
/// reservation, otherwise the current price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StockAnswer {
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
    /// The reserved quantity (reservation commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// Minor units: the reservation's unit price, or the product's current price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationState>,
}

/// The context's commands.
pub fn commands() -> Vec<CommandInfo> {
    vec![
        info::<CreateProduct>(),
        info::<RestockProduct>(),
        info::<ChangePrice>(),
        info::<SetCustomerLimit>(),
        info::<ReserveStock>(),
        info::<ReleaseStock>(),
        info::<CommitStock>(),
    ]
}
