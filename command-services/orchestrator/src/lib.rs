//! The saga orchestrator: turns each placed order into a confirmed or rejected one across
//! inventory and payments, with no distributed transaction. Input is events from JetStream;
//! output is commands over NATS request/reply; state is the event-sourced OrderSaga in the
//! `orchestrator` database, published to `SAGAS` through the same outbox as every service.
#![forbid(unsafe_code)]

pub mod app;
pub mod driver;
pub mod http;
pub mod inputs;
pub mod settings;
pub mod shares;
pub mod steps;
pub mod timers;
pub mod traces;

pub use app::App;
pub use settings::Settings;
