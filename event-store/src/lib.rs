//! Command-side persistence shared by every command service: the postgres-es event store,
//! command execution that reports the new version, the transactional outbox and its relay.
//!
//! Invariant: events reach JetStream only through the outbox relay, never from a cqrs-es
//! `Query` (those run after commit, in-process, without retry).
#![forbid(unsafe_code)]

pub mod bus;
pub mod locks;
pub mod relay;

pub use bus::{BusError, CommandBus, CommandMetadata, Executed};
pub use relay::{Relay, RelaySettings};

/// Migrations for a command service's database: the event store and the outbox.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
