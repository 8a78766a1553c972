//! Database settings every service reads the same way, and the pool they open.

use std::time::Duration;

use crate::env::{Env, EnvError};
use crate::secret::Secret;

/// `DATABASE_URL`, `DATABASE_OWNER_URL`, `DATABASE_MAX_CONNECTIONS` and
/// `DATABASE_STATEMENT_TIMEOUT_MS`.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// The service's everyday role: it may do what the service does and nothing more.
    pub url: Secret<String>,
    /// The role that owns the database's tables, used once at start-up to migrate and to
    /// grant the everyday role its privileges; unset when the everyday role owns the tables.
    pub owner_url: Option<Secret<String>>,
    pub max_connections: u32,
    /// The longest one statement of the service may run before Postgres cancels it (0: no
    /// limit), so a stuck query fails a request instead of holding a connection for ever.
    /// Migrations, run as the owner, have none.
    pub statement_timeout: Duration,
    /// Run-time parameters every connection is opened with (`name = value`), beside the
    /// statement timeout: a service's rules that its database's triggers read (orders' fair
    /// shares, say). Set by the service, not read from the environment.
    pub session: Vec<(String, String)>,
}

/// A database's schema as code: its migrations, and the privileges of the role a service
/// runs as (each statement with `{role}` where that role's name goes).
#[derive(Debug)]
pub struct Schema {
    pub migrator: &'static sqlx::migrate::Migrator,
    pub grants: &'static [&'static str],
    /// Statements the owner runs after the migrations at every start, whatever role the
    /// service runs as: what must hold however the database was provisioned (a grant to
    /// other roles that provisioning widened, narrowed again).
    pub owner_statements: &'static [&'static str],
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
        for statement in self.owner_statements {
            sqlx::query(statement).execute(&mut *owner).await?;
        }
        let me: String = sqlx::query_scalar("SELECT current_user")
            .fetch_one(&mut *owner)
            .await?;
        if me == role {
            return Ok(());
        }
        // One transaction: the grants begin by revoking everything, and the replicas already
        // running as `role` (a rollout starts one while the others serve) must see the old
        // privileges or the new ones, never none. Replicas starting at once take turns, since
        // concurrent GRANTs on one table fail ("tuple concurrently updated").
        use sqlx::Connection;
        let role = quote_identifier(role);
        let mut tx = owner.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(GRANTS_LOCK)
            .execute(&mut *tx)
            .await?;
        for grant in self.grants {
            sqlx::query(&grant.replace("{role}", &role))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The transaction-scoped advisory lock that orders the grants of replicas starting at once
/// ("grants" in ASCII).
const GRANTS_LOCK: i64 = 0x6772_616e_7473;

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
            statement_timeout: env
                .millis_or("DATABASE_STATEMENT_TIMEOUT_MS", Duration::from_secs(10))?,
            session: Vec::new(),
        })
    }

    /// Opens a pool; waits at most 5 s for a free connection before a request fails (503,
    /// `Problem::internal`), and every connection has the statement timeout.
    pub async fn connect(&self) -> Result<sqlx::PgPool, sqlx::Error> {
        use std::str::FromStr;
        let options = sqlx::postgres::PgConnectOptions::from_str(self.url.expose())?;
        // Each pool's sessions carry a name of their own (the URL's, or `streamshop`, and an
        // id): the outbox trigger's NOTIFY says whose commit sent it, so a relay passes over
        // its own pool's (the command bus woke it already), and pg_stat_activity tells the
        // replicas apart.
        let name = format!(
            "{}/{}",
            options.get_application_name().unwrap_or("streamshop"),
            pool_id()
        );
        let options = options
            .application_name(&name)
            .options([(
                "statement_timeout",
                self.statement_timeout.as_millis().to_string(),
            )])
            .options(self.session.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
    }
}

/// A short id for a new pool, unique within the machine for as long as it matters: the
/// process id and a count.
fn pool_id() -> String {
    static POOLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = POOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}.{n}", std::process::id())
}

/// Whether `error` says the database is away rather than that it refused: no connection to
/// be had (refused, reset, none free in time, the pool closed), the server shutting down,
/// crashed or still starting (SQLSTATE 57P01-57P03), or the connection broken (class 08).
/// What was being done may or may not have happened; trying again later is the answer.
/// The one test of it: the HTTP answer (503), the command bus, group commit and start-up
/// all ask here.
pub fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}
