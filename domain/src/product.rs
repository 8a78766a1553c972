//! The Product aggregate: one per SKU. Catalog data (name, unit price) and stock (on hand,
//! reservations per order). Reserve, release and commit are idempotent per order id, for every
//! live reservation and the last [`SETTLED_KEPT`] settled ones.

use std::collections::{BTreeMap, VecDeque};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Money, Sku};

/// Largest stock movement one command may make.
pub const MAX_STOCK_MOVEMENT: u32 = 1_000_000;
/// Longest product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Commands a product accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum ProductCommand {
    Create {
        sku: Sku,
        name: String,
        unit_price: Money,
        initial_stock: u32,
    },
    Restock {
        quantity: u32,
    },
    ChangePrice {
        unit_price: Money,
    },
    Reserve {
        order_id: Uuid,
        quantity: u32,
        /// The customer the order is for, when the caller knows it: what counts against
        /// the product's per-customer limit.
        customer_id: Option<Uuid>,
    },
    /// At most `limit` units held by one customer's live reservations (a flash sale);
    /// `None` lifts the limit.
    SetCustomerLimit {
        limit: Option<u32>,
    },
    Release {
        order_id: Uuid,
    },
    Commit {
        order_id: Uuid,
    },
}

/// Everything that can happen to a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ProductEvent {
    ProductCreated {
        sku: Sku,
        name: String,
        unit_price: Money,
        initial_stock: u32,
    },
    ProductRestocked {
        sku: Sku,
        quantity: u32,
        on_hand: u64,
    },
    PriceChanged {
        sku: Sku,
        old_price: Money,
        new_price: Money,
    },
    /// Version 2 added `customer_id`; version 1 events are upcast with `null` (see
    /// [`upcasters`]).
    StockReserved {
        sku: Sku,
        order_id: Uuid,
        quantity: u32,
        unit_price: Money,
        available: u64,
        /// The customer the order is for (what counts against a per-customer limit);
        /// unknown for reservations made before version 2.
        customer_id: Option<Uuid>,
    },
    ReservationReleased {
        sku: Sku,
        order_id: Uuid,
        quantity: u32,
        available: u64,
    },
    ReservationCommitted {
        sku: Sku,
        order_id: Uuid,
        quantity: u32,
        on_hand: u64,
    },
    /// One customer's live reservations may hold at most `limit` units of the product from
    /// now on (`None`: no limit).
    CustomerLimitSet { sku: Sku, limit: Option<u32> },
}

// Version 1 of `StockReserved`, as stored before reservations named their customer. Kept for
// its schema and for reading old history (through `stock_reserved_v1_to_v2`). (Comments, not
// doc comments: a description would change the released schema.)
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StockReservedV1 {
    pub sku: Sku,
    pub order_id: Uuid,
    pub quantity: u32,
    pub unit_price: Money,
    pub available: u64,
}

/// The current version of `StockReserved`.
pub const STOCK_RESERVED_VERSION: &str = "2";

/// `StockReserved` v1 -> v2 on the event's own object: v1 reservations named no customer.
pub fn stock_reserved_v1_to_v2(mut data: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = data.as_object_mut() {
        obj.entry("customer_id").or_insert(serde_json::Value::Null);
    }
    data
}

