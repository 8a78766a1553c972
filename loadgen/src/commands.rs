//! Figure 1: orders placed per second (202s) at 1, 16 and 64 clients, beside a bare axum + sqlx
//! handler doing the same insert and raw single-row INSERT transactions.

use contracts::orders::PlaceOrder;
use domain::order::OrderLine;
use domain::Sku;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::drive::{drive, expect_status, http_client, rate_and_latency, HttpFigure, Pace, Run};
use crate::procs::Proc;
use crate::stats::Spread;
use crate::Bench;

pub const CLIENTS: [usize; 3] = [1, 16, 64];

/// Database connections of the orders service and of the bare handler alike: enough for
/// Postgres to group the commits of 64 clients.
const POOL: &str = "32";

/// One row per concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct CommandsRow {
    pub clients: usize,
    pub streamshop: HttpFigure,
    pub bare: HttpFigure,
    /// Raw single-row INSERT transactions per second.
    pub postgres_inserts: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandsFigure {
    pub rows: Vec<CommandsRow>,
}

/// The `i`th order: one line, spread over 100 SKUs and 1,000 customers.
pub fn order_body(i: u64) -> PlaceOrder {
    let customer = 0x0192f0c1_0000_7000_8000_000000000000 + u128::from(i % 1000);
    PlaceOrder {
        customer_id: Uuid::from_u128(customer),
        lines: vec![OrderLine {
            sku: bench_sku(i % BENCH_PRODUCTS),
            quantity: 1,
        }],
        payment_token: "tok_ok".into(),
        email: None,
    }
}

/// How many products the benchmark makes (`sagas::create_products_at`) and orders spread over.
pub const BENCH_PRODUCTS: u64 = 100;

/// The benchmark's `n`th SKU, `BENCH-000n`.
pub fn bench_sku(n: u64) -> Sku {
    Sku::parse(&format!("BENCH-{n:04}")).expect("a valid SKU")
}

pub async fn run(b: &Bench) -> anyhow::Result<CommandsFigure> {
    println!("figure 1: commands");
    let url = b.cluster.fresh("bench_cmd_orders").await?;
    let orders = b
        .service(
            "orders",
            &url,
            "benchcmd",
            &[("DATABASE_MAX_CONNECTIONS", "10")],
        )
        .await?;
    let streamshop = measure(b, &orders.base_url, "streamshop").await;
    orders.stop().await;

    let url = b.cluster.fresh("bench_cmd_bare").await?;
    let bare = Proc::start(
        "bare-orders",
        &b.self_exe,
        &[
            "bare-server".into(),
            "--max-connections".into(),
            POOL.into(),
            "--migrate".into(),
        ],
        // The URL holds a password: through the environment, never the arguments.
        &[("DATABASE_URL".to_owned(), url)],
        false,
        &b.logs,
    )
    .await?;
    let bare_figures = measure(b, &bare.base_url, "bare").await;
    bare.stop().await;

    let url = b.cluster.fresh("bench_cmd_raw").await?;
    let mut rows = Vec::new();
    for ((clients, streamshop), bare) in CLIENTS.into_iter().zip(streamshop?).zip(bare_figures?) {
        let mut rates = Vec::new();
        for _ in 0..b.repeats {
            rates.push(
                crate::pg::insert_transactions(&url, clients, b.duration)
                    .await?
                    .rate(),
            );
        }
        let postgres_inserts = Spread::of(&rates);
        println!(
            "  postgres inserts, {clients} clients: {} tx/s",
            postgres_inserts.show(0)
        );
        rows.push(CommandsRow {
            clients,
            streamshop,
            bare,
            postgres_inserts,
        });
    }
    Ok(CommandsFigure { rows })
}

/// Closed-loop rate and open-loop latency of `POST /orders` at each concurrency.
async fn measure(b: &Bench, base: &str, label: &str) -> anyhow::Result<Vec<HttpFigure>> {
    let warm = place(base, 16, b, Pace::Closed, Duration::from_secs(1)).await;
    anyhow::ensure!(
        warm.ok > 0,
        "{label}: no order was accepted while warming up: {:?}",
        warm.first_error
    );
    let mut out = Vec::new();
    for clients in CLIENTS {
        out.push(
            rate_and_latency(label, clients, b.repeats, |pace| {
                place(base, clients, b, pace, b.duration)
            })
            .await,
        );
    }
    Ok(out)
}

async fn place(base: &str, clients: usize, b: &Bench, pace: Pace, duration: Duration) -> Run {
    let client = http_client(clients);
    let url = format!("{base}/orders");
    let seed = b.next_seed();
    drive(clients, pace, duration, move |i| {
        let request = client
            .post(&url)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&order_body(seed + i));
        async move { expect_status(request, 202).await.map(|_| ()) }
    })
    .await
}
