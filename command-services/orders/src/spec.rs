//! The order commands: how each request of the orders contract becomes an `OrderCommand`, and
//! what an answer holds.

use command_kit::spec::{Binding, CommandSpec, EventUpcaster, Parsed};
use contracts::orders::{
    CancelOrder, ConfirmOrder, OrderAnswer, PlaceOrder, PriceOrder, RejectOrder,
};
use domain::order::{self, Order, OrderCommand, OrderEvent};
use domain::Money;
use messaging::BoundedContext;
use uuid::Uuid;

/// The orders context's commands, and its customers' fair shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersSpec {
    /// The most open (placed, not yet confirmed, rejected or cancelled) orders one customer
    /// may have; `None`: no bound (the default of tests that place orders no saga ends).
    pub max_open_per_customer: Option<u32>,
    /// The most units of one SKU one customer's open orders may hold; `None`: no bound.
    pub max_units_per_product: Option<u32>,
}

impl OrdersSpec {
    /// The spec as the environment sets it: `ORDERS_MAX_OPEN_PER_CUSTOMER` (default 10) and
    /// `ORDERS_MAX_UNITS_PER_PRODUCT_PER_CUSTOMER` (default 100); 0 lifts a bound. The
    /// database enforces them in the transaction that appends `OrderPlaced` (event-store
    /// migration 0010), so they hold across replicas: a place past one is answered 429
    /// `too-many-open-orders` or 422 `customer-limit`, and nothing is written.
    pub fn from_env(env: &service_kit::env::Env) -> Result<Self, service_kit::env::EnvError> {
        let bound = |n: u32| (n > 0).then_some(n);
        Ok(Self {
            max_open_per_customer: bound(env.within_or(
                "ORDERS_MAX_OPEN_PER_CUSTOMER",
                10,
                0..=1_000_000,
            )?),
            max_units_per_product: bound(env.within_or(
                "ORDERS_MAX_UNITS_PER_PRODUCT_PER_CUSTOMER",
                100,
                0..=1_000_000_000,
            )?),
        })
    }
}

/// A command on the order `order_id`, correlated with it.
fn parsed(order_id: Uuid, command: OrderCommand) -> Parsed<Order> {
    command_kit::parsed(order_id, order_id, command)
}

impl CommandSpec for OrdersSpec {
    type Aggregate = Order;
    type Answer = OrderAnswer;
    const CONTEXT: BoundedContext = BoundedContext::Orders;
    const ID_FIELD: &'static str = "order_id";
    const REJECTED_KIND: &'static str = "order-rejected";
    const SERVICE: &'static topology::Service = &topology::ORDERS;

    fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
        order::upcasters()
    }

    /// Erasing a customer, beside the commands.
    fn extra_paths() -> Vec<(&'static str, serde_json::Value)> {
        vec![crate::erase::openapi()]
    }

    /// The fair shares, as the connections' settings the holdings trigger reads.
    fn session(&self) -> Vec<(String, String)> {
        let mut session = Vec::new();
        if let Some(n) = self.max_open_per_customer {
            session.push(("streamshop.max_open_orders".into(), n.to_string()));
        }
        if let Some(n) = self.max_units_per_product {
            session.push(("streamshop.max_units_per_product".into(), n.to_string()));
        }
        session
    }

    fn bindings() -> Vec<Binding<Self>> {
        vec![
            Binding::new(|b: PlaceOrder, now| {
                let order_id = Uuid::now_v7();
                let place = order::PlaceOrder {
                    order_id,
                    customer_id: b.customer_id,
                    lines: b.lines,
                    payment_token: b.payment_token,
                    email: b.email,
                    placed_at: now,
                };
                // The id is new: there is no history to load.
                Parsed {
                    new_aggregate: true,
                    ..parsed(order_id, OrderCommand::Place(place))
                }
            }),
            Binding::new(|b: PriceOrder, _| {
                let unit_prices = b
                    .lines
                    .into_iter()
                    .map(|l| (l.sku, Money::new(l.unit_price, l.currency)))
                    .collect();
                parsed(b.order_id, OrderCommand::Price { unit_prices })
            }),
            Binding::new(|b: ConfirmOrder, _| parsed(b.order_id, OrderCommand::Confirm)),
            Binding::new(|b: RejectOrder, _| {
                parsed(
                    b.order_id,
                    OrderCommand::Reject {
                        reason: b.reason,
                        detail: b.detail,
                        skus: b.skus,
                    },
                )
            }),
            Binding::new(|b: CancelOrder, now| {
                parsed(b.order_id, OrderCommand::Cancel { cancelled_at: now })
            }),
        ]
    }

    fn answer(
        &self,
        _command: &OrderCommand,
        state: &Order,
        _events: &[OrderEvent],
    ) -> OrderAnswer {
        OrderAnswer {
            status: state.status,
            total: state.total.map(|t| t.amount_minor),
            currency: state.total.map(|t| t.currency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_of_the_contract_is_bound_once() {
        command_kit::spec::binds_its_contract::<OrdersSpec>().unwrap();
    }
}