/// cqrs-es upcasters for stored product events (the payload is `{"StockReserved": {...}}`).
pub fn upcasters() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    vec![Box::new(
        cqrs_es::persist::SemanticVersionEventUpcaster::new(
            "StockReserved",
            STOCK_RESERVED_VERSION,
            Box::new(|mut payload| {
                if let Some(inner) = payload.get_mut("StockReserved") {
                    *inner = stock_reserved_v1_to_v2(inner.take());
                }
                payload
            }),
        ),
    )]
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductRestocked { .. } => "ProductRestocked",
            Self::PriceChanged { .. } => "PriceChanged",
            Self::StockReserved { .. } => "StockReserved",
            Self::ReservationReleased { .. } => "ReservationReleased",
            Self::ReservationCommitted { .. } => "ReservationCommitted",
            Self::CustomerLimitSet { .. } => "CustomerLimitSet",
        }
        .into()
    }

    fn event_version(&self) -> String {
        match self {
            Self::StockReserved { .. } => STOCK_RESERVED_VERSION.into(),
            _ => "1".into(),
        }
    }
}

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product {0} already exists")]
    AlreadyExists(Sku),
    #[error("no such product")]
    NotFound,
    #[error("the name must be 1 to {MAX_NAME_CHARS} characters")]
    InvalidName,
    #[error("a price must be positive, not {0}")]
    InvalidPrice(Money),
    #[error("a price change must keep the currency {0}")]
    CurrencyChange(crate::Currency),
    #[error("quantity must be 1 to {MAX_STOCK_MOVEMENT}, not {0}")]
    InvalidQuantity(u32),
    #[error("initial stock must be at most {MAX_STOCK_MOVEMENT}, not {0}")]
    InvalidInitialStock(u32),
    #[error("out of stock: {requested} requested, {available} available")]
    OutOfStock { requested: u32, available: u64 },
    #[error("order {0} already reserved a different quantity")]
    ReservationMismatch(Uuid),
    #[error("order {0} has no reservation to commit")]
    NoReservation(Uuid),
    #[error("the reservation of order {0} was committed: it cannot be released")]
    AlreadyCommitted(Uuid),
    #[error("the reservation of order {0} was released before it was made")]
    ReleasedBeforeReserved(Uuid),
    #[error("one customer may hold at most {limit} of this product; they hold {held} and asked for {requested}")]
    CustomerLimit {
        limit: u32,
        held: u64,
        requested: u32,
    },
    #[error("a per-customer limit must be 1 to {MAX_STOCK_MOVEMENT}, not {0}")]
    InvalidLimit(u32),
}

impl ProductError {
    /// A stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists(_) => "already_exists",
            Self::NotFound => "not_found",
            Self::InvalidName => "invalid_name",
            Self::InvalidPrice(_) => "invalid_price",
            Self::CurrencyChange(_) => "currency_mismatch",
            Self::InvalidQuantity(_) => "invalid_quantity",
            Self::InvalidInitialStock(_) => "invalid_quantity",
            Self::OutOfStock { .. } => "out_of_stock",
            Self::ReservationMismatch(_) => "reservation_mismatch",
            Self::NoReservation(_) => "no_reservation",
            Self::AlreadyCommitted(_) => "already_committed",
            Self::ReleasedBeforeReserved(_) => "reservation_released",
            Self::CustomerLimit { .. } => "customer_limit",
            Self::InvalidLimit(_) => "invalid_limit",
        }
    }
}

/// What happened to one order's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Reserved,
    Released,
    Committed,
}

/// One order's reservation, kept after release or commit so repeats are recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub quantity: u32,
    pub unit_price: Money,
    pub state: ReservationState,
    /// Whose order it is, when the reservation said (from `StockReserved` v2 on).
    #[serde(default)]
    pub customer: Option<Uuid>,
}

/// How many settled (released or committed) reservations a product remembers. A command about
/// an older one is answered as for an order the product never saw: the state, and every
/// snapshot of it, stays bounded (about 130 KB of JSON) however long the product sells, where
/// it used to grow by 126 bytes per order for ever. Repeats of the saga's own commands are
/// answered by their command ids (kept a week) before the state is asked, and a live
/// reservation is never forgotten.
pub const SETTLED_KEPT: usize = 1_000;

/// The Product aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: Option<Sku>,
    pub name: String,
    pub unit_price: Option<Money>,
    pub on_hand: u64,
    /// Units held by live (`Reserved`) reservations.
    pub reserved: u64,
    /// Every live reservation, and the settled ones in `settled`.
    pub reservations: BTreeMap<Uuid, Reservation>,
    /// The order ids of the settled reservations still remembered, oldest first; the oldest
    /// goes past [`SETTLED_KEPT`]. Snapshots from before this field do not decode, so those
    /// products are folded from their events once, which applies the bound.
    pub settled: VecDeque<Uuid>,
    /// The most units one customer's live reservations may hold (`None`: no limit).
    #[serde(default)]
    pub customer_limit: Option<u32>,
}

fn check_quantity(quantity: u32) -> Result<(), ProductError> {
    if (1..=MAX_STOCK_MOVEMENT).contains(&quantity) {
        Ok(())
    } else {
        Err(ProductError::InvalidQuantity(quantity))
    }
}

