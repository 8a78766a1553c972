//! The streamshop domain: aggregates, commands, events and their errors.
//!
//! Invariant: this crate does no I/O and depends on no sqlx, axum or async-nats. Time comes in
//! through commands, never from a clock read inside an aggregate.
#![forbid(unsafe_code)]

pub mod order;
pub mod sku;

pub use sku::Sku;
