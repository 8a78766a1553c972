//! The Order aggregate: a customer's request for SKUs and quantities, and its life cycle.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sealing::Field;
use crate::{Money, Sku};

/// Most lines one order may hold.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1000;

/// One line of an order: a SKU and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: u32,
}

/// A line with the unit price inventory answered, and its total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    OutOfStock,
    PaymentDeclined,
    Timeout,
    /// The saga could not finish, even with retries and compensation.
    Failed,
}

/// Commands an order accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place(PlaceOrder),
    /// Inventory's unit price for each SKU of the order.
    Price {
        unit_prices: Vec<(Sku, Money)>,
    },
    Confirm,
    Reject {
        reason: RejectionReason,
        detail: String,
        skus: Vec<Sku>,
    },
    Cancel {
        cancelled_at: DateTime<Utc>,
    },
}

/// Place a new order. The service chooses `order_id` and stamps `placed_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub payment_token: String,
    /// The customer's address for the order's emails, from their verified token.
    pub email: Option<String>,
    pub placed_at: DateTime<Utc>,
}

/// The order was placed; prices are not known yet. Version 3 added `email`, version 2
/// `payment_token`; older events are upcast with them null (see [`upcasters`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    /// The payment provider's token, sealed with the customer's data key: the saga passes it
    /// to the provider; no reader is shown it.
    #[schemars(extend("x-sensitive" = true))]
    pub payment_token: Option<String>,
    /// The customer's email address, sealed with their data key (erasing the customer makes
    /// it unreadable): the notification service opens it to send the order's emails.
    #[schemars(extend("x-sensitive" = true))]
    pub email: Option<String>,
    pub placed_at: DateTime<Utc>,
}

/// Version 2 of `OrderPlaced`, as stored before email addresses. Kept for its schema and for
/// reading old history (through [`order_placed_v2_to_v3`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    description = "The order was placed; prices are not known yet. Version 2 added `payment_token`; events\nstored as version 1 are upcast with `payment_token: null` (see [`upcasters`])."
)]
pub struct OrderPlacedV2 {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    // Sensitive: the saga passes it to the payment provider; no reader is shown it. (A
    // comment, not a doc comment: that would change the released schema's description.)
    #[schemars(extend("x-sensitive" = true))]
    pub payment_token: Option<String>,
    pub placed_at: DateTime<Utc>,
}

/// Version 1 of `OrderPlaced`, as stored before payment tokens existed. Kept for its schema
/// and for reading old history (through [`order_placed_v1_to_v2`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlacedV1 {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub placed_at: DateTime<Utc>,
}

/// Everything that can happen to an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum OrderEvent {
    OrderPlaced(OrderPlaced),
    OrderPriced {
        order_id: Uuid,
        lines: Vec<PricedLine>,
        total: Money,
    },
    OrderConfirmed {
        order_id: Uuid,
        total: Money,
    },
    OrderRejected {
        order_id: Uuid,
        reason: RejectionReason,
        detail: String,
        skus: Vec<Sku>,
    },
    OrderCancelled {
        order_id: Uuid,
        cancelled_at: DateTime<Utc>,
    },
}

/// The current version of `OrderPlaced`.
pub const ORDER_PLACED_VERSION: &str = "3";

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced(_) => "OrderPlaced",
            Self::OrderPriced { .. } => "OrderPriced",
            Self::OrderConfirmed { .. } => "OrderConfirmed",
            Self::OrderRejected { .. } => "OrderRejected",
            Self::OrderCancelled { .. } => "OrderCancelled",
        }
        .into()
    }

    fn event_version(&self) -> String {
        match self {
            Self::OrderPlaced(_) => ORDER_PLACED_VERSION.into(),
            _ => "1".into(),
        }
    }
}

/// `OrderPlaced` v1 -> v2 on the event's own object: v1 orders had no payment token.
pub fn order_placed_v1_to_v2(mut data: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = data.as_object_mut() {
        obj.entry("payment_token")
            .or_insert(serde_json::Value::Null);
    }
    data
}

/// `OrderPlaced` v2 -> v3 on the event's own object: v2 orders carried no email address.
pub fn order_placed_v2_to_v3(mut data: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = data.as_object_mut() {
        obj.entry("email").or_insert(serde_json::Value::Null);
    }
    data
}

