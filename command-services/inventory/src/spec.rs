//! The product commands: how each is read from a request and what its answer holds.

use chrono::{DateTime, Utc};
use command_kit::spec::{parse_body, CommandSpec, Parsed};
use domain::product::{Product, ProductCommand, ProductEvent};
use domain::{Currency, Money, Sku};
use messaging::BoundedContext;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The inventory context's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct InventorySpec;

/// Command names, as in `cmd.inventory.<Command>`.
pub const COMMANDS: &[&str] = &[
    "CreateProduct",
    "RestockProduct",
    "ChangePrice",
    "ReserveStock",
    "ReleaseStock",
    "CommitStock",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    sku: Sku,
    name: String,
    unit_price: i64,
    currency: Currency,
    initial_stock: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockBody {
    sku: Sku,
    quantity: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    sku: Sku,
    unit_price: i64,
    currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    sku: Sku,
    order_id: Uuid,
    quantity: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationBody {
    sku: Sku,
    order_id: Uuid,
}

fn parsed(sku: Sku, correlation: String, command: ProductCommand) -> Parsed<Product> {
    Parsed {
        aggregate_id: sku.to_string(),
        command,
        correlation_id: correlation,
        new_aggregate: false,
    }
}

impl CommandSpec for InventorySpec {
    type Aggregate = Product;
    const CONTEXT: BoundedContext = BoundedContext::Inventory;
    const ID_FIELD: &'static str = "sku";
    const REJECTED_KIND: &'static str = "product-rejected";

    fn command_names(&self) -> &'static [&'static str] {
        COMMANDS
    }

    fn parse(
        &self,
        name: &str,
        body: Value,
        _now: DateTime<Utc>,
    ) -> Result<Parsed<Product>, String> {
        Ok(match name {
            "CreateProduct" => {
                let b: CreateBody = parse_body(body)?;
                let correlation = b.sku.to_string();
                parsed(
                    b.sku.clone(),
                    correlation,
                    ProductCommand::Create {
                        sku: b.sku,
                        name: b.name,
                        unit_price: Money::new(b.unit_price, b.currency),
                        initial_stock: b.initial_stock,
                    },
                )
            }
            "RestockProduct" => {
                let b: RestockBody = parse_body(body)?;
                let correlation = b.sku.to_string();
                parsed(
                    b.sku,
                    correlation,
                    ProductCommand::Restock {
                        quantity: b.quantity,
                    },
                )
            }
            "ChangePrice" => {
                let b: PriceBody = parse_body(body)?;
                let correlation = b.sku.to_string();
                parsed(
                    b.sku,
                    correlation,
                    ProductCommand::ChangePrice {
                        unit_price: Money::new(b.unit_price, b.currency),
                    },
                )
            }
            "ReserveStock" => {
                let b: ReserveBody = parse_body(body)?;
                parsed(
                    b.sku,
                    b.order_id.to_string(),
                    ProductCommand::Reserve {
                        order_id: b.order_id,
                        quantity: b.quantity,
                    },
                )
            }
            "ReleaseStock" => {
                let b: ReservationBody = parse_body(body)?;
                parsed(
                    b.sku,
                    b.order_id.to_string(),
                    ProductCommand::Release {
                        order_id: b.order_id,
                    },
                )
            }
            "CommitStock" => {
                let b: ReservationBody = parse_body(body)?;
                parsed(
                    b.sku,
                    b.order_id.to_string(),
                    ProductCommand::Commit {
                        order_id: b.order_id,
                    },
                )
            }
            other => return Err(format!("unknown command {other}")),
        })
    }

    /// Every answer carries the stock figures; a reservation also its unit price.
    fn reply_data(
        &self,
        command: &ProductCommand,
        state: &Product,
        _events: &[ProductEvent],
    ) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("on_hand".into(), Value::from(state.on_hand));
        data.insert("reserved".into(), Value::from(state.reserved));
        data.insert("available".into(), Value::from(state.available()));
        let order_id = match command {
            ProductCommand::Reserve { order_id, .. }
            | ProductCommand::Release { order_id }
            | ProductCommand::Commit { order_id } => Some(order_id),
            _ => None,
        };
        if let Some(reservation) = order_id.and_then(|id| state.reservations.get(id)) {
            data.insert("quantity".into(), Value::from(reservation.quantity));
            data.insert(
                "unit_price".into(),
                Value::from(reservation.unit_price.amount_minor),
            );
            data.insert(
                "currency".into(),
                Value::from(reservation.unit_price.currency.as_str()),
            );
            data.insert(
                "reservation".into(),
                serde_json::to_value(reservation.state).unwrap_or(Value::Null),
            );
        } else if let Some(price) = state.unit_price {
            data.insert("unit_price".into(), Value::from(price.amount_minor));
            data.insert("currency".into(), Value::from(price.currency.as_str()));
        }
        data
    }
}
