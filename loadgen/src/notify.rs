//! Figure 9: the notification delay at the saga figure's load. The whole stack and the
//! notification service, its emails going to a mail server and a partner's webhook endpoint
//! subscribed to `OrderConfirmed` (both played by this process): from each order's
//! `OrderConfirmed` being stored (the event's `time`) to the webhook arriving, and to the mail
//! server taking the email. Beside it, steps with the notification service paused, alternating
//! with the running ones: the sagas' figures with and without it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::drive::http_client;
use crate::procs::{Monitor, Watched};
use crate::sagas::{Session, Stack, Step};
use crate::stats::{LatencySpread, Percentiles, Spread};
use crate::Bench;

pub const NAMESPACE: &str = "benchnotify";

#[derive(Debug, Clone, Serialize)]
pub struct NotifyFigure {
    /// At the saga figure's sustained load, then at 10 orders/s.
    pub loads: Vec<NotifyLoad>,
}

/// The figure at one load.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyLoad {
    /// Orders per second offered in every step.
    pub rate: f64,
    /// Sagas completed per second and their latency, the notification service running.
    pub with: Steps,
    /// The same with it paused, in the steps between.
    pub without: Steps,
    /// Confirmed orders of the measured steps, and the webhooks and emails that came for them.
    pub confirmed: u64,
    pub webhooks: u64,
    pub emails: u64,
    /// `OrderConfirmed` stored → webhook received, over every measured order.
    pub webhook_delay: Percentiles,
    /// `OrderConfirmed` stored → email taken by the mail server.
    pub email_delay: Percentiles,
    /// CPU of the notification service per saga of this load (every step's, since it sends
    /// what a paused step stored once resumed), in ms.
    pub notifications_cpu_ms_per_saga: f64,
    /// Saga p50 of each running step less that of the paused step after it, in ms: the
    /// rounds' drift is in both, so a difference whose spread holds 0 is within noise.
    pub p50_difference: Spread,
}

/// Repeated steps at one load.
#[derive(Debug, Clone, Serialize)]
pub struct Steps {
    pub completed_per_second: Spread,
    pub latency: LatencySpread,
    pub all_confirmed: bool,
    /// Write transactions per saga, every database.
    pub transactions_per_saga: Spread,
    /// CPU per confirmed saga over every process but the load generator, in ms: a running
    /// step's until its orders' notifications arrived, a paused step's without them.
    pub cpu_ms_per_saga: Spread,
    /// The load generator's own CPU per saga over the same window, in ms: it also plays the
    /// mail server and the webhook receiver, so its running steps hold their work too.
    pub loadgen_cpu_ms_per_saga: Spread,
}

impl Steps {
    fn of(steps: &[Step], cpu_ms_per_saga: &[(f64, f64)]) -> Self {
        let (stack, loadgen): (Vec<f64>, Vec<f64>) = cpu_ms_per_saga.iter().copied().unzip();
        Self {
            transactions_per_saga: Spread::of(
                &steps
                    .iter()
                    .map(|s| s.transactions_per_saga)
                    .collect::<Vec<_>>(),
            ),
            cpu_ms_per_saga: Spread::of(&stack),
            loadgen_cpu_ms_per_saga: Spread::of(&loadgen),
            completed_per_second: Spread::of(
                &steps
                    .iter()
                    .map(|s| s.completed_per_second)
                    .collect::<Vec<_>>(),
            ),
            latency: LatencySpread::of(&steps.iter().map(|s| s.latency).collect::<Vec<_>>()),
            all_confirmed: steps.iter().all(|s| s.confirmed == s.placed),
        }
    }
}

/// A webhook as the partner got it: the order, when its event was stored, when it arrived.
type Arrival = (Uuid, DateTime<Utc>, DateTime<Utc>);

/// A partner's endpoint: every `OrderConfirmed` it receives, with when.
async fn receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<Arrival>>>)> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let at = Utc::now();
                if let Ok(event) = serde_json::from_slice::<Value>(&body) {
                    let order = event["data"]["order_id"]
                        .as_str()
                        .and_then(|s| s.parse().ok());
                    let time = event["time"].as_str().and_then(|s| s.parse().ok());
                    if let (Some(order), Some(time)) = (order, time) {
                        log.lock().expect("arrivals").push((order, time, at));
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

/// The mail server: a minimal SMTP server in this process that takes every message (the load
/// generator plays it as it plays the partner's endpoint, so its CPU is the load's, and what a
/// mail server costs is not counted as the notification service's).
struct Sink {
    smtp_url: String,
    /// The order each message names, as it was taken.
    got: Arc<Mutex<Vec<Uuid>>>,
}

impl Sink {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let smtp_url = format!("smtp://{}", listener.local_addr()?);
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(stream, log).await;
                });
            }
        });
        Ok(Self { smtp_url, got })
    }

    /// The orders of the emails taken so far.
    async fn received(&self) -> anyhow::Result<Vec<Uuid>> {
        Ok(self.got.lock().expect("emails").clone())
    }
}