/// cqrs-es upcasters for stored order events (the payload is `{"OrderPlaced": {...}}`): an
/// `OrderPlaced` below the current version gets each later version's fields, null.
pub fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    vec![Box::new(
        cqrs_es::persist::SemanticVersionEventUpcaster::new(
            "OrderPlaced",
            ORDER_PLACED_VERSION,
            Box::new(|mut payload| {
                if let Some(inner) = payload.get_mut("OrderPlaced") {
                    *inner = order_placed_v2_to_v3(order_placed_v1_to_v2(inner.take()));
                }
                payload
            }),
        ),
    )]
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
    #[error("the payment token must be 1 to 64 of A-Z, a-z, 0-9, _ and -")]
    InvalidPaymentToken,
    #[error(
        "the email address must be one local part, @ and a domain, at most {MAX_EMAIL} characters"
    )]
    InvalidEmail,
    #[error("order {0} was already placed")]
    AlreadyPlaced(Uuid),
    #[error("no such order")]
    NotFound,
    #[error("prices must cover exactly the order's SKUs; {0} is wrong or missing")]
    PriceMismatch(Sku),
    #[error("all prices of an order must be positive and in one currency")]
    InvalidPrices,
    #[error("the order is {0:?}, so it cannot be {1}")]
    InvalidTransition(OrderStatus, &'static str),
    #[error("the customer's data was erased: they can place no more orders")]
    CustomerErased,
    #[error("the payment token could not be sealed now: {0}")]
    KeysUnavailable(String),
}

impl OrderError {
    /// A stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoLines => "no_lines",
            Self::TooManyLines(_) => "too_many_lines",
            Self::DuplicateSku(_) => "duplicate_sku",
            Self::InvalidQuantity { .. } => "invalid_quantity",
            Self::InvalidPaymentToken => "invalid_payment_token",
            Self::InvalidEmail => "invalid_email",
            Self::AlreadyPlaced(_) => "already_placed",
            Self::NotFound => "not_found",
            Self::PriceMismatch(_) => "price_mismatch",
            Self::InvalidPrices => "invalid_prices",
            Self::InvalidTransition(..) => "invalid_transition",
            Self::CustomerErased => "customer_erased",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// Where an order is in its life cycle.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No event yet: the aggregate does not exist.
    #[default]
    New,
    Placed,
    Priced,
    Confirmed,
    Rejected,
    Cancelled,
}

/// The Order aggregate's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub priced_lines: Vec<PricedLine>,
    pub total: Option<Money>,
    pub payment_token: Option<String>,
}

/// Longest email address accepted (RFC 5321's path limit, less the angle brackets).
pub const MAX_EMAIL: usize = 254;

/// An address an SMTP server takes: one `@` between a non-empty local part and a dotted
/// domain, printable ASCII without spaces, quotes or angle brackets.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= MAX_EMAIL
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"@\"<>(),;:[]\\".contains(&b))
}

