//! The order commands: how each is read from a request and what its answer holds.

use chrono::{DateTime, Utc};
use command_kit::spec::{parse_body, CommandSpec, Parsed};
use domain::order::{Order, OrderCommand, OrderEvent, OrderLine, PlaceOrder, RejectionReason};
use domain::{Currency, Money, Sku};
use messaging::BoundedContext;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The orders context's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersSpec;

/// Command names, as in `cmd.orders.<Command>`.
pub const COMMANDS: &[&str] = &[
    "PlaceOrder",
    "PriceOrder",
    "ConfirmOrder",
    "RejectOrder",
    "CancelOrder",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    customer_id: Uuid,
    lines: Vec<OrderLine>,
    payment_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceLine {
    sku: Sku,
    unit_price: i64,
    currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    order_id: Uuid,
    lines: Vec<PriceLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderIdBody {
    order_id: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    order_id: Uuid,
    reason: RejectionReason,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    skus: Vec<Sku>,
}

fn parsed(order_id: Uuid, command: OrderCommand) -> Parsed<Order> {
    Parsed {
        aggregate_id: order_id.to_string(),
        new_aggregate: matches!(command, OrderCommand::Place(_)),
        command,
        correlation_id: order_id.to_string(),
    }
}

impl CommandSpec for OrdersSpec {
    type Aggregate = Order;
    const CONTEXT: BoundedContext = BoundedContext::Orders;
    const ID_FIELD: &'static str = "order_id";
    const REJECTED_KIND: &'static str = "order-rejected";

    fn command_names(&self) -> &'static [&'static str] {
        COMMANDS
    }

    fn parse(&self, name: &str, body: Value, now: DateTime<Utc>) -> Result<Parsed<Order>, String> {
        Ok(match name {
            "PlaceOrder" => {
                let b: PlaceBody = parse_body(body)?;
                let order_id = Uuid::now_v7();
                parsed(
                    order_id,
                    OrderCommand::Place(PlaceOrder {
                        order_id,
                        customer_id: b.customer_id,
                        lines: b.lines,
                        payment_token: b.payment_token,
                        placed_at: now,
                    }),
                )
            }
            "PriceOrder" => {
                let b: PriceBody = parse_body(body)?;
                let unit_prices = b
                    .lines
                    .into_iter()
                    .map(|l| (l.sku, Money::new(l.unit_price, l.currency)))
                    .collect();
                parsed(b.order_id, OrderCommand::Price { unit_prices })
            }
            "ConfirmOrder" => {
                let b: OrderIdBody = parse_body(body)?;
                parsed(b.order_id, OrderCommand::Confirm)
            }
            "RejectOrder" => {
                let b: RejectBody = parse_body(body)?;
                parsed(
                    b.order_id,
                    OrderCommand::Reject {
                        reason: b.reason,
                        detail: b.detail,
                        skus: b.skus,
                    },
                )
            }
            "CancelOrder" => {
                let b: OrderIdBody = parse_body(body)?;
                parsed(b.order_id, OrderCommand::Cancel { cancelled_at: now })
            }
            other => return Err(format!("unknown command {other}")),
        })
    }

    fn reply_data(
        &self,
        _command: &OrderCommand,
        state: &Order,
        _events: &[OrderEvent],
    ) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert(
            "status".into(),
            serde_json::to_value(state.status).unwrap_or(Value::Null),
        );
        if let Some(total) = state.total {
            data.insert("total".into(), Value::from(total.amount_minor));
            data.insert("currency".into(), Value::from(total.currency.as_str()));
        }
        data
    }
}
