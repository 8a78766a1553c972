//! The bridge between saga steps and the contexts' contracts: which command to send for a
//! step, and what a reply or an event means for it.

use contracts::inventory::{CommitStock, ReleaseStock, ReserveStock, RestockProduct, StockAnswer};
use contracts::orders::{ConfirmOrder, PriceLine, PriceOrder, RejectOrder};
use contracts::payments::{
    AuthorisePayment, CapturePayment, PaymentAnswer, RefundPayment, VoidPayment,
};
use contracts::{decode, Command, NatsCommand, Reply};
use domain::order::{OrderEvent, RejectionReason};
use domain::payment::{PaymentEvent, PaymentStatus};
use domain::product::ProductEvent;
use domain::saga::{CompensationReason, OrderSaga, Step, StepResult};
use domain::{Money, Sku};
use messaging::{BoundedContext, Envelope};
use serde::de::IgnoredAny;
use uuid::Uuid;

/// A command to send for a step: where, and the NATS request body (with its command id).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub context: BoundedContext,
    pub name: &'static str,
    pub body: Vec<u8>,
}

fn quantity(saga: &OrderSaga, sku: &Sku) -> u32 {
    saga.lines
        .iter()
        .find(|l| &l.sku == sku)
        .map_or(0, |l| l.quantity)
}

/// The context whose service takes `step`'s command.
pub fn target(step: &Step) -> BoundedContext {
    match step {
        Step::Reserve(_) | Step::Commit(_) | Step::Release(_) | Step::Restock(_) => {
            BoundedContext::Inventory
        }
        Step::Price | Step::Confirm | Step::Reject => BoundedContext::Orders,
        Step::Authorise | Step::Capture | Step::Void | Step::Refund => BoundedContext::Payments,
    }
}

/// `command` as the NATS request of this saga's `step`, under the id its attempt recorded
/// (`None` before the step's first attempt).
fn outgoing<C: Command>(saga: &OrderSaga, step: &Step, command: C) -> Option<Outgoing> {
    let command_id = saga.command_id(step)?.to_string();
    let body = serde_json::to_vec(&NatsCommand {
        command_id: &command_id,
        command: &command,
    })
    .expect("contract requests serialise");
    Some(Outgoing {
        context: C::CONTEXT,
        name: C::NAME,
        body,
    })
}

/// The command of `step` for this saga; `None` when the saga lacks what it needs (no total,
/// or no recorded attempt).
pub fn command_for(saga: &OrderSaga, step: &Step) -> Option<Outgoing> {
    let order_id = saga.order_id?;
    match step {
        Step::Reserve(sku) => outgoing(
            saga,
            step,
            ReserveStock {
                sku: sku.clone(),
                order_id,
                quantity: quantity(saga, sku),
                // Counted against the product's per-customer limit.
                customer_id: saga.customer_id,
            },
        ),
        Step::Commit(sku) => outgoing(
            saga,
            step,
            CommitStock {
                sku: sku.clone(),
                order_id,
            },
        ),
        Step::Release(sku) => outgoing(
            saga,
            step,
            ReleaseStock {
                sku: sku.clone(),
                order_id,
            },
        ),
        Step::Restock(sku) => outgoing(
            saga,
            step,
            RestockProduct {
                sku: sku.clone(),
                quantity: quantity(saga, sku),
            },
        ),
        Step::Price => {
            let lines = saga
                .unit_prices()
                .into_iter()
                .map(|(sku, price)| PriceLine {
                    sku,
                    unit_price: price.amount_minor,
                    currency: price.currency,
                })
                .collect();
            outgoing(saga, step, PriceOrder { order_id, lines })
        }
        Step::Authorise => {
            let total = saga.total()?;
            outgoing(
                saga,
                step,
                AuthorisePayment {
                    order_id,
                    amount: total.amount_minor,
                    currency: total.currency,
                    payment_token: saga.payment_token.clone().unwrap_or_default(),
                },
            )
        }
        Step::Capture => {
            let total = saga.total()?;
            outgoing(
                saga,
                step,
                CapturePayment {
                    order_id,
                    amount: total.amount_minor,
                    currency: total.currency,
                },
            )
        }
        Step::Refund => {
            let total = saga.total()?;
            outgoing(
                saga,
                step,
                RefundPayment {
                    order_id,
                    amount: total.amount_minor,
                    currency: total.currency,
                },
            )
        }
        Step::Void => outgoing(saga, step, VoidPayment { order_id }),
        Step::Confirm => outgoing(saga, step, ConfirmOrder { order_id }),
        Step::Reject => {
            let reason = match saga.compensation {
                Some(CompensationReason::Rejected(r)) => r,
                _ => RejectionReason::Failed,
            };
            outgoing(
                saga,
                step,
                RejectOrder {
                    order_id,
                    reason,
                    detail: format!("{reason:?}"),
                    skus: saga.out_of_stock.clone(),
                },
            )
        }
    }
}

