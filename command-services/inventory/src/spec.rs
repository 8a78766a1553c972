//! The product commands: how each request of the inventory contract becomes a
//! `ProductCommand`, and what an answer holds.

use command_kit::spec::{parsed, Binding, CommandSpec, Parsed};
use contracts::inventory::{
    ChangePrice, CommitStock, CreateProduct, ReleaseStock, ReserveStock, RestockProduct,
    SetCustomerLimit, StockAnswer,
};
use domain::product::{Product, ProductCommand, ProductEvent};
use domain::{Money, Sku};
use messaging::BoundedContext;
use uuid::Uuid;

/// The inventory context's commands, and how long a reservation may stay open.
#[derive(Debug, Clone, Copy)]
pub struct InventorySpec {
    /// `RESERVATION_TTL_MINUTES`: an open reservation older than this is released.
    pub reservation_ttl: std::time::Duration,
    /// How often open reservations are looked at.
    pub sweep_every: std::time::Duration,
}

impl Default for InventorySpec {
    fn default() -> Self {
        Self {
            reservation_ttl: std::time::Duration::from_secs(3600),
            sweep_every: std::time::Duration::from_secs(60),
        }
    }
}

impl InventorySpec {
    /// The spec as the environment sets it: `RESERVATION_TTL_MINUTES`, 1 to 10080 (a week),
    /// default 60.
    pub fn from_env(env: &service_kit::env::Env) -> Result<Self, service_kit::env::EnvError> {
        let minutes: u64 = env.within_or("RESERVATION_TTL_MINUTES", 60, 1..=10_080)?;
        Ok(Self {
            reservation_ttl: std::time::Duration::from_secs(60 * minutes),
            ..Self::default()
        })
    }
}

/// A catalog command: correlated with its own SKU.
fn catalog(sku: Sku, command: ProductCommand) -> Parsed<Product> {
    parsed(&sku, &sku, command)
}

/// A reservation command: correlated with the order.
fn reservation(sku: Sku, order_id: Uuid, command: ProductCommand) -> Parsed<Product> {
    parsed(sku, order_id, command)
}

impl CommandSpec for InventorySpec {
    type Aggregate = Product;
    type Answer = StockAnswer;
    const CONTEXT: BoundedContext = BoundedContext::Inventory;
    const ID_FIELD: &'static str = "sku";
    const REJECTED_KIND: &'static str = "product-rejected";
    const SERVICE: &'static topology::Service = &topology::INVENTORY;

    fn upcasters() -> Vec<Box<dyn command_kit::spec::EventUpcaster>> {
        domain::product::upcasters()
    }

    fn bindings() -> Vec<Binding<Self>> {
        vec![
            Binding::new(|b: CreateProduct, _| {
                catalog(
                    b.sku.clone(),
                    ProductCommand::Create {
                        sku: b.sku,
                        name: b.name,
                        unit_price: Money::new(b.unit_price, b.currency),
                        initial_stock: b.initial_stock,
                    },
                )
            }),
            Binding::new(|b: RestockProduct, _| {
                catalog(
                    b.sku,
                    ProductCommand::Restock {
                        quantity: b.quantity,
                    },
                )
            }),
            Binding::new(|b: ChangePrice, _| {
                catalog(
                    b.sku,
                    ProductCommand::ChangePrice {
                        unit_price: Money::new(b.unit_price, b.currency),
                    },
                )
            }),
            Binding::new(|b: SetCustomerLimit, _| {
                catalog(b.sku, ProductCommand::SetCustomerLimit { limit: b.limit })
            }),
            Binding::new(|b: ReserveStock, _| {
                let reserve = ProductCommand::Reserve {
                    order_id: b.order_id,
                    quantity: b.quantity,
                    customer_id: b.customer_id,
                };
                reservation(b.sku, b.order_id, reserve)
            }),
            Binding::new(|b: ReleaseStock, _| {
                let release = ProductCommand::Release {
                    order_id: b.order_id,
                };
                reservation(b.sku, b.order_id, release)
            }),
            Binding::new(|b: CommitStock, _| {
                let commit = ProductCommand::Commit {
                    order_id: b.order_id,
                };
                reservation(b.sku, b.order_id, commit)
            }),
        ]
    }

    fn housekeeping(
        &self,
        dispatcher: std::sync::Arc<command_kit::dispatch::Dispatcher<Self>>,
        pool: sqlx::PgPool,
    ) -> Vec<service_kit::service::Task> {
        vec![crate::expiry::sweeper(
            dispatcher,
            pool,
            self.reservation_ttl,
            self.sweep_every,
        )]
    }

    /// Every answer carries the stock figures; a reservation also its unit price.
    fn answer(
        &self,
        command: &ProductCommand,
        state: &Product,
        _events: &[ProductEvent],
    ) -> StockAnswer {
        let mut answer = StockAnswer {
            on_hand: state.on_hand,
            reserved: state.reserved,
            available: state.available(),
            quantity: None,
            unit_price: None,
            currency: None,
            reservation: None,
        };
        let order_id = match command {
            ProductCommand::Reserve { order_id, .. }
            | ProductCommand::Release { order_id }
            | ProductCommand::Commit { order_id } => Some(order_id),
            _ => None,
        };
        if let Some(reservation) = order_id.and_then(|id| state.reservations.get(id)) {
            answer.quantity = Some(reservation.quantity);
            answer.unit_price = Some(reservation.unit_price.amount_minor);
            answer.currency = Some(reservation.unit_price.currency);
            answer.reservation = Some(reservation.state);
        } else if let Some(price) = state.unit_price {
            answer.unit_price = Some(price.amount_minor);
            answer.currency = Some(price.currency);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_of_the_contract_is_bound_once() {
        command_kit::spec::binds_its_contract::<InventorySpec>().unwrap();
    }
}
