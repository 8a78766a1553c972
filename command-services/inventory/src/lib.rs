//! The inventory command service: Product aggregates (one per SKU: catalog and stock) over
//! HTTP and NATS (`cmd.inventory.*`), the `inventory` database, its outbox to `INVENTORY`.
#![forbid(unsafe_code)]

pub mod spec;

use command_kit::settings::ServiceDefaults;
use command_kit::{CommandApp, ServiceSettings};
use runtime::env::{Env, EnvError};

pub use spec::InventorySpec;

/// Port and database of `cargo xtask up`.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    port: 8082,
    database_url: "postgres://inventory@127.0.0.1:25432/inventory",
};

/// The service's settings from an environment.
pub fn settings(env: &Env) -> Result<ServiceSettings, EnvError> {
    ServiceSettings::from_env(env, DEFAULTS)
}

/// The service, built and bound.
pub async fn app(settings: &ServiceSettings) -> anyhow::Result<CommandApp> {
    CommandApp::build(settings, InventorySpec, (), vec![]).await
}