fn valid_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Order {
    fn id(&self) -> Result<Uuid, OrderError> {
        self.id.ok_or(OrderError::NotFound)
    }

    fn place(&self, cmd: PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
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
        if !valid_token(&cmd.payment_token) {
            return Err(OrderError::InvalidPaymentToken);
        }
        if cmd.email.as_deref().is_some_and(|e| !valid_email(e)) {
            return Err(OrderError::InvalidEmail);
        }
        Ok(vec![OrderEvent::OrderPlaced(OrderPlaced {
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            lines: cmd.lines,
            payment_token: Some(cmd.payment_token),
            email: cmd.email,
            placed_at: cmd.placed_at,
        })])
    }

    fn price(&self, unit_prices: Vec<(Sku, Money)>) -> Result<Vec<OrderEvent>, OrderError> {
        let order_id = self.id()?;
        match self.status {
            OrderStatus::Placed => {}
            other => return Err(OrderError::InvalidTransition(other, "priced")),
        }
        let prices: std::collections::HashMap<Sku, Money> = unit_prices.into_iter().collect();
        if let Some(extra) = prices
            .keys()
            .find(|s| !self.lines.iter().any(|l| &l.sku == *s))
        {
            return Err(OrderError::PriceMismatch(extra.clone()));
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        let mut total: Option<Money> = None;
        for line in &self.lines {
            let unit_price = *prices
                .get(&line.sku)
                .ok_or_else(|| OrderError::PriceMismatch(line.sku.clone()))?;
            if unit_price.amount_minor <= 0 {
                return Err(OrderError::InvalidPrices);
            }
            let line_total = unit_price
                .times(line.quantity)
                .map_err(|_| OrderError::InvalidPrices)?;
            total = Some(match total {
                None => line_total,
                Some(t) => t
                    .checked_add(line_total)
                    .map_err(|_| OrderError::InvalidPrices)?,
            });
            lines.push(PricedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price,
                line_total,
            });
        }
        Ok(vec![OrderEvent::OrderPriced {
            order_id,
            lines,
            total: total.ok_or(OrderError::NoLines)?,
        }])
    }

    fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Place(cmd) => self.place(cmd),
            OrderCommand::Price { unit_prices } => self.price(unit_prices),
            OrderCommand::Confirm => {
                let order_id = self.id()?;
                match (self.status, self.total) {
                    (OrderStatus::Priced, Some(total)) => {
                        Ok(vec![OrderEvent::OrderConfirmed { order_id, total }])
                    }
                    (other, _) => Err(OrderError::InvalidTransition(other, "confirmed")),
                }
            }
            OrderCommand::Reject {
                reason,
                detail,
                skus,
            } => {
                let order_id = self.id()?;
                match self.status {
                    OrderStatus::Placed | OrderStatus::Priced => {
                        Ok(vec![OrderEvent::OrderRejected {
                            order_id,
                            reason,
                            detail,
                            skus,
                        }])
                    }
                    other => Err(OrderError::InvalidTransition(other, "rejected")),
                }
            }
            OrderCommand::Cancel { cancelled_at } => {
                let order_id = self.id()?;
                match self.status {
                    OrderStatus::Placed | OrderStatus::Priced => {
                        Ok(vec![OrderEvent::OrderCancelled {
                            order_id,
                            cancelled_at,
                        }])
                    }
                    // Cancelling twice is the customer's retry: nothing more to do.
                    OrderStatus::Cancelled => Ok(vec![]),
                    other => Err(OrderError::InvalidTransition(other, "cancelled")),
                }
            }
        }
    }
}

/// What an Order needs from outside: the sealer of payment tokens, so a token is stored in
/// the log only sealed with its customer's key.
#[derive(Clone)]
pub struct OrderServices {
    pub sealer: std::sync::Arc<dyn crate::sealing::TokenSealer>,
}

