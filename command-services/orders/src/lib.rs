//! The orders command service: the Order aggregate's commands over HTTP and NATS
//! (`cmd.orders.*`), its event store in the `orders` database, and its outbox to `ORDERS`.
#![forbid(unsafe_code)]

pub mod spec;

use command_kit::settings::ServiceDefaults;
use command_kit::{CommandApp, ServiceSettings};
use runtime::env::{Env, EnvError};

pub use spec::OrdersSpec;

/// Port and database of `cargo xtask up`.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    port: 8081,
    database_url: "postgres://orders@127.0.0.1:25432/orders",
};

/// The service's settings from an environment.
pub fn settings(env: &Env) -> Result<ServiceSettings, EnvError> {
    ServiceSettings::from_env(env, DEFAULTS)
}

/// The service, built and bound.
pub async fn app(settings: &ServiceSettings) -> anyhow::Result<CommandApp> {
    CommandApp::build(settings, OrdersSpec, (), domain::order::upcasters()).await
}
