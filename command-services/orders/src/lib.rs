//! The orders command service: HTTP commands on the Order aggregate, its event store in the
//! `orders` database, and the outbox relay to the `ORDERS` stream.
#![forbid(unsafe_code)]

pub mod app;
pub mod error;
pub mod http;
pub mod settings;

pub use app::App;
pub use settings::Settings;