/// One SMTP connection (RFC 5321's minimum: no extensions, no TLS): every message is taken,
/// and the order it names (`Order <uuid>` in its text) recorded.
async fn smtp_session(
    stream: tokio::net::TcpStream,
    log: Arc<Mutex<Vec<Uuid>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 loadgen ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 loadgen\r\n",
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut message = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    message.push_str(&line);
                }
                let order = message
                    .match_indices("Order ")
                    .find_map(|(at, _)| message.get(at + 6..at + 42)?.parse().ok());
                if let Some(order) = order {
                    log.lock().expect("emails").push(order);
                }
                b"250 taken\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not here\r\n",
        };
        write.write_all(answer).await?;
    }
}

/// When the mail server took each order's confirmation email, as the notification service
/// recorded it (`sent_at`, right after the server's 250).
async fn sent_at(database: &str) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database).await?;
    Ok(sqlx::query_as(
        "SELECT order_id, sent_at FROM emails WHERE status = 'sent' AND kind = 'confirmed'",
    )
    .fetch_all(&mut conn)
    .await?)
}

/// Delays in microseconds from when each order's event was stored to `at`.
fn delays<'a>(
    stored: &std::collections::HashMap<Uuid, DateTime<Utc>>,
    arrivals: impl Iterator<Item = (&'a Uuid, &'a DateTime<Utc>)>,
) -> Vec<u64> {
    arrivals
        .filter_map(|(order, at)| {
            let from = stored.get(order)?;
            Some((*at - *from).num_microseconds()?.max(0) as u64)
        })
        .collect()
}

/// The figure at each of `rates`, on one stack.
pub async fn run(b: &Bench, rates: &[f64]) -> anyhow::Result<NotifyFigure> {
    println!("figure 9: notifications");
    let mut stack = Stack::start_in(b, NAMESPACE, "bench_notify").await?;
    let sink = Sink::start().await?;
    let database = b.cluster.fresh("bench_notify_notifications").await?;
    // Its emails to this process's mail server, its webhooks to this process's endpoint.
    let env = [
        ("SMTP_URL", sink.smtp_url.as_str()),
        ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true"),
    ];
    let notifications = b
        .service("notifications", &database, NAMESPACE, &env)
        .await?;
    let (hook, arrivals) = receiver().await?;
    let registered = http_client(1)
        .post(format!("{}/webhooks", notifications.base_url))
        .json(&serde_json::json!({"url": hook, "event_types": ["OrderConfirmed"]}))
        .send()
        .await?;
    anyhow::ensure!(
        registered.status().as_u16() == 201,
        "registering the webhook: {}",
        registered.text().await.unwrap_or_default()
    );

    let mut session = Session::open(b, &stack, true).await?;
    let mut everything: Vec<Watched> = stack.procs.iter().map(Watched::of).collect();
    everything.push(Watched::of(&notifications));
    everything.extend(b.infrastructure());
    let load = Load {
        sink: &sink,
        arrivals: &arrivals,
        database: &database,
        notifications: &notifications,
        everything: &everything,
    };
    let mut loads = Vec::new();
    for &rate in rates {
        loads.push(at(b, &mut session, &load, rate).await?);
    }
    drop(session);
    notifications.stop().await;
    stack.stop_except(&[]).await;
    Ok(NotifyFigure { loads })
}

/// Pauses (`STOP`) or resumes (`CONT`) a process: paused, it costs no CPU and keeps its
/// connections, so the steps without it need no restart (whose cold start would be measured).
fn signal(process: &crate::procs::Proc, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), process.pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {} failed", process.pid);
    Ok(())
}

/// Waits (60 s at most) until every order of `orders` has its webhook and its email; the
/// webhooks so far.
async fn arrived(
    arrivals: &Mutex<Vec<Arrival>>,
    sink: &Sink,
    orders: &[Uuid],
) -> anyhow::Result<Vec<Arrival>> {
    let wanted: std::collections::HashSet<&Uuid> = orders.iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let webhooks = arrivals.lock().expect("arrivals").clone();
        let emails = sink.received().await?;
        let hooked = webhooks.iter().filter(|(o, ..)| wanted.contains(o)).count();
        let mailed = emails.iter().filter(|o| wanted.contains(o)).count();
        if (hooked >= wanted.len() && mailed >= wanted.len())
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(webhooks);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the steps of each load run against.
struct Load<'a> {
    sink: &'a Sink,
    arrivals: &'a Mutex<Vec<Arrival>>,
    database: &'a str,
    notifications: &'a crate::procs::Proc,
    /// Every process but the load generator, for the CPU per saga.
    everything: &'a [Watched],
}

/// The load generator's name among the watched processes.
const LOADGEN: &str = "loadgen";

