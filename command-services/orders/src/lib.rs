//! The orders command service: the Order aggregate's commands over HTTP and NATS
//! (`cmd.orders.*`), its event store in the `orders` database, and its outbox to `ORDERS`.
#![forbid(unsafe_code)]

pub mod spec;

pub use spec::OrdersSpec;
