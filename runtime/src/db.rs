//! Database settings every service reads the same way, and the pool they open.

use std::time::Duration;

use crate::env::{Env, EnvError};
use crate::secret::Secret;

/// `DATABASE_URL` and `DATABASE_MAX_CONNECTIONS`.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: Secret<String>,
    pub max_connections: u32,
}

impl DatabaseSettings {
    /// Reads the variables, with this service's defaults.
    pub fn from_env(
        env: &Env,
        default_url: &str,
        default_max_connections: u32,
    ) -> Result<Self, EnvError> {
        Ok(Self {
            url: Secret::new(env.string_or("DATABASE_URL", default_url)),
            max_connections: env.parse_or("DATABASE_MAX_CONNECTIONS", default_max_connections)?,
        })
    }

    /// Opens a pool; waits at most 5 s for a free connection before a request fails.
    pub async fn connect(&self) -> Result<sqlx::PgPool, sqlx::Error> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(self.url.expose())
            .await
    }
}
