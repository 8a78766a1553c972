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

/// The payments context's commands, and the provider's webhook beside them.
#[derive(Debug, Clone, Default)]
pub struct PaymentsSpec {
    /// The Stripe webhook's settings; none: the route answers 404.
    pub webhook: Option<crate::webhook::WebhookSettings>,
}

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
    const SERVICE: &'static topology::Service = &topology::PAYMENTS;

    fn bindings() -> Vec<Binding<Self>> {
        vec![
            Binding::new(|b: AuthorisePayment, _| {
                parsed(
                    b.order_id,
                    PaymentCommand::Authorise {
                        order_id: b.order_id,
                        amount: Money::new(b.amount, b.currency),
                        payment_token: b.payment_token,
                        key: None,
                    },
                )
            }),
            Binding::new(|b: CapturePayment, _| {
                parsed(
                    b.order_id,
                    PaymentCommand::Capture {
                        amount: Money::new(b.amount, b.currency),
                        key: None,
                    },
                )
            }),
            Binding::new(|b: VoidPayment, _| {
                parsed(b.order_id, PaymentCommand::Void { key: None })
            }),
            Binding::new(|b: RefundPayment, _| {
                parsed(
                    b.order_id,
                    PaymentCommand::Refund {
                        amount: Money::new(b.amount, b.currency),
                        key: None,
                    },
                )
            }),
        ]
    }

    fn extra_paths() -> Vec<(&'static str, serde_json::Value)> {
        vec![crate::webhook::openapi()]
    }

    /// Stripe's webhook, which the gateway forwards to anyone (the signature is checked).
    fn routes(
        &self,
        dispatcher: std::sync::Arc<command_kit::dispatch::Dispatcher<Self>>,
        pool: sqlx::PgPool,
    ) -> (axum::Router, Vec<(axum::http::Method, String)>) {
        (
            crate::webhook::router(dispatcher, self.webhook.clone(), pool),
            vec![(axum::http::Method::POST, crate::webhook::PATH.to_owned())],
        )
    }

    /// The provider's idempotency keys are made from the request's.
    fn keyed(command: &mut PaymentCommand, key: &str) {
        command.set_key(key.to_owned());
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
