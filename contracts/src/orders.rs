//! The orders context's commands and their answer.

use domain::order::{OrderLine, OrderStatus, RejectionReason};
use domain::{Currency, Sku};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{command, info, CommandInfo};

/// Places an order for the customer; the service chooses the order id (UUID v7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_id: Uuid,
    /// 1 to 100 lines, each with a distinct SKU and a quantity from 1 to 1000.
    #[schemars(length(max = 100))]
    pub lines: Vec<OrderLine>,
    /// The payment provider's token; it never leaves the write side.
    #[schemars(length(max = 64), extend("writeOnly" = true))]
    pub payment_token: String,
    /// The customer's address for the order's emails (behind the gateway, the `email` claim
    /// of their token); sealed with their data key before it is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254), extend("writeOnly" = true))]
    pub email: Option<String>,
}
command!(
    PlaceOrder,
    Orders,
    "PlaceOrder",
    "/orders",
    OrderAnswer,
    "Place an order",
    public
);

/// Inventory's unit price of one SKU of the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceLine {
    pub sku: Sku,
    /// Minor units.
    pub unit_price: i64,
    pub currency: Currency,
}

/// Prices every line of a placed order (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceOrder {
    pub order_id: Uuid,
    #[schemars(length(max = 100))]
    pub lines: Vec<PriceLine>,
}
command!(
    PriceOrder,
    Orders,
    "PriceOrder",
    "/orders/{order_id}/price",
    OrderAnswer,
    "Price a placed order with inventory's unit prices (saga-internal)",
    saga_internal
);

/// Confirms a priced order once stock is committed and payment captured (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmOrder {
    pub order_id: Uuid,
}
command!(
    ConfirmOrder,
    Orders,
    "ConfirmOrder",
    "/orders/{order_id}/confirm",
    OrderAnswer,
    "Confirm a priced order (saga-internal)",
    saga_internal
);

/// Rejects an order that cannot be fulfilled (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectOrder {
    pub order_id: Uuid,
    pub reason: RejectionReason,
    /// At most 1,000 characters.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub detail: String,
    /// The SKUs that were out of stock, when that is the reason.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub skus: Vec<Sku>,
}
command!(
    RejectOrder,
    Orders,
    "RejectOrder",
    "/orders/{order_id}/reject",
    OrderAnswer,
    "Reject an order with a reason (saga-internal)",
    saga_internal
);

/// Cancels an order before it is confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    pub order_id: Uuid,
}
command!(
    CancelOrder,
    Orders,
    "CancelOrder",
    "/orders/{order_id}/cancel",
    OrderAnswer,
    "Cancel an order before confirmation",
    public
);

/// Where the order stands after the command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderAnswer {
    pub status: OrderStatus,
    /// The order's total in minor units, once priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
}

/// The context's commands.
pub fn commands() -> Vec<CommandInfo> {
    vec![
        info::<PlaceOrder>(),
        info::<PriceOrder>(),
        info::<ConfirmOrder>(),
        info::<RejectOrder>(),
        info::<CancelOrder>(),
    ]
}
