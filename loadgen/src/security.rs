//! Figure 7: what TLS and the NATS permissions cost. The same release binaries do the same
//! work twice per round, alternating: once "open", on a second NATS server with no users and
//! no TLS and with every service at `TLS=off` (how the stack ran before both), and once
//! "secured", as the stack runs (mutual TLS on every NATS and internal HTTP connection, an
//! nkey per service, per-identity permissions). Each side gets fresh databases and its own
//! namespace.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::commands::order_body;
use crate::drive::{drive, expect_status, http_client, Pace};
use crate::procs::{Monitor, Proc, Watched};
use crate::stats::{ratio, Spread};
use crate::{Bench, Transport};

/// Clients placing orders, for both measures.
const CLIENTS: usize = 64;
/// Orders of one saga burst.
const BURST: u64 = 400;
/// Events of the bulk stream read (an analyst's export, a projection rebuild).
const STREAM_EVENTS: u64 = 200_000;

/// One side's measures, a run per round.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// `POST /orders` accepted per second at 64 clients, straight to the orders service.
    pub commands_per_second: Spread,
    /// Sagas confirmed per second: a burst of 400 orders placed by 64 clients, from the first
    /// request to the last `OrderConfirmed` in the orders event store.
    pub sagas_per_second: Spread,
    /// CPU of every process (services, NATS, Postgres) per saga of the burst, in ms.
    pub cpu_ms_per_saga: Spread,
    /// Events per second read from a stream of 200,000 events by an ordered consumer, as
    /// a rebuild or an export reads.
    pub stream_read_per_second: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecurityFigure {
    pub open: Side,
    pub secured: Side,
    /// Secured over open, per round, for each measure.
    pub commands_share: Spread,
    pub sagas_share: Spread,
    pub stream_read_share: Spread,
}

impl SecurityFigure {
    /// The largest of the throughput costs (1 - share), from the medians of the rounds; none
    /// when the secured side was as fast or faster.
    pub fn cost(&self) -> f64 {
        let worst = self
            .commands_share
            .median
            .min(self.sagas_share.median)
            .min(self.stream_read_share.median);
        (1.0 - worst).max(0.0)
    }
}

/// One side's runs, one value per round.
#[derive(Debug, Default)]
struct Runs {
    commands: Vec<f64>,
    sagas: Vec<f64>,
    cpu: Vec<f64>,
    reads: Vec<f64>,
}

/// A nats-server with JetStream and nothing else: no users, no TLS.
struct OpenNats {
    child: tokio::process::Child,
    url: String,
    pid: i32,
}

