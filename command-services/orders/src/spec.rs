//! The order commands: how each request of the orders contract becomes an `OrderCommand`, and
//! what an answer holds.

use command_kit::spec::{Binding, CommandSpec, EventUpcaster, Parsed};
use contracts::orders::{
    CancelOrder, ConfirmOrder, OrderAnswer, PlaceOrder, PriceOrder, RejectOrder,
};
use domain::order::{self, Order, OrderCommand, OrderEvent};
use domain::Money;
use messaging::BoundedContext;
use runtime::service::Defaults;
use uuid::Uuid;

/// The orders context's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrdersSpec;

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
    const DEFAULTS: Defaults = Defaults {
        name: "orders",
        port: 8081,
        database_url: "postgres://orders@127.0.0.1:25432/orders",
        max_connections: 10,
    };

    fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
        order::upcasters()
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