/// A reply as the typed reply of the step's command.
fn read<D: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<Reply<D>, String> {
    serde_json::from_slice(payload).map_err(|e| format!("unreadable reply: {e}"))
}

/// What a reply means for the step: a result, or a failure worth retrying (`Err`).
pub fn reply_outcome(step: &Step, payload: &[u8]) -> Result<StepResult, String> {
    match step {
        Step::Reserve(_) => match read::<<ReserveStock as Command>::Answer>(payload)? {
            Reply::Accepted { data, .. } => Ok(reserved(&data)),
            Reply::Rejected {
                reason, retryable, ..
            } => rejection(step, reason, retryable),
        },
        Step::Authorise => match read::<<AuthorisePayment as Command>::Answer>(payload)? {
            Reply::Accepted { data, .. } => Ok(authorised(data)),
            Reply::Rejected {
                reason, retryable, ..
            } => rejection(step, reason, retryable),
        },
        // The other steps only need to know that the command was accepted.
        _ => match read::<IgnoredAny>(payload)? {
            Reply::Accepted { .. } => Ok(StepResult::Done),
            Reply::Rejected {
                reason, retryable, ..
            } => rejection(step, reason, retryable),
        },
    }
}

fn reserved(answer: &StockAnswer) -> StepResult {
    match (answer.unit_price, answer.currency) {
        (Some(amount), Some(currency)) => StepResult::Reserved {
            unit_price: Money::new(amount, currency),
        },
        _ => StepResult::Refused {
            reason: "reservation answer without a price".into(),
        },
    }
}

fn authorised(answer: PaymentAnswer) -> StepResult {
    if answer.payment_status == PaymentStatus::Declined {
        StepResult::Declined {
            reason: answer.decline_reason.unwrap_or_else(|| "declined".into()),
        }
    } else {
        StepResult::Authorised
    }
}

/// A rejected reply: a retryable one is a failure, any other a result of the step.
fn rejection(step: &Step, reason: String, retryable: bool) -> Result<StepResult, String> {
    if retryable {
        return Err(reason);
    }
    Ok(match (step, reason.as_str()) {
        (Step::Reserve(_), "out_of_stock") => StepResult::OutOfStock,
        // The order is already closed (cancelled, say): nothing left to reject.
        (Step::Reject, "invalid_transition") => StepResult::Done,
        _ => StepResult::Refused { reason },
    })
}

/// What an event from a context's stream means for a saga: its order id and the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start(domain::order::OrderPlaced),
    Cancel,
    Completed(Step, StepResult),
}

