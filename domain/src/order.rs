//! The Order aggregate: a customer's request for SKUs and quantities, and its life cycle.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Sku;

/// Most lines one order may hold.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1000;

/// One line of an order: a SKU and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: u32,
}

/// Commands an order accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place(PlaceOrder),
}

/// Place a new order. The service chooses `order_id` and stamps `placed_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub placed_at: DateTime<Utc>,
}

/// The order was placed; prices are not known yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub placed_at: DateTime<Utc>,
}

/// Everything that can happen to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced(OrderPlaced),
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced(_) => "OrderPlaced".into(),
        }
    }

    fn event_version(&self) -> String {
        match self {
            Self::OrderPlaced(_) => "1".into(),
        }
    }
}

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs at least one line")]
    NoLines,
    #[error("an order may hold at most {MAX_LINES} lines, not {0}")]
    TooManyLines(usize),
    #[error("SKU {0} appears on more than one line")]
    DuplicateSku(Sku),
    #[error("quantity of {sku} must be 1 to {MAX_QUANTITY}, not {quantity}")]
    InvalidQuantity { sku: Sku, quantity: u32 },
    #[error("order {0} was already placed")]
    AlreadyPlaced(Uuid),
}

impl OrderError {
    /// A stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoLines => "no_lines",
            Self::TooManyLines(_) => "too_many_lines",
            Self::DuplicateSku(_) => "duplicate_sku",
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::AlreadyPlaced(_) => "already_placed",
        }
    }
}

/// Where an order is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No event yet: the aggregate does not exist.
    #[default]
    New,
    Placed,
}

/// The Order aggregate's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
}

impl Order {
    fn place(&self, cmd: PlaceOrder) -> Result<OrderEvent, OrderError> {
        if let Some(id) = self.id {
            return Err(OrderError::AlreadyPlaced(id));
        }
        if cmd.lines.is_empty() {
            return Err(OrderError::NoLines);
        }
        if cmd.lines.len() > MAX_LINES {
            return Err(OrderError::TooManyLines(cmd.lines.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for line in &cmd.lines {
            if !seen.insert(&line.sku) {
                return Err(OrderError::DuplicateSku(line.sku.clone()));
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                return Err(OrderError::InvalidQuantity {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                });
            }
        }
        Ok(OrderEvent::OrderPlaced(OrderPlaced {
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            lines: cmd.lines,
            placed_at: cmd.placed_at,
        }))
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            OrderCommand::Place(cmd) => self.place(cmd)?,
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced(e) => {
                self.id = Some(e.order_id);
                self.customer_id = Some(e.customer_id);
                self.lines = e.lines;
                self.status = OrderStatus::Placed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type OrderTest = TestFramework<Order>;

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity,
        }
    }

    fn place(lines: Vec<OrderLine>) -> PlaceOrder {
        PlaceOrder {
            order_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            lines,
            placed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn placed(cmd: &PlaceOrder) -> OrderEvent {
        OrderEvent::OrderPlaced(OrderPlaced {
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            lines: cmd.lines.clone(),
            placed_at: cmd.placed_at,
        })
    }

    #[tokio::test]
    async fn place_succeeds() {
        let cmd = place(vec![line("A-1", 2), line("B-2", 1000)]);
        OrderTest::with(())
            .given_no_previous_events()
            .when_async(OrderCommand::Place(cmd.clone()))
            .await
            .then_expect_events(vec![placed(&cmd)]);
    }

    #[tokio::test]
    async fn place_twice_is_refused() {
        let cmd = place(vec![line("A-1", 1)]);
        OrderTest::with(())
            .given(vec![placed(&cmd)])
            .when_async(OrderCommand::Place(cmd.clone()))
            .await
            .then_expect_error(OrderError::AlreadyPlaced(cmd.order_id));
    }

    #[tokio::test]
    async fn place_without_lines_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when_async(OrderCommand::Place(place(vec![])))
            .await
            .then_expect_error(OrderError::NoLines);
    }

    #[tokio::test]
    async fn place_with_too_many_lines_is_refused() {
        let lines = (0..=MAX_LINES).map(|i| line(&format!("S{i}"), 1)).collect();
        OrderTest::with(())
            .given_no_previous_events()
            .when_async(OrderCommand::Place(place(lines)))
            .await
            .then_expect_error(OrderError::TooManyLines(MAX_LINES + 1));
    }

    #[tokio::test]
    async fn place_with_a_repeated_sku_is_refused() {
        OrderTest::with(())
            .given_no_previous_events()
            .when_async(OrderCommand::Place(place(vec![
                line("A-1", 1),
                line("A-1", 2),
            ])))
            .await
            .then_expect_error(OrderError::DuplicateSku(Sku::parse("A-1").unwrap()));
    }

    #[tokio::test]
    async fn place_with_a_bad_quantity_is_refused() {
        for quantity in [0, MAX_QUANTITY + 1] {
            OrderTest::with(())
                .given_no_previous_events()
                .when_async(OrderCommand::Place(place(vec![line("A-1", quantity)])))
                .await
                .then_expect_error(OrderError::InvalidQuantity {
                    sku: Sku::parse("A-1").unwrap(),
                    quantity,
                });
        }
    }

    #[test]
    fn events_are_stored_with_type_and_version() {
        let event = placed(&place(vec![line("A-1", 1)]));
        assert_eq!(event.event_type(), "OrderPlaced");
        assert_eq!(event.event_version(), "1");
        let json = serde_json::to_value(&event).unwrap();
        assert!(json.get("OrderPlaced").is_some(), "{json}");
    }
}
