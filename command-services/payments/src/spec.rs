//! The payment commands: how each request of the payments contract becomes a
//! `PaymentCommand`, and what an answer holds.

use command_kit::spec::{Binding, CommandSpec, Parsed};
use contracts::payments::{
    AuthorisePayment, CapturePayment, PaymentAnswer, RefundPayment, VoidPayment,
};
use domain::payment::{Payment, PaymentCommand, PaymentEvent};
use domain::Money;
use messaging::BoundedContext;
use uuid::Uuid;

/// The payments context's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentsSpec;

fn parsed(order_id: Uuid, command: PaymentCommand) -> Parsed<Payment> {
    Parsed {
        aggregate_id: order_id.to_string(),
        command,
        correlation_id: order_id.to_string(),
        new_aggregate: false,
    }
}

impl CommandSpec for PaymentsSpec {
    type Aggregate = Payment;
    type Answer = PaymentAnswer;
    const CONTEXT: BoundedContext = BoundedContext::Payments;
    const ID_FIELD: &'static str = "order_id";
    const REJECTED_KIND: &'static str = "payment-rejected";

    fn bindings() -> Vec<Binding<Payment>> {
        vec![
            Binding::new(|b: AuthorisePayment, _| {
                parsed(
                    b.order_id,
                    PaymentCommand::Authorise {
                        order_id: b.order_id,
                        amount: Money::new(b.amount, b.currency),
                        payment_token: b.payment_token,
                    },
                )
            }),
            Binding::new(|b: CapturePayment, _| {
                parsed(
                    b.order_id,
                    PaymentCommand::Capture {
                        amount: Money::new(b.amount, b.currency),
                    },
                )
            }),
            Binding::new(|b: VoidPayment, _| parsed(b.order_id, PaymentCommand::Void)),
            Binding::new(|b: RefundPayment, _| {
                parsed(
                    b.order_id,
                    PaymentCommand::Refund {
                        amount: Money::new(b.amount, b.currency),
                    },
                )
            }),
        ]
    }

    /// Every answer says where the payment stands; a decline also why.
    fn answer(
        &self,
        _command: &PaymentCommand,
        state: &Payment,
        _events: &[PaymentEvent],
    ) -> PaymentAnswer {
        let minor = |m: Option<Money>| m.map_or(0, |m| m.amount_minor);
        PaymentAnswer {
            payment_status: state.status,
            authorised: minor(state.authorised),
            captured: minor(state.captured),
            refunded: minor(state.refunded),
            decline_reason: state.decline_reason.clone(),
        }
    }
}
