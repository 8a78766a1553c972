//! The gateway: the one public entry. It verifies OpenID Connect access tokens, decides what
//! each caller may do, limits rates, and passes allowed calls to the internal services; it
//! streams an order's progress from JetStream.
//!
//! Invariant: the gateway holds no database and writes nothing; every change goes through a
//! command service's public command route.
#![forbid(unsafe_code)]

pub mod app;
pub mod catalog;
pub mod edge;
pub mod error;
pub mod oidc;
pub mod openapi;
pub mod owners;
pub mod routes;
pub mod settings;
pub mod sse;
pub mod streams;
pub mod upstream;
pub mod verified;

pub use app::App;
pub use settings::Settings;