/// CPU in ms per one of `sagas`: over `costs` but the load generator's, and the load
/// generator's.
fn cpu_ms_per(costs: &[crate::procs::Cost], sagas: u64) -> (f64, f64) {
    let per = |loadgen: bool| {
        costs
            .iter()
            .filter(|c| (c.name == LOADGEN) == loadgen)
            .map(|c| c.cpu_seconds * 1000.0)
            .sum::<f64>()
            / sagas.max(1) as f64
    };
    (per(false), per(true))
}

/// Rounds at `rate`, each a step with notifications running and one with it paused, so a
/// drift over the rounds weighs on both sides alike. After each resume an unmeasured step
/// lets it send what the paused step stored, which is not this load's delay.
async fn at(
    b: &Bench,
    session: &mut Session,
    load: &Load<'_>,
    rate: f64,
) -> anyhow::Result<NotifyLoad> {
    let Load {
        sink,
        arrivals,
        database,
        notifications,
        everything,
    } = *load;
    println!("  at {rate:.0} orders/s");
    let first = session.confirmed_ids().len();
    let monitor = Monitor::start(vec![Watched::of(notifications)]);
    let mut everything = everything.to_vec();
    everything.push(Watched {
        name: LOADGEN.into(),
        pid: std::process::id() as i32,
        with_children: false,
    });
    let (mut with, mut without, mut measured) = (Vec::new(), Vec::new(), Vec::new());
    let (mut with_cpu, mut without_cpu) = (Vec::new(), Vec::new());
    for _ in 0..b.repeats {
        session.step(rate, (b.step_seconds / 2.0).max(1.0)).await;
        // What the paused step stored is sent before the measured step begins, so that the
        // step holds the cost and the queueing of its own orders' notifications only.
        let before = session.confirmed_ids().len();
        arrived(arrivals, sink, &session.confirmed_ids()[first..before]).await?;
        let before = session.confirmed_ids().len();
        let all = Monitor::start(everything.clone());
        let step = session.step(rate, b.step_seconds).await;
        // Its orders' notifications arrive before the pause, which is no part of their delay;
        // their cost is the step's.
        arrived(arrivals, sink, &session.confirmed_ids()[before..]).await?;
        with_cpu.push(cpu_ms_per(&all.finish().await, step.confirmed));
        with.push(step);
        measured.extend_from_slice(&session.confirmed_ids()[before..]);
        signal(notifications, "STOP")?;
        let all = Monitor::start(everything.clone());
        let paused = session.step(rate, b.step_seconds).await;
        without_cpu.push(cpu_ms_per(&all.finish().await, paused.confirmed));
        signal(notifications, "CONT")?;
        without.push(paused);
    }
    // Every order of this load has its webhook and its email (or 60 s passed): the CPU
    // counted is that of all of them, the delays those of the measured steps' orders.
    let all: Vec<Uuid> = session.confirmed_ids()[first..].to_vec();
    let webhooks = arrived(arrivals, sink, &all).await?;
    let costs = monitor.finish().await;
    let emails = sent_at(database).await?;
    let wanted: std::collections::HashSet<Uuid> = measured.iter().copied().collect();
    let per_saga = |name: &str| {
        costs
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.cpu_seconds * 1000.0)
            .sum::<f64>()
            / all.len().max(1) as f64
    };
    let stored: std::collections::HashMap<Uuid, DateTime<Utc>> = webhooks
        .iter()
        .filter(|(order, ..)| wanted.contains(order))
        .map(|(order, time, _)| (*order, *time))
        .collect();
    let mut webhook_us = delays(&stored, webhooks.iter().map(|(o, _, at)| (o, at)));
    let mut email_us = delays(&stored, emails.iter().map(|(o, at)| (o, at)));

    let figure = NotifyLoad {
        rate,
        with: Steps::of(&with, &with_cpu),
        without: Steps::of(&without, &without_cpu),
        confirmed: measured.len() as u64,
        webhooks: webhook_us.len() as u64,
        emails: email_us.len() as u64,
        webhook_delay: Percentiles::of(&mut webhook_us),
        email_delay: Percentiles::of(&mut email_us),
        notifications_cpu_ms_per_saga: per_saga("notifications"),
        p50_difference: Spread::of(
            &with
                .iter()
                .zip(&without)
                .map(|(w, p)| w.latency.p50 - p.latency.p50)
                .collect::<Vec<_>>(),
        ),
    };
    println!(
        "  {} confirmed: {} webhooks, p50 {:.1} p99 {:.1} ms; {} emails, p50 {:.1} p99 {:.1} ms; \
         notifications' CPU per saga {:.2} ms",
        figure.confirmed,
        figure.webhooks,
        figure.webhook_delay.p50,
        figure.webhook_delay.p99,
        figure.emails,
        figure.email_delay.p50,
        figure.email_delay.p99,
        figure.notifications_cpu_ms_per_saga
    );
    Ok(figure)
}