/// Maps an event to the saga it concerns; `None` for events no saga waits for (or that do
/// not decode, which no saga could act on).
pub fn input_of(envelope: &Envelope) -> Option<(Uuid, Input)> {
    let (context, _, _) = envelope.type_parts().ok()?;
    let done =
        |order_id: Uuid, step: Step| Some((order_id, Input::Completed(step, StepResult::Done)));
    match context.parse::<BoundedContext>().ok()? {
        BoundedContext::Orders => match decode::<OrderEvent>(envelope).ok()? {
            OrderEvent::OrderPlaced(placed) => Some((placed.order_id, Input::Start(placed))),
            OrderEvent::OrderCancelled { order_id, .. } => Some((order_id, Input::Cancel)),
            OrderEvent::OrderPriced { order_id, .. } => done(order_id, Step::Price),
            OrderEvent::OrderConfirmed { order_id, .. } => done(order_id, Step::Confirm),
            OrderEvent::OrderRejected { order_id, .. } => done(order_id, Step::Reject),
        },
        BoundedContext::Inventory => match decode::<ProductEvent>(envelope).ok()? {
            ProductEvent::StockReserved {
                sku,
                order_id,
                unit_price,
                ..
            } => Some((
                order_id,
                Input::Completed(Step::Reserve(sku), StepResult::Reserved { unit_price }),
            )),
            ProductEvent::ReservationCommitted { sku, order_id, .. } => {
                done(order_id, Step::Commit(sku))
            }
            ProductEvent::ReservationReleased { sku, order_id, .. } => {
                done(order_id, Step::Release(sku))
            }
            _ => None,
        },
        BoundedContext::Payments => match decode::<PaymentEvent>(envelope).ok()? {
            PaymentEvent::PaymentAuthorised { order_id, .. } => Some((
                order_id,
                Input::Completed(Step::Authorise, StepResult::Authorised),
            )),
            PaymentEvent::PaymentDeclined {
                order_id, reason, ..
            } => Some((
                order_id,
                Input::Completed(Step::Authorise, StepResult::Declined { reason }),
            )),
            PaymentEvent::PaymentCaptured { order_id, .. } => done(order_id, Step::Capture),
            PaymentEvent::PaymentVoided { order_id, .. } => done(order_id, Step::Void),
            PaymentEvent::PaymentRefunded { order_id, .. } => done(order_id, Step::Refund),
        },
        BoundedContext::Sagas => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::inventory::StockAnswer;

    fn reserve() -> Step {
        Step::Reserve(Sku::parse("SKU-1").unwrap())
    }

    fn reply<D: serde::Serialize>(reply: &Reply<D>) -> Vec<u8> {
        serde_json::to_vec(reply).unwrap()
    }

    #[test]
    fn an_unreadable_reply_is_a_failure_to_retry() {
        assert!(reply_outcome(&reserve(), b"not json").is_err());
        assert!(reply_outcome(&reserve(), br#"{"status":"accepted"}"#).is_err());
        assert!(reply_outcome(&Step::Confirm, br#"{"status":"maybe"}"#).is_err());
    }

    #[test]
    fn rejections_are_results_unless_retryable() {
        let rejected =
            |reason: &str, retryable| reply(&Reply::<StockAnswer>::rejected(reason, "", retryable));
        assert_eq!(
            reply_outcome(&reserve(), &rejected("out_of_stock", false)),
            Ok(StepResult::OutOfStock)
        );
        assert_eq!(
            reply_outcome(&reserve(), &rejected("unavailable", true)),
            Err("unavailable".into())
        );
        assert_eq!(
            reply_outcome(&Step::Reject, &rejected("invalid_transition", false)),
            Ok(StepResult::Done)
        );
    }

    #[test]
    fn a_reservation_answers_with_its_unit_price() {
        let eur = domain::Currency::parse("EUR").unwrap();
        let accepted = Reply::Accepted {
            aggregate_id: "SKU-1".into(),
            version: 2,
            data: StockAnswer {
                on_hand: 10,
                reserved: 2,
                available: 8,
                quantity: Some(2),
                unit_price: Some(1250),
                currency: Some(eur),
                reservation: None,
            },
            replayed: false,
        };
        assert_eq!(
            reply_outcome(&reserve(), &reply(&accepted)),
            Ok(StepResult::Reserved {
                unit_price: Money::new(1250, eur)
            })
        );
    }
}
