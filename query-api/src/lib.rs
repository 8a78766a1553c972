//! The query API: HTTP reads over the read models, with read-your-writes waits.
//!
//! Invariant: it only reads the `read` database; it never writes a read model and never talks
//! to a command service.
#![forbid(unsafe_code)]

pub mod app;
pub mod caching;
pub mod catalog;
pub mod error;
pub mod freshness;
pub mod http;
pub mod openapi;
pub mod orders;
pub mod settings;

pub use app::App;
pub use settings::Settings;
