//! The bridge between saga steps and the contexts' commands: what to send for a step, and
//! what a reply or an event means for it.

use domain::order::RejectionReason;
use domain::saga::{CompensationReason, OrderSaga, Step, StepResult};
use domain::{Currency, Money, Sku};
use messaging::{BoundedContext, Envelope};
use serde_json::{json, Value};
use uuid::Uuid;

/// A command to send for a step.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub context: BoundedContext,
    pub name: &'static str,
    pub body: Value,
}

fn quantity(saga: &OrderSaga, sku: &Sku) -> u32 {
    saga.lines
        .iter()
        .find(|l| &l.sku == sku)
        .map_or(0, |l| l.quantity)
}

/// The command of `step` for this saga; `None` when the saga lacks what it needs (no total).
pub fn command_for(saga: &OrderSaga, step: &Step) -> Option<Outgoing> {
    let order_id = saga.order_id?;
    let (context, name, body) = match step {
        Step::Reserve(sku) => (
            BoundedContext::Inventory,
            "ReserveStock",
            json!({"sku": sku, "order_id": order_id, "quantity": quantity(saga, sku)}),
        ),
        Step::Commit(sku) => (
            BoundedContext::Inventory,
            "CommitStock",
            json!({"sku": sku, "order_id": order_id}),
        ),
        Step::Release(sku) => (
            BoundedContext::Inventory,
            "ReleaseStock",
            json!({"sku": sku, "order_id": order_id}),
        ),
        Step::Restock(sku) => (
            BoundedContext::Inventory,
            "RestockProduct",
            json!({"sku": sku, "quantity": quantity(saga, sku)}),
        ),
        Step::Price => {
            let lines: Vec<Value> = saga
                .unit_prices()
                .into_iter()
                .map(|(sku, price)| {
                    json!({"sku": sku, "unit_price": price.amount_minor, "currency": price.currency})
                })
                .collect();
            (
                BoundedContext::Orders,
                "PriceOrder",
                json!({"order_id": order_id, "lines": lines}),
            )
        }
        Step::Authorise => {
            let total = saga.total()?;
            (
                BoundedContext::Payments,
                "AuthorisePayment",
                json!({"order_id": order_id, "amount": total.amount_minor, "currency": total.currency,
                       "payment_token": saga.payment_token.clone().unwrap_or_default()}),
            )
        }
        Step::Capture | Step::Refund => {
            let total = saga.total()?;
            let name = if *step == Step::Capture {
                "CapturePayment"
            } else {
                "RefundPayment"
            };
            (
                BoundedContext::Payments,
                name,
                json!({"order_id": order_id, "amount": total.amount_minor, "currency": total.currency}),
            )
        }
        Step::Void => (
            BoundedContext::Payments,
            "VoidPayment",
            json!({"order_id": order_id}),
        ),
        Step::Confirm => (
            BoundedContext::Orders,
            "ConfirmOrder",
            json!({"order_id": order_id}),
        ),
        Step::Reject => {
            let reason = match saga.compensation {
                Some(CompensationReason::Rejected(r)) => r,
                _ => RejectionReason::Failed,
            };
            let skus: Vec<&Sku> = saga
                .lines
                .iter()
                .filter(|l| {
                    matches!(
                        saga.steps
                            .get(&Step::Reserve(l.sku.clone()))
                            .and_then(|s| s.result.as_ref()),
                        Some(StepResult::OutOfStock)
                    )
                })
                .map(|l| &l.sku)
                .collect();
            (
                BoundedContext::Orders,
                "RejectOrder",
                json!({"order_id": order_id, "reason": reason, "skus": skus,
                       "detail": format!("{reason:?}")}),
            )
        }
    };
    Some(Outgoing {
        context,
        name,
        body,
    })
}

/// What a reply means for the step: a result, or a failure worth retrying (`Err`).
pub fn reply_outcome(step: &Step, reply: &Value) -> Result<StepResult, String> {
    let reason = reply["reason"].as_str().unwrap_or("unknown").to_owned();
    match reply["status"].as_str() {
        Some("accepted") => Ok(accepted(step, &reply["data"])),
        Some("rejected") if reply["retryable"].as_bool() == Some(true) => Err(reason),
        Some("rejected") => Ok(match (step, reason.as_str()) {
            (Step::Reserve(_), "out_of_stock") => StepResult::OutOfStock,
            // The order is already closed (cancelled, say): nothing left to reject.
            (Step::Reject, "invalid_transition") => StepResult::Done,
            _ => StepResult::Refused { reason },
        }),
        _ => Err(format!("unreadable reply: {reply}")),
    }
}

fn accepted(step: &Step, data: &Value) -> StepResult {
    match step {
        Step::Reserve(_) => {
            let currency = data["currency"]
                .as_str()
                .and_then(|c| Currency::parse(c).ok());
            match (data["unit_price"].as_i64(), currency) {
                (Some(amount), Some(currency)) => StepResult::Reserved {
                    unit_price: Money::new(amount, currency),
                },
                _ => StepResult::Refused {
                    reason: "reservation answer without a price".into(),
                },
            }
        }
        Step::Authorise if data["payment_status"] == "declined" => StepResult::Declined {
            reason: data["decline_reason"]
                .as_str()
                .unwrap_or("declined")
                .to_owned(),
        },
        Step::Authorise => StepResult::Authorised,
        _ => StepResult::Done,
    }
}

/// What an event from a context's stream means for a saga: its order id and the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start(domain::order::OrderPlaced),
    Cancel,
    Completed(Step, StepResult),
}

/// Maps an event to the saga it concerns; `None` for events no saga waits for.
pub fn input_of(envelope: &Envelope) -> Option<(Uuid, Input)> {
    let data = &envelope.data;
    let order_id = || {
        data["order_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    let sku = || data["sku"].as_str().and_then(|s| Sku::parse(s).ok());
    let done = |step: Step| Some((order_id()?, Input::Completed(step, StepResult::Done)));
    match envelope.name() {
        "OrderPlaced" => {
            let upgraded = if envelope.version() == 1 {
                domain::order::order_placed_v1_to_v2(data.clone())
            } else {
                data.clone()
            };
            let placed: domain::order::OrderPlaced = serde_json::from_value(upgraded).ok()?;
            Some((placed.order_id, Input::Start(placed)))
        }
        "OrderCancelled" => Some((order_id()?, Input::Cancel)),
        "OrderPriced" => done(Step::Price),
        "OrderConfirmed" => done(Step::Confirm),
        "OrderRejected" => done(Step::Reject),
        "StockReserved" => {
            let unit_price: Money = serde_json::from_value(data["unit_price"].clone()).ok()?;
            Some((
                order_id()?,
                Input::Completed(Step::Reserve(sku()?), StepResult::Reserved { unit_price }),
            ))
        }
        "ReservationCommitted" => done(Step::Commit(sku()?)),
        "ReservationReleased" => done(Step::Release(sku()?)),
        "PaymentAuthorised" => Some((
            order_id()?,
            Input::Completed(Step::Authorise, StepResult::Authorised),
        )),
        "PaymentDeclined" => Some((
            order_id()?,
            Input::Completed(
                Step::Authorise,
                StepResult::Declined {
                    reason: data["reason"].as_str().unwrap_or("declined").to_owned(),
                },
            ),
        )),
        "PaymentCaptured" => done(Step::Capture),
        "PaymentVoided" => done(Step::Void),
        "PaymentRefunded" => done(Step::Refund),
        _ => None,
    }
}
