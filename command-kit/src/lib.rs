//! What every command service shares, so orders, inventory and payments are one mechanism:
//! a [`CommandSpec`] per context says how to read its commands and what to answer; the
//! [`Dispatcher`] runs them (idempotency, retries, replies) for both HTTP and NATS
//! request/reply; [`CommandApp`] wires database, outbox relay, NATS and HTTP.
//!
//! Invariant: HTTP and NATS reach a command through the same `Dispatcher::dispatch`, so they
//! cannot disagree on validation, idempotency or answers.
#![forbid(unsafe_code)]

pub mod app;
pub mod dispatch;
pub mod http;
pub mod nats;
pub mod openapi;
pub mod settings;
pub mod spec;

pub use app::{CommandApp, Parts, Resources};
pub use contracts::Reply;
pub use dispatch::{Dispatcher, Request};
pub use settings::{settings, ServiceSettings};
pub use spec::{parsed, Binding, CommandSpec, Parsed};
