//! Two ways of running the same work, measured in turns: each round runs `POST /orders` at
//! 64 clients, a burst of 400 sagas and a bulk stream read on one side, then on the other,
//! each on fresh databases and a namespace of its own, so the machine's drift falls on both.
//! Figure 7 compares open connections with the secured stack; figure 8, one NATS server with
//! a three-node cluster.

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

/// One way of running the stack.
pub struct Setup<'a> {
    /// A short word of lowercase letters, part of database and namespace names.
    pub label: &'static str,
    pub transport: &'a Transport,
    /// The NATS servers' processes, whose CPU counts towards a saga's.
    pub nats_pids: Vec<i32>,
}

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
    /// The NATS servers' part of it.
    pub nats_cpu_ms_per_saga: Spread,
    /// Events per second read from a stream of 200,000 events by an ordered consumer, as
    /// a rebuild or an export reads.
    pub stream_read_per_second: Spread,
}

/// The two sides, and the second's share of the first's throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The sides' labels, first and second.
    pub labels: [&'static str; 2],
    pub first: Side,
    pub second: Side,
    /// Second over first, per round, for each measure.
    pub commands_share: Spread,
    pub sagas_share: Spread,
    pub stream_read_share: Spread,
}

impl Comparison {
    /// The largest of the throughput costs (1 - share), from the medians of the rounds; none
    /// when the second side was as fast or faster.
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
    nats_cpu: Vec<f64>,
    reads: Vec<f64>,
}

/// Runs every measure on `sides[0]`, then on `sides[1]`, once per round. `figure` names the
/// databases and namespaces (with the side and the round), so no run sees another's data.
pub async fn compare(
    b: &Bench,
    figure: &str,
    sides: &[Setup<'_>; 2],
) -> anyhow::Result<Comparison> {
    for side in sides {
        debug_assert!(
            side.label.bytes().all(|c| c.is_ascii_lowercase()),
            "{:?} would not fit a database name",
            side.label
        );
    }
    let mut measured: [Runs; 2] = Default::default();
    for round in 0..b.repeats {
        for (runs, side) in measured.iter_mut().zip(sides) {
            let name = format!("{figure}{}{round}", side.label);
            let commands = command_rate(b, side, &name).await?;
            let (sagas, cpu, nats_cpu) = saga_burst(b, side, &name).await?;
            let reads = stream_read(side, &name).await?;
            println!(
                "  {:<7} round {}: {commands:.0} orders/s, {sagas:.0} sagas/s, \
                 {cpu:.1} ms CPU per saga, {reads:.0} events/s read",
                side.label,
                round + 1
            );
            runs.commands.push(commands);
            runs.sagas.push(sagas);
            runs.cpu.push(cpu);
            runs.nats_cpu.push(nats_cpu);
            runs.reads.push(reads);
        }
    }
    let side = |runs: &Runs| Side {
        commands_per_second: Spread::of(&runs.commands),
        sagas_per_second: Spread::of(&runs.sagas),
        cpu_ms_per_saga: Spread::of(&runs.cpu),
        nats_cpu_ms_per_saga: Spread::of(&runs.nats_cpu),
        stream_read_per_second: Spread::of(&runs.reads),
    };
    let shares = |second: &[f64], first: &[f64]| {
        let pairs: Vec<f64> = second
            .iter()
            .zip(first)
            .map(|(second, first)| ratio(*second, *first))
            .collect();
        Spread::of(&pairs)
    };
    let [first, second] = &measured;
    Ok(Comparison {
        labels: [sides[0].label, sides[1].label],
        first: side(first),
        second: side(second),
        commands_share: shares(&second.commands, &first.commands),
        sagas_share: shares(&second.sagas, &first.sagas),
        stream_read_share: shares(&second.reads, &first.reads),
    })
}

/// Closed-loop `POST /orders` at [`CLIENTS`] clients for the run length, on a fresh orders
/// service.
async fn command_rate(b: &Bench, side: &Setup<'_>, name: &str) -> anyhow::Result<f64> {
    let label = side.label;
    let db = b.cluster.fresh(&format!("bench_{name}_cmd")).await?;
    let namespace = format!("bench{name}c");
    let orders = b
        .service_on(
            &side.transport.for_service("orders"),
            "orders",
            &db,
            &namespace,
            &[],
        )
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
    drop_streams(side, &namespace).await?;
    Ok(run.rate())
}

/// A burst of [`BURST`] orders on a fresh saga stack (the command services and the
/// orchestrator): sagas confirmed per second, and the CPU per saga of every process.
async fn saga_burst(b: &Bench, side: &Setup<'_>, name: &str) -> anyhow::Result<(f64, f64, f64)> {
    let label = side.label;
    let namespace = format!("bench{name}s");
    let mut procs: Vec<Proc> = Vec::new();
    let mut orders_db = String::new();
    for service in ["orders", "inventory", "payments", "orchestrator"] {
        let db = b.cluster.fresh(&format!("bench_{name}_{service}")).await?;
        if service == "orders" {
            orders_db = db.clone();
        }
        procs.push(
            b.service_on(
                &side.transport.for_service(service),
                service,
                &db,
                &namespace,
                &[],
            )
            .await?,
        );
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
    watched.extend(side.nats_pids.iter().map(|&pid| Watched {
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
    let costs = monitor.finish().await;
    let cpu: f64 = costs.iter().map(|c| c.cpu_seconds).sum();
    let nats_cpu: f64 = costs
        .iter()
        .filter(|c| c.name == "nats-server")
        .map(|c| c.cpu_seconds)
        .sum();
    events.close().await;
    for p in procs {
        p.stop().await;
    }
    drop_streams(side, &namespace).await?;
    let per_saga = |seconds: f64| seconds * 1000.0 / BURST as f64;
    Ok((BURST as f64 / elapsed, per_saga(cpu), per_saga(nats_cpu)))
}

/// Deletes `namespace`'s streams once a measure is done with them, so they (and on a
/// cluster their replication groups) do not stay on through the runs that follow.
async fn drop_streams(side: &Setup<'_>, namespace: &str) -> anyhow::Result<()> {
    use messaging::{BoundedContext, Namespace};
    let js = async_nats::jetstream::new(side.transport.nats_admin().await?);
    let namespace = Namespace::new(namespace).map_err(anyhow::Error::msg)?;
    for context in BoundedContext::ALL {
        // A context whose service never ran has no stream: nothing to delete.
        let _ = js.delete_stream(namespace.stream(context)).await;
    }
    Ok(())
}

/// Publishes [`STREAM_EVENTS`] events of an order's size to a fresh stream (with the side's
/// replicas), then reads them all back with an ordered consumer: events read per second.
async fn stream_read(side: &Setup<'_>, name: &str) -> anyhow::Result<f64> {
    use messaging::streams::{ensure_stream, StreamSettings};
    use messaging::{BoundedContext, Namespace};
    let label = side.label;
    let js = async_nats::jetstream::new(side.transport.nats_admin().await?);
    let namespace = Namespace::new(&format!("bench{name}r")).map_err(anyhow::Error::msg)?;
    let context = BoundedContext::Orders;
    let settings = StreamSettings {
        replicas: side.transport.stream_replicas,
        ..StreamSettings::default()
    };
    ensure_stream(&js, &namespace, context, &settings).await?;
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
