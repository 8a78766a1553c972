//! Command-side persistence shared by every command service: the postgres-es event store,
//! command execution that reports the new version, the transactional outbox and its relay.
//!
//! Invariant: events reach JetStream only through the outbox relay, never from a cqrs-es
//! `Query` (those run after commit, in-process, without retry).
#![forbid(unsafe_code)]

pub mod bus;
pub mod group;
pub mod locks;
pub mod relay;

pub use bus::{BusError, CommandBus, CommandMetadata, Executed};
pub use relay::{Relay, RelaySettings};

/// Migrations for a command service's database: the event store and the outbox.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A command service's database as code: [`MIGRATOR`], and what the role the service runs as
/// may do.
///
/// Invariant: that role appends and reads events and can never UPDATE, DELETE or TRUNCATE
/// one (it replaces snapshots, which are derived from them). It deletes only what is transient: outbox rows JetStream acknowledged, and
/// idempotency answers past their retention.
pub static SCHEMA: service_kit::db::Schema = service_kit::db::Schema {
    migrator: &MIGRATOR,
    grants: &[
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT ON events TO {role}",
        "GRANT SELECT, DELETE ON outbox TO {role}",
        "GRANT SELECT, INSERT, DELETE ON idempotency TO {role}",
        "GRANT SELECT, INSERT ON outbox_dead_letters TO {role}",
        // Snapshots are derived from the events and replaced as they grow.
        "GRANT SELECT, INSERT, UPDATE ON snapshots TO {role}",
        // Kept by triggers as the owner; the orchestrator and inventory's expiry only list them.
        "GRANT SELECT ON open_sagas TO {role}",
        "GRANT SELECT ON open_reservations TO {role}",
        // The acknowledgement floors of its durable consumers, to restore a lost one.
        "GRANT SELECT, INSERT, UPDATE ON consumer_floors TO {role}",
        // Customers' data keys (orders): made on a first order, erased by an operator.
        "GRANT SELECT, INSERT, UPDATE ON customer_keys TO {role}",
        // The provider's PaymentIntent of each order (payments), recorded once.
        "GRANT SELECT, INSERT ON payment_intents TO {role}",
    ],
    owner_statements: &[],
};