fn check_price(price: Money) -> Result<(), ProductError> {
    if price.amount_minor > 0 {
        Ok(())
    } else {
        Err(ProductError::InvalidPrice(price))
    }
}

impl Product {
    /// Units that can still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand - self.reserved
    }

    /// Units `customer`'s live reservations hold.
    pub fn held_by(&self, customer: Uuid) -> u64 {
        self.reservations
            .values()
            .filter(|r| r.state == ReservationState::Reserved && r.customer == Some(customer))
            .map(|r| u64::from(r.quantity))
            .sum()
    }

    /// Marks a reservation settled and forgets the oldest settled one past [`SETTLED_KEPT`].
    fn settle(&mut self, order_id: Uuid, state: ReservationState) {
        if let Some(r) = self.reservations.get_mut(&order_id) {
            r.state = state;
            self.settled.push_back(order_id);
        }
        while self.settled.len() > SETTLED_KEPT {
            if let Some(oldest) = self.settled.pop_front() {
                self.reservations.remove(&oldest);
            }
        }
    }

    fn existing(&self) -> Result<(&Sku, Money), ProductError> {
        match (&self.sku, self.unit_price) {
            (Some(sku), Some(price)) => Ok((sku, price)),
            _ => Err(ProductError::NotFound),
        }
    }

    /// The events a command produces; empty when it was already done (idempotent repeat).
    fn decide(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        if let ProductCommand::Create {
            sku,
            name,
            unit_price,
            initial_stock,
        } = command
        {
            if let Some(existing) = &self.sku {
                return Err(ProductError::AlreadyExists(existing.clone()));
            }
            let chars = name.trim().chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS {
                return Err(ProductError::InvalidName);
            }
            check_price(unit_price)?;
            if initial_stock > MAX_STOCK_MOVEMENT {
                return Err(ProductError::InvalidInitialStock(initial_stock));
            }
            return Ok(vec![ProductEvent::ProductCreated {
                sku,
                name: name.trim().to_owned(),
                unit_price,
                initial_stock,
            }]);
        }
        let (sku, price) = self.existing()?;
        let sku = sku.clone();
        match command {
            ProductCommand::Create { .. } => unreachable!("handled above"),
            ProductCommand::Restock { quantity } => {
                check_quantity(quantity)?;
                Ok(vec![ProductEvent::ProductRestocked {
                    sku,
                    quantity,
                    on_hand: self.on_hand + u64::from(quantity),
                }])
            }
            ProductCommand::ChangePrice { unit_price } => {
                check_price(unit_price)?;
                if unit_price.currency != price.currency {
                    return Err(ProductError::CurrencyChange(price.currency));
                }
                if unit_price == price {
                    return Ok(vec![]);
                }
                Ok(vec![ProductEvent::PriceChanged {
                    sku,
                    old_price: price,
                    new_price: unit_price,
                }])
            }
            ProductCommand::Reserve {
                order_id,
                quantity,
                customer_id,
            } => {
                check_quantity(quantity)?;
                if let Some(existing) = self.reservations.get(&order_id) {
                    return if existing.quantity == 0 {
                        Err(ProductError::ReleasedBeforeReserved(order_id))
                    } else if existing.quantity == quantity {
                        Ok(vec![])
                    } else {
                        Err(ProductError::ReservationMismatch(order_id))
                    };
                }
                // One customer may not hold more than the product allows, whatever is left.
                if let (Some(limit), Some(customer)) = (self.customer_limit, customer_id) {
                    let held = self.held_by(customer);
                    if held + u64::from(quantity) > u64::from(limit) {
                        return Err(ProductError::CustomerLimit {
                            limit,
                            held,
                            requested: quantity,
                        });
                    }
                }
                let available = self.available();
                if u64::from(quantity) > available {
                    return Err(ProductError::OutOfStock {
                        requested: quantity,
                        available,
                    });
                }
                Ok(vec![ProductEvent::StockReserved {
                    sku,
                    order_id,
                    quantity,
                    unit_price: price,
                    available: available - u64::from(quantity),
                    customer_id,
                }])
            }
            ProductCommand::SetCustomerLimit { limit } => {
                if let Some(limit) = limit {
                    if !(1..=MAX_STOCK_MOVEMENT).contains(&limit) {
                        return Err(ProductError::InvalidLimit(limit));
                    }
                }
                if limit == self.customer_limit {
                    return Ok(vec![]);
                }
                Ok(vec![ProductEvent::CustomerLimitSet { sku, limit }])
            }
            ProductCommand::Release { order_id } => match self.reservations.get(&order_id) {
                // Released before it was made: the reservation request may still be on its way
                // (one the saga stopped waiting for, overtaken by this release). Recording the
                // release, of nothing, makes that request refused when it comes, rather than
                // holding stock for an order that gave it back.
                None => Ok(vec![ProductEvent::ReservationReleased {
                    sku,
                    order_id,
                    quantity: 0,
                    available: self.available(),
                }]),
                Some(r) => match r.state {
                    ReservationState::Released => Ok(vec![]),
                    ReservationState::Committed => Err(ProductError::AlreadyCommitted(order_id)),
                    ReservationState::Reserved => Ok(vec![ProductEvent::ReservationReleased {
                        sku,
                        order_id,
                        quantity: r.quantity,
                        available: self.available() + u64::from(r.quantity),
                    }]),
                },
            },
            ProductCommand::Commit { order_id } => match self.reservations.get(&order_id) {
                Some(r) if r.state == ReservationState::Committed => Ok(vec![]),
                Some(r) if r.state == ReservationState::Reserved => {
                    Ok(vec![ProductEvent::ReservationCommitted {
                        sku,
                        order_id,
                        quantity: r.quantity,
                        on_hand: self.on_hand - u64::from(r.quantity),
                    }])
                }
                _ => Err(ProductError::NoReservation(order_id)),
            },
        }
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProductEvent::ProductCreated {
                sku,
                name,
                unit_price,
                initial_stock,
            } => {
                self.sku = Some(sku);
                self.name = name;
                self.unit_price = Some(unit_price);
                self.on_hand = u64::from(initial_stock);
            }
            ProductEvent::ProductRestocked { on_hand, .. } => self.on_hand = on_hand,
            ProductEvent::PriceChanged { new_price, .. } => self.unit_price = Some(new_price),
            ProductEvent::StockReserved {
                order_id,
                quantity,
                unit_price,
                customer_id,
                ..
            } => {
                self.reserved += u64::from(quantity);
                self.reservations.insert(
                    order_id,
                    Reservation {
                        quantity,
                        unit_price,
                        state: ReservationState::Reserved,
                        customer: customer_id,
                    },
                );
            }
            ProductEvent::CustomerLimitSet { limit, .. } => self.customer_limit = limit,
            ProductEvent::ReservationReleased {
                order_id, quantity, ..
            } => {
                self.reserved -= u64::from(quantity);
                if let (false, Some(unit_price)) =
                    (self.reservations.contains_key(&order_id), self.unit_price)
                {
                    // A release of nothing: kept, so a late reservation of it is refused.
                    self.reservations.insert(
                        order_id,
                        Reservation {
                            quantity: 0,
                            unit_price,
                            state: ReservationState::Reserved,
                            customer: None,
                        },
                    );
                }
                self.settle(order_id, ReservationState::Released);
            }
            ProductEvent::ReservationCommitted {
                order_id,
                quantity,
                on_hand,
                ..
            } => {
                self.reserved -= u64::from(quantity);
                self.on_hand = on_hand;
                self.settle(order_id, ReservationState::Committed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::eur;
    use crate::Currency;

    fn sku() -> Sku {
        Sku::parse("SKU-1").unwrap()
    }

    fn order(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn created(stock: u32) -> ProductEvent {
        ProductEvent::ProductCreated {
            sku: sku(),
            name: "Mug".into(),
            unit_price: eur(1250),
            initial_stock: stock,
        }
    }

    fn reserved(order_id: Uuid, quantity: u32, available: u64) -> ProductEvent {
        reserved_for(order_id, quantity, available, None)
    }

    fn reserved_for(
        order_id: Uuid,
        quantity: u32,
        available: u64,
        customer_id: Option<Uuid>,
    ) -> ProductEvent {
        ProductEvent::StockReserved {
            sku: sku(),
            order_id,
            quantity,
            unit_price: eur(1250),
            available,
            customer_id,
        }
    }

    fn limit_set(limit: Option<u32>) -> ProductEvent {
        ProductEvent::CustomerLimitSet { sku: sku(), limit }
    }

    fn reserve_for(order_id: Uuid, quantity: u32, customer: Uuid) -> ProductCommand {
        ProductCommand::Reserve {
            order_id,
            quantity,
            customer_id: Some(customer),
        }
    }

    #[tokio::test]
    async fn a_customer_limit_is_set_changed_and_lifted_and_refused_out_of_range() {
        expect(
            vec![created(10)],
            ProductCommand::SetCustomerLimit { limit: Some(2) },
            vec![limit_set(Some(2))],
        )
        .await;
        expect(
            vec![created(10), limit_set(Some(2))],
            ProductCommand::SetCustomerLimit { limit: Some(2) },
            vec![],
        )
        .await;
        expect(
            vec![created(10), limit_set(Some(2))],
            ProductCommand::SetCustomerLimit { limit: None },
            vec![limit_set(None)],
        )
        .await;
        refuse(
            vec![created(10)],
            ProductCommand::SetCustomerLimit { limit: Some(0) },
            ProductError::InvalidLimit(0),
        )
        .await;
        refuse(
            vec![],
            ProductCommand::SetCustomerLimit { limit: Some(1) },
            ProductError::NotFound,
        )
        .await;
    }

    #[tokio::test]
    async fn one_customer_holds_at_most_the_limit_and_others_are_not_counted() {
        let (alice, bob) = (order(100), order(200));
        let given = vec![
            created(100),
            limit_set(Some(5)),
            reserved_for(order(1), 3, 97, Some(alice)),
            reserved_for(order(2), 4, 93, Some(bob)),
        ];
        expect(
            given.clone(),
            reserve_for(order(3), 2, alice),
            vec![reserved_for(order(3), 2, 91, Some(alice))],
        )
        .await;
        refuse(
            given.clone(),
            reserve_for(order(3), 3, alice),
            ProductError::CustomerLimit {
                limit: 5,
                held: 3,
                requested: 3,
            },
        )
        .await;
        // A settled reservation holds nothing; a repeat of a held one is still a no-op.
        let mut released = given.clone();
        released.push(ProductEvent::ReservationReleased {
            sku: sku(),
            order_id: order(1),
            quantity: 3,
            available: 96,
        });
        expect(
            released,
            reserve_for(order(3), 5, alice),
            vec![reserved_for(order(3), 5, 91, Some(alice))],
        )
        .await;
        expect(given.clone(), reserve_for(order(1), 3, alice), vec![]).await;
        // Without a customer (an older caller) or without a limit, nothing is counted.
        expect(
            given,
            ProductCommand::Reserve {
                order_id: order(4),
                quantity: 50,
                customer_id: None,
            },
            vec![reserved(order(4), 50, 43)],
        )
        .await;
        expect(
            vec![created(100), reserved_for(order(1), 60, 40, Some(alice))],
            reserve_for(order(2), 30, alice),
            vec![reserved_for(order(2), 30, 10, Some(alice))],
        )
        .await;
    }

    async fn expect(given: Vec<ProductEvent>, when: ProductCommand, then: Vec<ProductEvent>) {
        crate::given::expect::<Product>((), given, when, then).await;
    }

    async fn refuse(given: Vec<ProductEvent>, when: ProductCommand, error: ProductError) {
        crate::given::refuse::<Product>((), given, when, error).await;
    }

    fn create(name: &str, price: Money, stock: u32) -> ProductCommand {
        ProductCommand::Create {
            sku: sku(),
            name: name.into(),
            unit_price: price,
            initial_stock: stock,
        }
    }

    #[tokio::test]
    async fn create_succeeds_and_refuses_bad_input_or_a_second_create() {
        expect(vec![], create(" Mug ", eur(1250), 10), vec![created(10)]).await;
        refuse(
            vec![created(1)],
            create("Mug", eur(1250), 1),
            ProductError::AlreadyExists(sku()),
        )
        .await;
        refuse(vec![], create("  ", eur(1), 1), ProductError::InvalidName).await;
        refuse(
            vec![],
            create("Mug", eur(0), 1),
            ProductError::InvalidPrice(eur(0)),
        )
        .await;
        refuse(
            vec![],
            create("Mug", eur(1), MAX_STOCK_MOVEMENT + 1),
            ProductError::InvalidInitialStock(MAX_STOCK_MOVEMENT + 1),
        )
        .await;
    }

    #[tokio::test]
    async fn restock_adds_to_on_hand() {
        expect(
            vec![created(10)],
            ProductCommand::Restock { quantity: 5 },
            vec![ProductEvent::ProductRestocked {
                sku: sku(),
                quantity: 5,
                on_hand: 15,
            }],
        )
        .await;
        refuse(
            vec![created(10)],
            ProductCommand::Restock { quantity: 0 },
            ProductError::InvalidQuantity(0),
        )
        .await;
        refuse(
            vec![],
            ProductCommand::Restock { quantity: 1 },
            ProductError::NotFound,
        )
        .await;
    }

    #[tokio::test]
    async fn change_price_keeps_the_currency() {
        expect(
            vec![created(1)],
            ProductCommand::ChangePrice {
                unit_price: eur(999),
            },
            vec![ProductEvent::PriceChanged {
                sku: sku(),
                old_price: eur(1250),
                new_price: eur(999),
            }],
        )
        .await;
        expect(
            vec![created(1)],
            ProductCommand::ChangePrice {
                unit_price: eur(1250),
            },
            vec![],
        )
        .await;
        let usd = Money::new(999, Currency::parse("USD").unwrap());
        refuse(
            vec![created(1)],
            ProductCommand::ChangePrice { unit_price: usd },
            ProductError::CurrencyChange(Currency::parse("EUR").unwrap()),
        )
        .await;
        refuse(
            vec![created(1)],
            ProductCommand::ChangePrice {
                unit_price: eur(-1),
            },
            ProductError::InvalidPrice(eur(-1)),
        )
        .await;
    }

    #[tokio::test]
    async fn reserve_answers_with_the_unit_price_and_never_oversells() {
        expect(
            vec![created(10)],
            ProductCommand::Reserve {
                order_id: order(1),
                quantity: 4,
                customer_id: None,
            },
            vec![reserved(order(1), 4, 6)],
        )
        .await;
        refuse(
            vec![created(10), reserved(order(1), 8, 2)],
            ProductCommand::Reserve {
                order_id: order(2),
                quantity: 3,
                customer_id: None,
            },
            ProductError::OutOfStock {
                requested: 3,
                available: 2,
            },
        )
        .await;
        refuse(
            vec![created(10)],
            ProductCommand::Reserve {
                order_id: order(1),
                quantity: 0,
                customer_id: None,
            },
            ProductError::InvalidQuantity(0),
        )
        .await;
        refuse(
            vec![],
            ProductCommand::Reserve {
                order_id: order(1),
                quantity: 1,
                customer_id: None,
            },
            ProductError::NotFound,
        )
        .await;
    }

    #[tokio::test]
    async fn reserve_is_idempotent_per_order() {
        expect(
            vec![created(10), reserved(order(1), 4, 6)],
            ProductCommand::Reserve {
                order_id: order(1),
                quantity: 4,
                customer_id: None,
            },
            vec![],
        )
        .await;
        refuse(
            vec![created(10), reserved(order(1), 4, 6)],
            ProductCommand::Reserve {
                order_id: order(1),
                quantity: 5,
                customer_id: None,
            },
            ProductError::ReservationMismatch(order(1)),
        )
        .await;
    }

    #[tokio::test]
    async fn release_returns_stock_once() {
        let released = ProductEvent::ReservationReleased {
            sku: sku(),
            order_id: order(1),
            quantity: 4,
            available: 10,
        };
        expect(
            vec![created(10), reserved(order(1), 4, 6)],
            ProductCommand::Release { order_id: order(1) },
            vec![released.clone()],
        )
        .await;
        expect(
            vec![created(10), reserved(order(1), 4, 6), released],
            ProductCommand::Release { order_id: order(1) },
            vec![],
        )
        .await;
        // Released before it was made: recorded, so the reservation, should it come, is refused.
        let nothing = ProductEvent::ReservationReleased {
            sku: sku(),
            order_id: order(9),
            quantity: 0,
            available: 10,
        };
        expect(
            vec![created(10)],
            ProductCommand::Release { order_id: order(9) },
            vec![nothing.clone()],
        )
        .await;
        expect(
            vec![created(10), nothing.clone()],
            ProductCommand::Release { order_id: order(9) },
            vec![],
        )
        .await;
        refuse(
            vec![created(10), nothing],
            ProductCommand::Reserve {
                order_id: order(9),
                quantity: 2,
                customer_id: None,
            },
            ProductError::ReleasedBeforeReserved(order(9)),
        )
        .await;
        refuse(
            vec![created(10), reserved(order(1), 4, 6), committed(4, 6)],
            ProductCommand::Release { order_id: order(1) },
            ProductError::AlreadyCommitted(order(1)),
        )
        .await;
    }

    fn committed(quantity: u32, on_hand: u64) -> ProductEvent {
        ProductEvent::ReservationCommitted {
            sku: sku(),
            order_id: order(1),
            quantity,
            on_hand,
        }
    }

    #[tokio::test]
    async fn commit_takes_stock_out_once() {
        expect(
            vec![created(10), reserved(order(1), 4, 6)],
            ProductCommand::Commit { order_id: order(1) },
            vec![committed(4, 6)],
        )
        .await;
        expect(
            vec![created(10), reserved(order(1), 4, 6), committed(4, 6)],
            ProductCommand::Commit { order_id: order(1) },
            vec![],
        )
        .await;
        refuse(
            vec![created(10)],
            ProductCommand::Commit { order_id: order(1) },
            ProductError::NoReservation(order(1)),
        )
        .await;
    }

    /// Order 1 reserved and committed, order 2 reserved and left open, then `SETTLED_KEPT`
    /// more orders (from 3) reserved and committed, one unit each, out of 20,100 in stock.
    fn long_history() -> Vec<ProductEvent> {
        let mut on_hand = 20_100;
        let mut history = vec![created(20_100), reserved(order(2), 1, 20_099)];
        for n in std::iter::once(1).chain(3..3 + SETTLED_KEPT as u128) {
            on_hand -= 1;
            history.push(reserved(order(n), 1, on_hand - 1));
            history.push(ProductEvent::ReservationCommitted {
                sku: sku(),
                order_id: order(n),
                quantity: 1,
                on_hand,
            });
        }
        history
    }

    #[tokio::test]
    async fn the_oldest_settled_reservation_is_forgotten_past_the_bound_and_a_live_one_never() {
        // Order 1 is the settled reservation one too many: a commit of it is answered as for
        // an order never seen, where a remembered one's is a repeat.
        refuse(
            long_history(),
            ProductCommand::Commit { order_id: order(1) },
            ProductError::NoReservation(order(1)),
        )
        .await;
        expect(
            long_history(),
            ProductCommand::Commit { order_id: order(3) },
            vec![],
        )
        .await;
        // The live reservation, older than every settled one, is still there to release.
        expect(
            long_history(),
            ProductCommand::Release { order_id: order(2) },
            vec![ProductEvent::ReservationReleased {
                sku: sku(),
                order_id: order(2),
                quantity: 1,
                // 20,100 less the SETTLED_KEPT + 1 units committed.
                available: 20_100 - SETTLED_KEPT as u64 - 1,
            }],
        )
        .await;

        let mut p = Product::default();
        for e in long_history() {
            p.apply(e);
        }
        assert_eq!(p.settled.len(), SETTLED_KEPT);
        assert_eq!(
            p.reservations.len(),
            SETTLED_KEPT + 1,
            "the settled ones and order 2"
        );
        assert_eq!(
            (p.reserved, p.available()),
            (1, 20_100 - SETTLED_KEPT as u64 - 2)
        );
    }

    #[test]
    fn a_snapshot_from_before_the_bound_does_not_decode_so_the_product_is_folded_again() {
        let mut p = Product::default();
        for e in [created(10), reserved(order(1), 4, 6), committed(4, 6)] {
            p.apply(e);
        }
        let mut old = serde_json::to_value(&p).unwrap();
        old.as_object_mut().unwrap().remove("settled");
        assert!(serde_json::from_value::<Product>(old).is_err());
        assert_eq!(
            serde_json::from_value::<Product>(serde_json::to_value(&p).unwrap()).unwrap(),
            p
        );
    }

    #[test]
    fn available_counts_live_reservations_only() {
        let mut p = Product::default();
        for e in [
            created(10),
            reserved(order(1), 4, 6),
            reserved(order(2), 3, 3),
            committed(4, 6),
        ] {
            p.apply(e);
        }
        assert_eq!((p.on_hand, p.reserved, p.available()), (6, 3, 3));
    }
}
