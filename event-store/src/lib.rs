//! Command-side persistence shared by every command service: the postgres-es event store,
//! command execution that reports the new version, the transactional outbox and its relay.
//!
//! Invariant: events reach JetStream only through the outbox relay, never from a cqrs-es
//! `Query` (those run after commit, in-process, without retry).
#![forbid(unsafe_code)]

pub mod bus;
pub mod relay;

pub use bus::{CommandBus, CommandMetadata, Committed};
pub use relay::{Relay, RelaySettings};

/// Migrations for a command service's database: the event store and the outbox.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects a pool and applies [`MIGRATOR`].
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> Result<sqlx::PgPool, sqlx::Error> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
