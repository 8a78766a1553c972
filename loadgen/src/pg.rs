//! Databases for each figure, Postgres commit counts, and the raw Postgres baselines: single-row
//! INSERT transactions and batched inserts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::drive::{drive, Pace, Run};

/// The cluster a benchmark runs on, reached as its superuser.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub admin_url: String,
}

impl Cluster {
    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => format!("{}/{name}", self.admin_url),
        }
    }

    /// Drops and creates database `name`; returns its URL.
    pub async fn fresh(&self, name: &str) -> anyhow::Result<String> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("connecting to the benchmark's Postgres")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        Ok(self.url(name))
    }

    /// Transactions committed so far in `databases`, as Postgres's statistics have them.
    pub async fn commits(&self, databases: &[String]) -> anyhow::Result<i64> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT sum(xact_commit)::bigint FROM pg_stat_database WHERE datname = ANY($1)",
        )
        .bind(databases)
        .fetch_one(&mut admin)
        .await?;
        Ok(n.unwrap_or(0))
    }
}

/// One statement's share of the database's time (from `pg_stat_statements`).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StatementCost {
    pub database: String,
    pub calls: i64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub query: String,
}

impl Cluster {
    /// Starts counting statements afresh; false when `pg_stat_statements` is not loaded.
    pub async fn reset_statements(&self) -> bool {
        let Ok(mut admin) = PgConnection::connect(&self.admin_url).await else {
            return false;
        };
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut admin)
            .await
            .is_ok()
            && sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&mut admin)
                .await
                .is_ok()
    }

    /// The `n` statements that took the most execution time since the reset.
    pub async fn top_statements(&self, n: i64) -> anyhow::Result<Vec<StatementCost>> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        Ok(sqlx::query_as(
            "SELECT d.datname AS database, s.calls, s.total_exec_time AS total_ms, \
                    s.mean_exec_time AS mean_ms, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 160) AS query \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             ORDER BY s.total_exec_time DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&mut admin)
        .await?)
    }
}

/// A small table shaped like an event row: what the raw baselines write.
const RAW_TABLE: &str = "CREATE TABLE IF NOT EXISTS raw_rows \
    (id uuid PRIMARY KEY, kind text NOT NULL, seq bigint NOT NULL, body jsonb NOT NULL, \
     at timestamptz NOT NULL DEFAULT now())";

fn body() -> serde_json::Value {
    serde_json::json!({"customer_id": Uuid::new_v4(), "lines": [{"sku": "BENCH-0001", "quantity": 1}]})
}

/// Single-row INSERT transactions (autocommit) from `clients` connections for `duration`.
pub async fn insert_transactions(
    url: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .min_connections(clients as u32)
        .connect(url)
        .await?;
    sqlx::query(RAW_TABLE).execute(&pool).await?;
    let pool = Arc::new(pool);
    let run = drive(clients, Pace::Closed, duration, move |i| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO raw_rows (id, kind, seq, body) VALUES ($1, 'OrderPlaced', $2, $3)",
            )
            .bind(Uuid::now_v7())
            .bind(i as i64)
            .bind(body())
            .execute(&*pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    })
    .await;
    Ok(run)
}

/// Inserts `rows` rows in multi-row statements of 1,000 (one transaction each) over two
/// connections; returns rows per second.
pub async fn batched_inserts(pool: &PgPool, rows: u64) -> anyhow::Result<f64> {
    sqlx::query(RAW_TABLE).execute(pool).await?;
    sqlx::query("TRUNCATE raw_rows").execute(pool).await?;
    const BATCH: u64 = 1000;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (pool, next) = (pool.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(BATCH, std::sync::atomic::Ordering::Relaxed);
                if from >= rows {
                    return Ok::<_, sqlx::Error>(());
                }
                let n = BATCH.min(rows - from) as usize;
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let seqs: Vec<i64> = (0..n).map(|i| (from as usize + i) as i64).collect();
                let bodies: Vec<serde_json::Value> = (0..n).map(|_| body()).collect();
                sqlx::query(
                    "INSERT INTO raw_rows (id, kind, seq, body) \
                     SELECT id, 'OrderPlaced', seq, body FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[]) AS t(id, seq, body)",
                )
                .bind(&ids)
                .bind(&seqs)
                .bind(&bodies)
                .execute(&pool)
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