impl OpenNats {
    async fn start(binary: &Path, logs: &Path) -> anyhow::Result<Self> {
        let port = crate::procs::free_port();
        let store = logs.join("open-nats-store");
        let _ = std::fs::remove_dir_all(&store);
        let log = std::fs::File::create(logs.join("open-nats.log"))?;
        let child = tokio::process::Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server's pid")? as i32;
        let url = format!("nats://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(client) = async_nats::connect(&url).await {
                if async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .is_ok()
                {
                    return Ok(Self { child, url, pid });
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the open nats-server did not start in 10 s")
    }
}

pub async fn run(b: &Bench, nats_server: &Path) -> anyhow::Result<SecurityFigure> {
    println!("figure 7: what TLS and the NATS permissions cost");
    let mut open_nats = OpenNats::start(nats_server, &b.logs).await?;
    let open = Transport {
        nats_url: open_nats.url.clone(),
        nats_credentials: None,
        tls_dir: None,
    };
    let secured = b.transport.clone();
    let mut measured: [Runs; 2] = Default::default();
    let result: anyhow::Result<()> = async {
        for round in 0..b.repeats {
            for (side, (transport, nats_pid)) in [(&open, open_nats.pid), (&secured, 0)]
                .into_iter()
                .enumerate()
            {
                let label = ["open", "secured"][side];
                let nats_pid = if side == 0 {
                    Some(nats_pid)
                } else {
                    b.nats_pid
                };
                let commands = command_rate(b, transport, label, round).await?;
                let (sagas, cpu) = saga_burst(b, transport, nats_pid, label, round).await?;
                let reads = stream_read(transport, label, round).await?;
                println!(
                    "  {label:<7} round {}: {commands:.0} orders/s, {sagas:.0} sagas/s, \
                     {cpu:.1} ms CPU per saga, {reads:.0} events/s read",
                    round + 1
                );
                measured[side].commands.push(commands);
                measured[side].sagas.push(sagas);
                measured[side].cpu.push(cpu);
                measured[side].reads.push(reads);
            }
        }
        Ok(())
    }
    .await;
    let _ = open_nats.child.start_kill();
    let _ = open_nats.child.wait().await;
    result?;
    let side = |runs: &Runs| Side {
        commands_per_second: Spread::of(&runs.commands),
        sagas_per_second: Spread::of(&runs.sagas),
        cpu_ms_per_saga: Spread::of(&runs.cpu),
        stream_read_per_second: Spread::of(&runs.reads),
    };
    let shares = |secured: &[f64], open: &[f64]| {
        let pairs: Vec<f64> = secured
            .iter()
            .zip(open)
            .map(|(secured, open)| ratio(*secured, *open))
            .collect();
        Spread::of(&pairs)
    };
    let [open, secured] = &measured;
    Ok(SecurityFigure {
        open: side(open),
        secured: side(secured),
        commands_share: shares(&secured.commands, &open.commands),
        sagas_share: shares(&secured.sagas, &open.sagas),
        stream_read_share: shares(&secured.reads, &open.reads),
    })
}

/// Closed-loop `POST /orders` at [`CLIENTS`] clients for the run length, on a fresh orders
/// service.
async fn command_rate(
    b: &Bench,
    transport: &Transport,
    label: &str,
    round: usize,
) -> anyhow::Result<f64> {
    let db = b
        .cluster
        .fresh(&format!("bench_sec_cmd_{label}_{round}"))
        .await?;
    let namespace = format!("benchsec{label}c{round}");
    let orders = b
        .service_on(transport, "orders", &db, &namespace, &[])
        .await?;
    let url = format!("{}/orders", orders.base_url);
    let client = http_client(CLIENTS);
    let place = |duration| {
        let (client, url, seed) = (client.clone(), url.clone(), b.next_seed());
        drive(CLIENTS, Pace::Closed, duration, move |i| {
            let request = client
                .post(&url)
                .header("idempotency-key", Uuid::new_v4().to_string())
                .json(&order_body(seed + i));
            async move { expect_status(request, 202).await.map(|_| ()) }
        })
    };
    let warm = place(Duration::from_secs(1)).await;
    anyhow::ensure!(
        warm.ok > 0,
        "{label}: no order was accepted while warming up: {:?}",
        warm.first_error
    );
    let run = place(b.duration).await;
    orders.stop().await;
    Ok(run.rate())
}

/// A burst of [`BURST`] orders on a fresh saga stack (the command services and the
/// orchestrator): sagas confirmed per second, and the CPU per saga of every process.
async fn saga_burst(
    b: &Bench,
    transport: &Transport,
    nats_pid: Option<i32>,
    label: &str,
    round: usize,
) -> anyhow::Result<(f64, f64)> {
    let namespace = format!("benchsec{label}s{round}");
    let mut procs: Vec<Proc> = Vec::new();
    let mut orders_db = String::new();
    for name in ["orders", "inventory", "payments", "orchestrator"] {
        let db = b
            .cluster
            .fresh(&format!("bench_sec_{name}_{label}_{round}"))
            .await?;
        if name == "orders" {
            orders_db = db.clone();
        }
        procs.push(b.service_on(transport, name, &db, &namespace, &[]).await?);
    }
    let url_of = |name: &str| crate::procs::url_of(&procs, name);
    crate::sagas::create_products_at(&url_of("inventory")).await?;
    let events = sqlx::PgPool::connect(&orders_db)
        .await
        .context("reading the orders event store")?;

    let mut watched: Vec<Watched> = procs.iter().map(Watched::of).collect();
    watched.extend(b.pg_pid.map(|pid| Watched {
        name: "postgres".into(),
        pid,
        with_children: true,
    }));
    watched.extend(nats_pid.map(|pid| Watched {
        name: "nats-server".into(),
        pid,
        with_children: false,
    }));
    let monitor = Monitor::start(watched);
    let started = Instant::now();
    let client = http_client(CLIENTS);
    let url = format!("{}/orders", url_of("orders"));
    let seed = b.next_seed();
    let next = Arc::new(AtomicU64::new(0));
    let placing: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= BURST {
                        return Ok::<_, String>(());
                    }
                    let request = client
                        .post(&url)
                        .header("idempotency-key", Uuid::new_v4().to_string())
                        .json(&order_body(seed + i));
                    expect_status(request, 202).await?;
                }
            })
        })
        .collect();
    for placed in placing {
        placed
            .await?
            .map_err(|e| anyhow::anyhow!("{label}: placing an order: {e}"))?;
    }
    let deadline = started + Duration::from_secs(120);
    loop {
        let confirmed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderConfirmed'")
                .fetch_one(&events)
                .await?;
        if confirmed as u64 >= BURST {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: only {confirmed} of {BURST} orders confirmed after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: f64 = monitor.finish().await.iter().map(|c| c.cpu_seconds).sum();
    events.close().await;
    for p in procs {
        p.stop().await;
    }
    Ok((BURST as f64 / elapsed, cpu * 1000.0 / BURST as f64))
}

/// Publishes [`STREAM_EVENTS`] events of an order's size to a fresh stream, then reads them
/// all back with an ordered consumer: events read per second.
async fn stream_read(transport: &Transport, label: &str, round: usize) -> anyhow::Result<f64> {
    use messaging::streams::{ensure_stream, StreamSettings};
    use messaging::{BoundedContext, Namespace};
    let js = async_nats::jetstream::new(transport.nats_admin().await?);
    let namespace =
        Namespace::new(&format!("benchsec{label}r{round}")).map_err(anyhow::Error::msg)?;
    let context = BoundedContext::Orders;
    ensure_stream(&js, &namespace, context, &StreamSettings::default()).await?;
    // About the size of an `OrderPlaced` envelope.
    let payload = bytes::Bytes::from(format!("{{\"data\":\"{}\"}}", "x".repeat(600)));
    let mut acks = std::collections::VecDeque::new();
    for i in 0..STREAM_EVENTS {
        let subject = namespace.event_subject(context, &format!("o{}", i % 1000), "OrderPlaced");
        if acks.len() >= 4096 {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                acks.pop_front().expect("a pending ack");
            ack.await?;
        }
        acks.push_back(js.publish(subject, payload.clone()).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let started = Instant::now();
    let (read, _) = crate::replay::read_all(&js, &namespace.stream(context), false).await?;
    let rate = read as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(namespace.stream(context)).await;
    anyhow::ensure!(
        read == STREAM_EVENTS,
        "{label}: read {read} of {STREAM_EVENTS} events"
    );
    Ok(rate)
}
