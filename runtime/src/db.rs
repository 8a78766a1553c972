//! Database settings every service reads the same way, and the pool they open.

use std::time::Duration;

use crate::env::{Env, EnvError};
use crate::secret::Secret;

/// `DATABASE_URL`, `DATABASE_OWNER_URL` and `DATABASE_MAX_CONNECTIONS`.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// The service's everyday role: it may do what the service does and nothing more.
    pub url: Secret<String>,
    /// The role that owns the database's tables, used once at start-up to migrate and to
    /// grant the everyday role its privileges; unset when the everyday role owns the tables.
    pub owner_url: Option<Secret<String>>,
    pub max_connections: u32,
}

/// A database's schema as code: its migrations, and the privileges of the role a service
/// runs as (each statement with `{role}` where that role's name goes).
#[derive(Debug)]
pub struct Schema {
    pub migrator: &'static sqlx::migrate::Migrator,
    pub grants: &'static [&'static str],
}

impl Schema {
    /// Migrates the database as its owner (`owner`), then grants `role` its privileges; when
    /// the role is the owner there is nothing to grant.
    pub async fn apply(
        &self,
        owner: &mut sqlx::PgConnection,
        role: &str,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        self.migrator.run(&mut *owner).await?;
        let me: String = sqlx::query_scalar("SELECT current_user")
            .fetch_one(&mut *owner)
            .await?;
        if me == role {
            return Ok(());
        }
        let role = quote_identifier(role);
        for grant in self.grants {
            sqlx::query(&grant.replace("{role}", &role))
                .execute(&mut *owner)
                .await?;
        }
        Ok(())
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The user a Postgres URL logs in as.
pub fn user_of(url: &str) -> Result<String, sqlx::Error> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    Ok(options.get_username().to_owned())
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
            owner_url: env
                .get("DATABASE_OWNER_URL")
                .map(|u| Secret::new(u.to_owned())),
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
