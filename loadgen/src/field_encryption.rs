//! Figure 7's second part: what sealing the payment token costs. The orders service seals
//! each `PlaceOrder`'s token under the customer's data key (made, wrapped and stored on their
//! first order; read back on every later one), and opens it for payments' authorisation.
//! Measured here with the service's own `CustomerKeys` on a fresh database of the
//! benchmark's Postgres, one operation at a time, beside the baseline of the same run: a
//! one-row `SELECT` by primary key on the same pool (what a known customer's seal and an
//! open add in the database), and the AES-256-GCM alone.

use std::time::Instant;

use anyhow::Context;
use domain::sealing::{Field, TokenSealer};
use serde::Serialize;
use service_kit::sealing::{self as seal, Key};
use sqlx::Connection;
use uuid::Uuid;

use crate::stats::Spread;
use crate::Bench;

/// Customers (and as many of each operation) per round.
const CUSTOMERS: usize = 2_000;
/// In-process seals and opens per round, for the AES-GCM alone.
const IN_PROCESS: usize = 100_000;

/// The figure, in µs per operation, a run per round.
#[derive(Debug, Clone, Serialize)]
pub struct FieldEncryption {
    /// A new customer's first seal: a data key made, wrapped by the master key, stored, read.
    pub seal_new_customer_us: Spread,
    /// A seal for a customer who has a key: one read of it, unwrapped, then AES-GCM.
    pub seal_known_customer_us: Spread,
    /// Opening a sealed token (payments' authorisation): one read by key id, unwrap, AES-GCM.
    pub open_us: Spread,
    /// Baseline: a one-row `SELECT` by primary key on the same pool.
    pub select_baseline_us: Spread,
    /// Baseline: sealing and opening a token in memory with a key at hand.
    pub aes_seal_open_us: Spread,
}

fn micros_per(started: Instant, n: usize) -> f64 {
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Each operation [`CUSTOMERS`] times per round, on a fresh database per round.
pub async fn run(b: &Bench) -> anyhow::Result<FieldEncryption> {
    println!("figure 7b: what sealing the payment token costs");
    let mut runs: [Vec<f64>; 5] = Default::default();
    for round in 0..b.repeats {
        let url = b.cluster.fresh(&format!("bench_sec_keys{round}")).await?;
        let mut owner = sqlx::PgConnection::connect(&url).await?;
        let me: String = sqlx::query_scalar("SELECT current_user")
            .fetch_one(&mut owner)
            .await?;
        event_store::SCHEMA
            .apply(&mut owner, &me)
            .await
            .context("migrating the keys' database")?;
        owner.close().await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        let keys = orders::keys::CustomerKeys::new(pool.clone(), Key::generate()?);
        let customers: Vec<Uuid> = (0..CUSTOMERS).map(|_| Uuid::new_v4()).collect();
        let orders: Vec<Uuid> = (0..CUSTOMERS).map(|_| Uuid::now_v7()).collect();

        let started = Instant::now();
        for (customer, order) in customers.iter().zip(&orders) {
            keys.seal(*customer, *order, Field::PaymentToken, "tok_ok")
                .await?;
        }
        let new_customer = micros_per(started, CUSTOMERS);

        let started = Instant::now();
        let mut sealed = Vec::with_capacity(CUSTOMERS);
        for (customer, order) in customers.iter().zip(&orders) {
            sealed.push(
                keys.seal(*customer, *order, Field::PaymentToken, "tok_ok")
                    .await?,
            );
        }
        let known_customer = micros_per(started, CUSTOMERS);

        let started = Instant::now();
        for (order, token) in orders.iter().zip(&sealed) {
            let clear = keys.open(*order, Field::PaymentToken, token).await?;
            anyhow::ensure!(clear == "tok_ok", "a sealed token opened to something else");
        }
        let open = micros_per(started, CUSTOMERS);

        let started = Instant::now();
        for customer in &customers {
            let _: Option<Uuid> =
                sqlx::query_scalar("SELECT key_id FROM customer_keys WHERE customer_id = $1")
                    .bind(customer)
                    .fetch_optional(&pool)
                    .await?;
        }
        let select = micros_per(started, CUSTOMERS);
        pool.close().await;

        let key = Key::generate()?;
        let (key_id, aad) = (Uuid::new_v4(), seal::payment_token_aad(Uuid::now_v7()));
        let started = Instant::now();
        for _ in 0..IN_PROCESS {
            let sealed = seal::seal(&key, key_id, "tok_ok", &aad)?;
            std::hint::black_box(seal::open(&key, &sealed, &aad)?);
        }
        let aes = micros_per(started, IN_PROCESS);

        println!(
            "  round {}: seal {new_customer:.0} µs (new customer), {known_customer:.0} µs \
             (known), open {open:.0} µs; a one-row SELECT {select:.0} µs, AES-GCM {aes:.1} µs",
            round + 1
        );
        for (run, value) in runs
            .iter_mut()
            .zip([new_customer, known_customer, open, select, aes])
        {
            run.push(value);
        }
    }
    let [new_customer, known_customer, open, select, aes] = runs;
    Ok(FieldEncryption {
        seal_new_customer_us: Spread::of(&new_customer),
        seal_known_customer_us: Spread::of(&known_customer),
        open_us: Spread::of(&open),
        select_baseline_us: Spread::of(&select),
        aes_seal_open_us: Spread::of(&aes),
    })
}
