//! The payments context's commands and their answer.

use domain::payment::PaymentStatus;
use domain::Currency;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{command, info, CommandInfo};

/// Authorises the order's total with the payment provider (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorisePayment {
    pub order_id: Uuid,
    /// Minor units.
    pub amount: i64,
    pub currency: Currency,
    /// The provider's token, sealed with the customer's data key as the order's event holds
    /// it (payments asks orders to open it); it never leaves the write side.
    #[schemars(length(max = 512), extend("writeOnly" = true))]
    pub payment_token: String,
}
command!(
    AuthorisePayment,
    Payments,
    "AuthorisePayment",
    "/payments",
    PaymentAnswer,
    "Authorise a payment (saga-internal)",
    saga_internal
);

/// An amount of an order's payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    pub order_id: Uuid,
    /// Minor units, at most what is authorised and not yet captured.
    pub amount: i64,
    pub currency: Currency,
}
command!(
    CapturePayment,
    Payments,
    "CapturePayment",
    "/payments/{order_id}/capture",
    PaymentAnswer,
    "Capture an authorised payment (saga-internal)",
    saga_internal
);

/// Voids what is authorised and not captured (saga-internal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidPayment {
    pub order_id: Uuid,
}
command!(
    VoidPayment,
    Payments,
    "VoidPayment",
    "/payments/{order_id}/void",
    PaymentAnswer,
    "Void an authorisation (saga-internal)",
    saga_internal
);

/// Refunds captured money.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPayment {
    pub order_id: Uuid,
    /// Minor units, at most what is captured and not yet refunded.
    pub amount: i64,
    pub currency: Currency,
}
command!(
    RefundPayment,
    Payments,
    "RefundPayment",
    "/payments/{order_id}/refund",
    PaymentAnswer,
    "Refund a captured payment",
    public
);

/// Where the payment stands after the command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentAnswer {
    pub payment_status: PaymentStatus,
    /// Minor units authorised, captured and refunded so far.
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
    /// Why the provider declined, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<String>,
}

/// The context's commands.
pub fn commands() -> Vec<CommandInfo> {
    vec![
        info::<AuthorisePayment>(),
        info::<CapturePayment>(),
        info::<VoidPayment>(),
        info::<RefundPayment>(),
    ]
}
