//! The payment commands: how each request of the payments contract becomes a
//! `PaymentCommand`, and what an answer holds.

use command_kit::spec::{Binding, CommandSpec, Parsed};
use contracts::payments::{
    AuthorisePayment, CapturePayment, PaymentAnswer, RefundPayment, VoidPayment,
};
use domain::payment::{Payment, PaymentCommand, PaymentEvent};
use domain::Money;
use messaging::BoundedContext;
use runtime::service::Defaults;
use uuid::Uuid;

/// The payments context's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentsSpec;

/// A command on the payment of `order_id`, correlated with the order.
fn parsed(order_id: Uuid, command: PaymentCommand) -> Parsed<Payment> {
    command_kit::parsed(order_id, order_id, command)
}

impl CommandSpec for PaymentsSpec {
    type Aggregate = Payment;
    type Answer = PaymentAnswer;
    const CONTEXT: BoundedContext = BoundedContext::Payments;
    const ID_FIELD: &'static str = "order_id";
    const REJECTED_KIND: &'static str = "payment-rejected";
    const DEFAULTS: Defaults = Defaults {
        name: "payments",
        port: 8083,
        database_url: "postgres://payments@127.0.0.1:25432/payments",
        max_connections: 10,
    };

    fn bindings() -> Vec<Binding<Self>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_of_the_contract_is_bound_once() {
        command_kit::spec::binds_its_contract::<PaymentsSpec>().unwrap();
    }
}