impl std::fmt::Debug for OrderServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderServices")
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = OrderServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let mut events = self.decide(command)?;
        // The rules are decided; what leaves for the log has its personal data sealed.
        for event in &mut events {
            if let OrderEvent::OrderPlaced(placed) = event {
                let (customer, order) = (placed.customer_id, placed.order_id);
                for (field, value) in [
                    (Field::PaymentToken, &mut placed.payment_token),
                    (Field::Email, &mut placed.email),
                ] {
                    if let Some(clear) = value.as_deref() {
                        let sealed = services
                            .sealer
                            .seal(customer, order, field, clear)
                            .await
                            .map_err(|e| match e {
                                crate::sealing::SealingError::Erased => OrderError::CustomerErased,
                                other => OrderError::KeysUnavailable(other.to_string()),
                            })?;
                        *value = Some(sealed);
                    }
                }
            }
        }
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced(e) => {
                self.id = Some(e.order_id);
                self.customer_id = Some(e.customer_id);
                self.lines = e.lines;
                self.payment_token = e.payment_token;
                self.status = OrderStatus::Placed;
            }
            OrderEvent::OrderPriced { lines, total, .. } => {
                self.priced_lines = lines;
                self.total = Some(total);
                self.status = OrderStatus::Priced;
            }
            OrderEvent::OrderConfirmed { .. } => self.status = OrderStatus::Confirmed,
            OrderEvent::OrderRejected { .. } => self.status = OrderStatus::Rejected,
            OrderEvent::OrderCancelled { .. } => self.status = OrderStatus::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::eur;
    use crate::Currency;

    /// Seals a token the way the tests can check: `sealed:<customer>:<order>:<token>`, and
    /// refuses customer 0 as erased.
    struct Visible;

    impl crate::sealing::TokenSealer for Visible {
        fn seal<'a>(
            &'a self,
            customer_id: Uuid,
            order_id: Uuid,
            field: Field,
            value: &'a str,
        ) -> crate::payment::BoxFuture<'a, Result<String, crate::sealing::SealingError>> {
            Box::pin(std::future::ready(if customer_id.is_nil() {
                Err(crate::sealing::SealingError::Erased)
            } else {
                Ok(format!(
                    "sealed:{customer_id}:{order_id}:{}:{value}",
                    field.name()
                ))
            }))
        }
    }

    fn services() -> OrderServices {
        OrderServices {
            sealer: std::sync::Arc::new(Visible),
        }
    }

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity,
        }
    }

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn place(lines: Vec<OrderLine>) -> PlaceOrder {
        PlaceOrder {
            order_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            lines,
            payment_token: "tok_ok".into(),
            email: Some("ada@example.com".into()),
            placed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn placed(cmd: &PlaceOrder) -> OrderEvent {
        OrderEvent::OrderPlaced(OrderPlaced {
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            lines: cmd.lines.clone(),
            payment_token: Some(cmd.payment_token.clone()),
            email: cmd.email.clone(),
            placed_at: cmd.placed_at,
        })
    }

    /// A placed order of 2 x A-1 and 1 x B-2.
    fn placed_two() -> OrderEvent {
        placed(&place(vec![line("A-1", 2), line("B-2", 1)]))
    }

    fn priced_two() -> OrderEvent {
        OrderEvent::OrderPriced {
            order_id: Uuid::from_u128(1),
            lines: vec![
                PricedLine {
                    sku: sku("A-1"),
                    quantity: 2,
                    unit_price: eur(150),
                    line_total: eur(300),
                },
                PricedLine {
                    sku: sku("B-2"),
                    quantity: 1,
                    unit_price: eur(1000),
                    line_total: eur(1000),
                },
            ],
            total: eur(1300),
        }
    }

    fn confirmed() -> OrderEvent {
        OrderEvent::OrderConfirmed {
            order_id: Uuid::from_u128(1),
            total: eur(1300),
        }
    }

    fn rejected() -> OrderEvent {
        OrderEvent::OrderRejected {
            order_id: Uuid::from_u128(1),
            reason: RejectionReason::OutOfStock,
            detail: "B-2 is out of stock".into(),
            skus: vec![sku("B-2")],
        }
    }

    fn cancelled() -> OrderEvent {
        OrderEvent::OrderCancelled {
            order_id: Uuid::from_u128(1),
            cancelled_at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        }
    }

    fn cancel() -> OrderCommand {
        OrderCommand::Cancel {
            cancelled_at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        }
    }

    fn reject() -> OrderCommand {
        OrderCommand::Reject {
            reason: RejectionReason::OutOfStock,
            detail: "B-2 is out of stock".into(),
            skus: vec![sku("B-2")],
        }
    }

    fn prices(pairs: &[(&str, Money)]) -> OrderCommand {
        OrderCommand::Price {
            unit_prices: pairs.iter().map(|(s, m)| (sku(s), *m)).collect(),
        }
    }

    async fn expect(given: Vec<OrderEvent>, when: OrderCommand, then: Vec<OrderEvent>) {
        crate::given::expect::<Order>(services(), given, when, then).await;
    }

    async fn refuse(given: Vec<OrderEvent>, when: OrderCommand, error: OrderError) {
        crate::given::refuse::<Order>(services(), given, when, error).await;
    }

    /// The event of a place, its token and address sealed as [`Visible`] seals them.
    fn placed_sealed(cmd: &PlaceOrder) -> OrderEvent {
        let mut event = placed(cmd);
        if let OrderEvent::OrderPlaced(p) = &mut event {
            let sealed = |field: &str, value: &str| {
                format!(
                    "sealed:{}:{}:{field}:{value}",
                    cmd.customer_id, cmd.order_id
                )
            };
            p.payment_token = Some(sealed("payment_token", &cmd.payment_token));
            p.email = cmd.email.as_deref().map(|e| sealed("email", e));
        }
        event
    }

    #[tokio::test]
    async fn place_succeeds_with_the_token_and_email_sealed_for_its_customer_and_order() {
        let cmd = place(vec![line("A-1", 2), line("B-2", 1000)]);
        expect(
            vec![],
            OrderCommand::Place(cmd.clone()),
            vec![placed_sealed(&cmd)],
        )
        .await;
        let mut without = cmd.clone();
        without.email = None;
        expect(
            vec![],
            OrderCommand::Place(without.clone()),
            vec![placed_sealed(&without)],
        )
        .await;
    }

    #[test]
    fn a_v1_or_v2_order_placed_reads_as_v3_without_an_email() {
        let v2 = serde_json::json!({"order_id": Uuid::nil(), "customer_id": Uuid::nil(),
            "lines": [], "payment_token": "t", "placed_at": "2026-11-30T10:00:00Z"});
        let v3 = order_placed_v2_to_v3(v2.clone());
        assert_eq!(v3["email"], serde_json::Value::Null);
        assert_eq!(v3["payment_token"], "t");
        let mut v1 = v2;
        v1.as_object_mut().unwrap().remove("payment_token");
        let read: OrderPlaced =
            serde_json::from_value(order_placed_v2_to_v3(order_placed_v1_to_v2(v1))).unwrap();
        assert_eq!((read.payment_token, read.email), (None, None));
    }

    #[tokio::test]
    async fn an_erased_customer_places_no_order() {
        let mut cmd = place(vec![line("A-1", 1)]);
        cmd.customer_id = Uuid::nil();
        refuse(vec![], OrderCommand::Place(cmd), OrderError::CustomerErased).await;
    }

    #[tokio::test]
    async fn place_refuses_each_broken_rule() {
        let cmd = place(vec![line("A-1", 1)]);
        refuse(
            vec![placed(&cmd)],
            OrderCommand::Place(cmd.clone()),
            OrderError::AlreadyPlaced(cmd.order_id),
        )
        .await;
        refuse(
            vec![],
            OrderCommand::Place(place(vec![])),
            OrderError::NoLines,
        )
        .await;
        let lines = (0..=MAX_LINES).map(|i| line(&format!("S{i}"), 1)).collect();
        refuse(
            vec![],
            OrderCommand::Place(place(lines)),
            OrderError::TooManyLines(MAX_LINES + 1),
        )
        .await;
        refuse(
            vec![],
            OrderCommand::Place(place(vec![line("A-1", 1), line("A-1", 2)])),
            OrderError::DuplicateSku(sku("A-1")),
        )
        .await;
        for quantity in [0, MAX_QUANTITY + 1] {
            refuse(
                vec![],
                OrderCommand::Place(place(vec![line("A-1", quantity)])),
                OrderError::InvalidQuantity {
                    sku: sku("A-1"),
                    quantity,
                },
            )
            .await;
        }
        let mut bad_token = place(vec![line("A-1", 1)]);
        bad_token.payment_token = "tok ok".into();
        refuse(
            vec![],
            OrderCommand::Place(bad_token),
            OrderError::InvalidPaymentToken,
        )
        .await;
        let long = format!("{}@example.com", "a".repeat(MAX_EMAIL));
        for email in [
            "ada",
            "@example.com",
            "ada@",
            "ada@localhost",
            "a da@example.com",
            "ada@exa mple.com",
            "<ada@example.com>",
            "ada@example.com\r\nBcc: x@y.z",
            &long,
        ] {
            let mut bad_email = place(vec![line("A-1", 1)]);
            bad_email.email = Some(email.into());
            refuse(
                vec![],
                OrderCommand::Place(bad_email),
                OrderError::InvalidEmail,
            )
            .await;
        }
    }

    #[tokio::test]
    async fn price_totals_the_lines() {
        expect(
            vec![placed_two()],
            prices(&[("A-1", eur(150)), ("B-2", eur(1000))]),
            vec![priced_two()],
        )
        .await;
    }

    #[tokio::test]
    async fn price_refuses_wrong_skus_mixed_currencies_and_wrong_states() {
        refuse(
            vec![placed_two()],
            prices(&[("A-1", eur(150))]),
            OrderError::PriceMismatch(sku("B-2")),
        )
        .await;
        refuse(
            vec![placed_two()],
            prices(&[("A-1", eur(150)), ("B-2", eur(1)), ("C-3", eur(1))]),
            OrderError::PriceMismatch(sku("C-3")),
        )
        .await;
        let usd = Money::new(1000, Currency::parse("USD").unwrap());
        refuse(
            vec![placed_two()],
            prices(&[("A-1", eur(150)), ("B-2", usd)]),
            OrderError::InvalidPrices,
        )
        .await;
        refuse(
            vec![placed_two()],
            prices(&[("A-1", eur(0)), ("B-2", eur(1))]),
            OrderError::InvalidPrices,
        )
        .await;
        refuse(
            vec![placed_two(), priced_two()],
            prices(&[("A-1", eur(150)), ("B-2", eur(1000))]),
            OrderError::InvalidTransition(OrderStatus::Priced, "priced"),
        )
        .await;
        refuse(vec![], prices(&[]), OrderError::NotFound).await;
    }

    #[tokio::test]
    async fn confirm_needs_a_priced_order_and_happens_once() {
        expect(
            vec![placed_two(), priced_two()],
            OrderCommand::Confirm,
            vec![confirmed()],
        )
        .await;
        refuse(
            vec![placed_two(), priced_two(), confirmed()],
            OrderCommand::Confirm,
            OrderError::InvalidTransition(OrderStatus::Confirmed, "confirmed"),
        )
        .await;
        refuse(
            vec![placed_two(), rejected()],
            OrderCommand::Confirm,
            OrderError::InvalidTransition(OrderStatus::Rejected, "confirmed"),
        )
        .await;
        refuse(
            vec![placed_two()],
            OrderCommand::Confirm,
            OrderError::InvalidTransition(OrderStatus::Placed, "confirmed"),
        )
        .await;
        refuse(vec![], OrderCommand::Confirm, OrderError::NotFound).await;
    }

    #[tokio::test]
    async fn reject_closes_an_open_order_only() {
        expect(vec![placed_two()], reject(), vec![rejected()]).await;
        expect(vec![placed_two(), priced_two()], reject(), vec![rejected()]).await;
        refuse(
            vec![placed_two(), priced_two(), confirmed()],
            reject(),
            OrderError::InvalidTransition(OrderStatus::Confirmed, "rejected"),
        )
        .await;
        refuse(
            vec![placed_two(), rejected()],
            reject(),
            OrderError::InvalidTransition(OrderStatus::Rejected, "rejected"),
        )
        .await;
        refuse(vec![], reject(), OrderError::NotFound).await;
    }

    #[tokio::test]
    async fn cancel_before_confirmation_only() {
        expect(vec![placed_two()], cancel(), vec![cancelled()]).await;
        expect(
            vec![placed_two(), priced_two()],
            cancel(),
            vec![cancelled()],
        )
        .await;
        expect(vec![placed_two(), cancelled()], cancel(), vec![]).await;
        refuse(
            vec![placed_two(), priced_two(), confirmed()],
            cancel(),
            OrderError::InvalidTransition(OrderStatus::Confirmed, "cancelled"),
        )
        .await;
        refuse(
            vec![placed_two(), rejected()],
            cancel(),
            OrderError::InvalidTransition(OrderStatus::Rejected, "cancelled"),
        )
        .await;
        refuse(vec![], cancel(), OrderError::NotFound).await;
    }

    #[test]
    fn events_are_stored_with_type_and_version() {
        let event = placed_two();
        assert_eq!(event.event_type(), "OrderPlaced");
        assert_eq!(event.event_version(), "3");
        assert_eq!(confirmed().event_version(), "1");
        let json = serde_json::to_value(&event).unwrap();
        assert!(json.get("OrderPlaced").is_some(), "{json}");
    }

    #[test]
    fn stored_order_placed_v1_and_v2_upcast_to_v3() {
        let upcaster = &upcasters()[0];
        assert!(upcaster.can_upcast("OrderPlaced", "1"));
        assert!(upcaster.can_upcast("OrderPlaced", "2"));
        assert!(!upcaster.can_upcast("OrderPlaced", "3"));
        let v1 = serde_json::json!({"order_id": Uuid::from_u128(1), "customer_id": Uuid::from_u128(2),
            "lines": [{"sku": "A-1", "quantity": 1}], "placed_at": "2026-01-01T00:00:00Z"});
        let stored = cqrs_es::persist::SerializedEvent {
            aggregate_id: "1".into(),
            sequence: 1,
            aggregate_type: "Order".into(),
            event_type: "OrderPlaced".into(),
            event_version: "1".into(),
            payload: serde_json::json!({ "OrderPlaced": v1 }),
            metadata: serde_json::json!({}),
        };
        let upcast = upcaster.upcast(stored);
        assert_eq!(upcast.event_version, "3.0.0");
        let event: OrderEvent = serde_json::from_value(upcast.payload).unwrap();
        let OrderEvent::OrderPlaced(placed) = event else {
            panic!("{event:?}")
        };
        assert_eq!((placed.payment_token, placed.email), (None, None));
    }
}
