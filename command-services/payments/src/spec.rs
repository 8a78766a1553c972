//! The payment commands: how each is read from a request and what its answer holds.

use chrono::{DateTime, Utc};
use command_kit::spec::{parse_body, CommandSpec, Parsed};
use domain::payment::{Payment, PaymentCommand, PaymentEvent};
use domain::{Currency, Money};
use messaging::BoundedContext;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The payments context's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentsSpec;

/// Command names, as in `cmd.payments.<Command>`.
pub const COMMANDS: &[&str] = &[
    "AuthorisePayment",
    "CapturePayment",
    "VoidPayment",
    "RefundPayment",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthoriseBody {
    order_id: Uuid,
    amount: i64,
    currency: Currency,
    payment_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    order_id: Uuid,
    amount: i64,
    currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderIdBody {
    order_id: Uuid,
}

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
    const CONTEXT: BoundedContext = BoundedContext::Payments;
    const ID_FIELD: &'static str = "order_id";
    const REJECTED_KIND: &'static str = "payment-rejected";

    fn command_names(&self) -> &'static [&'static str] {
        COMMANDS
    }

    fn parse(
        &self,
        name: &str,
        body: Value,
        _now: DateTime<Utc>,
    ) -> Result<Parsed<Payment>, String> {
        Ok(match name {
            "AuthorisePayment" => {
                let b: AuthoriseBody = parse_body(body)?;
                parsed(
                    b.order_id,
                    PaymentCommand::Authorise {
                        order_id: b.order_id,
                        amount: Money::new(b.amount, b.currency),
                        payment_token: b.payment_token,
                    },
                )
            }
            "CapturePayment" => {
                let b: AmountBody = parse_body(body)?;
                parsed(
                    b.order_id,
                    PaymentCommand::Capture {
                        amount: Money::new(b.amount, b.currency),
                    },
                )
            }
            "VoidPayment" => {
                let b: OrderIdBody = parse_body(body)?;
                parsed(b.order_id, PaymentCommand::Void)
            }
            "RefundPayment" => {
                let b: AmountBody = parse_body(body)?;
                parsed(
                    b.order_id,
                    PaymentCommand::Refund {
                        amount: Money::new(b.amount, b.currency),
                    },
                )
            }
            other => return Err(format!("unknown command {other}")),
        })
    }

    /// Every answer says where the payment stands; a decline also why.
    fn reply_data(
        &self,
        _command: &PaymentCommand,
        state: &Payment,
        _events: &[PaymentEvent],
    ) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert(
            "payment_status".into(),
            serde_json::to_value(state.status).unwrap_or(Value::Null),
        );
        let minor = |m: Option<Money>| Value::from(m.map_or(0, |m| m.amount_minor));
        data.insert("authorised".into(), minor(state.authorised));
        data.insert("captured".into(), minor(state.captured));
        data.insert("refunded".into(), minor(state.refunded));
        if let Some(reason) = &state.decline_reason {
            data.insert("decline_reason".into(), Value::from(reason.as_str()));
        }
        data
    }
}
