//! Figure 3: rebuilding every projection from at least a million events, beside a raw
//! JetStream ordered-consumer read and raw Postgres batched inserts.
//!
//! The events are the real ones figure 2 produced, copied until there are enough: copy `k`
//! gives every UUID (orders, customers, payments, event ids) and every SKU a new value of its
//! own, so each copy is a distinct, consistent history that the projections apply in full.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use futures::StreamExt;
use messaging::streams::{ensure_stream, StreamSettings};
use messaging::{BoundedContext, Namespace};
use serde::Serialize;

use crate::procs::{Cost, Monitor, Watched};
use crate::stats::Spread;
use crate::Bench;

const NAMESPACE: &str = "benchreplay";

#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigure {
    pub events: u64,
    pub template_events: u64,
    pub copies: u64,
    pub per_stream: Vec<(String, u64)>,
    /// Rebuild of every projection: events per second and seconds.
    pub rebuild_rate: Spread,
    pub rebuild_seconds: Spread,
    /// Orders in `orders_view` after the rebuild (template orders times copies).
    pub orders_rebuilt: i64,
    pub orders_expected: i64,
    pub jetstream_read_rate: Spread,
    pub postgres_batched_rate: Spread,
    pub postgres_batched_rows: u64,
    pub publish_rate: f64,
    /// CPU and memory of the last rebuild's processes.
    pub costs: Vec<Cost>,
    /// `events export` of the same streams, once per format.
    pub exports: Vec<ExportRun>,
}

/// One `events export` run over the replay streams.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRun {
    pub format: String,
    pub events: u64,
    pub seconds: f64,
    pub rate: f64,
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
    pub file_mb: f64,
}

/// Exports the replay streams with the `events` binary in each format, timing it and sampling
/// its CPU and memory: the analysts' path over the same million events.
async fn exports(b: &Bench, events: u64) -> anyhow::Result<Vec<ExportRun>> {
    let mut runs = Vec::new();
    for format in ["jsonl", "csv", "parquet"] {
        let output = b.logs.join(format!("export.{format}"));
        let _ = std::fs::remove_file(&output);
        let started = Instant::now();
        let mut child = tokio::process::Command::new(b.bins.join("events"))
            .args(["export", "--quiet", "--format", format, "--output"])
            .arg(&output)
            .env_clear()
            .env("NATS_URL", &b.nats_analyst_url)
            .envs(b.transport.tls_dir.iter().map(|dir| ("TLS_DIR", dir)))
            .env("NATS_NAMESPACE", NAMESPACE)
            .stdout(log_file(b, "export")?)
            .stderr(log_file(b, "export")?)
            .spawn()?;
        let monitor = Monitor::start(vec![Watched {
            name: "events export".into(),
            pid: child.id().map_or(0, |p| p as i32),
            with_children: false,
        }]);
        let status = child.wait().await?;
        let cost = monitor
            .finish()
            .await
            .into_iter()
            .next()
            .unwrap_or_default();
        anyhow::ensure!(
            status.success(),
            "events export failed; see {}",
            b.logs.join("export.log").display()
        );
        let seconds = started.elapsed().as_secs_f64();
        let file_mb = std::fs::metadata(&output)?.len() as f64 / 1e6;
        println!(
            "  events export --format {format}: {events} events in {seconds:.1} s ({:.0} events/s, peak RSS {:.0} MB, file {file_mb:.0} MB)",
            events as f64 / seconds,
            cost.peak_rss_mb
        );
        runs.push(ExportRun {
            format: format.into(),
            events,
            seconds,
            rate: events as f64 / seconds,
            cpu_seconds: cost.cpu_seconds,
            peak_rss_mb: cost.peak_rss_mb,
            file_mb,
        });
        let _ = std::fs::remove_file(&output);
    }
    Ok(runs)
}

/// One stream's messages: (subject, payload).
type Messages = Vec<(String, bytes::Bytes)>;

pub async fn run(b: &Bench, template: &str) -> anyhow::Result<ReplayFigure> {
    println!("figure 3: replay");
    let nats = b.nats_admin().await?;
    let js = jetstream::new(nats);
    let source = Namespace::new(template).map_err(anyhow::Error::msg)?;
    let target = Namespace::new(NAMESPACE).map_err(anyhow::Error::msg)?;

    let mut templates: Vec<(BoundedContext, Messages)> = Vec::new();
    for context in BoundedContext::ALL {
        let messages = read_all(&js, &source.stream(context), true).await?.1;
        templates.push((context, messages));
    }
    let template_events: u64 = templates.iter().map(|(_, m)| m.len() as u64).sum();
    anyhow::ensure!(template_events > 0, "figure 2 left no events to replay");
    let copies = b.replay_events.div_ceil(template_events);
    let template_orders = templates
        .iter()
        .find(|(c, _)| *c == BoundedContext::Orders)
        .map_or(0, |(_, m)| {
            m.iter()
                .filter(|(s, _)| s.ends_with(".OrderPlaced"))
                .count()
        }) as i64;

    // Fresh streams.
    for context in BoundedContext::ALL {
        let _ = js.delete_stream(target.stream(context)).await;
        ensure_stream(&js, &target, context, &StreamSettings::default()).await?;
    }
    let started = Instant::now();
    let events = publish_copies(&js, &templates, template, copies).await?;
    let publish_rate = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "  published {events} events ({copies} copies of {template_events}) at {publish_rate:.0}/s"
    );
    let mut per_stream = Vec::new();
    for context in BoundedContext::ALL {
        let info = js
            .get_stream(target.stream(context))
            .await?
            .info()
            .await?
            .state
            .clone();
        per_stream.push((target.stream(context), info.messages));
    }

    // Baseline: the raw read rate of the same streams.
    let mut js_rates = Vec::new();
    for _ in 0..b.repeats {
        let started = Instant::now();
        let mut n = 0;
        for context in BoundedContext::ALL {
            n += read_all(&js, &target.stream(context), false).await?.0;
        }
        js_rates.push(n as f64 / started.elapsed().as_secs_f64());
    }
    let jetstream_read_rate = Spread::of(&js_rates);
    println!(
        "  JetStream ordered read: {} events/s",
        jetstream_read_rate.show(0)
    );

    // Baseline: raw batched inserts.
    let rows = events.min(300_000);
    let url = b.cluster.fresh("bench_replay_raw").await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    let mut pg_rates = Vec::new();
    for _ in 0..b.repeats {
        pg_rates.push(crate::pg::batched_inserts(&pool, rows).await?);
    }
    pool.close().await;
    let postgres_batched_rate = Spread::of(&pg_rates);
    println!(
        "  Postgres batched inserts: {} rows/s",
        postgres_batched_rate.show(0)
    );

    // The rebuild itself, as an operator runs it.
    let url = b.cluster.fresh("bench_replay_read").await?;
    let mut seconds = Vec::new();
    let mut orders_rebuilt = 0;
    let mut costs = Vec::new();
    while seconds.len() < b.repeats {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(b.bins.join("projections"))
            .args(["rebuild", "all"])
            .env_clear()
            .env("DATABASE_URL", &url)
            .envs(b.transport.env())
            .env("NATS_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "warn")
            .stdout(log_file(b, "rebuild")?)
            .stderr(log_file(b, "rebuild")?)
            .spawn()?;
        let mut watched = vec![Watched {
            name: "projections rebuild".into(),
            pid: child.id().map_or(0, |p| p as i32),
            with_children: false,
        }];
        watched.extend(b.infrastructure());
        let monitor = Monitor::start(watched);
        let status = child.wait().await?;
        costs = monitor.finish().await;
        anyhow::ensure!(
            status.success(),
            "projections rebuild all failed; see {}",
            b.logs.join("rebuild.log").display()
        );
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "  rebuild all: {events} events in {elapsed:.1} s ({:.0} events/s)",
            events as f64 / elapsed
        );
        seconds.push(elapsed);
        orders_rebuilt = count_orders(&url).await?;
        // Keep the whole benchmark within its time: once two runs took 50 s, or one took a
        // minute, the median has what it needs.
        let so_far: f64 = seconds.iter().sum();
        if elapsed > 60.0 || (seconds.len() >= 2 && so_far > 50.0) {
            break;
        }
    }
    let rates: Vec<f64> = seconds.iter().map(|s| events as f64 / s).collect();
    let exports = exports(b, events).await?;
    Ok(ReplayFigure {
        events,
        template_events,
        copies,
        per_stream,
        rebuild_rate: Spread::of(&rates),
        rebuild_seconds: Spread::of(&seconds),
        orders_rebuilt,
        costs,
        exports,
        orders_expected: template_orders * copies as i64,
        jetstream_read_rate,
        postgres_batched_rate,
        postgres_batched_rows: rows,
        publish_rate,
    })
}

fn log_file(b: &Bench, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(b.logs.join(format!("{name}.log")))?)
}

async fn count_orders(url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders_view")
        .fetch_one(&mut conn)
        .await?)
}

/// Reads a whole stream with an ordered consumer; keeps the messages when asked.
pub async fn read_all(
    js: &jetstream::Context,
    stream: &str,
    keep: bool,
) -> anyhow::Result<(u64, Messages)> {
    let Ok(mut stream) = js.get_stream(stream).await else {
        return Ok((0, Vec::new()));
    };
    let total = stream.info().await?.state.messages;
    let mut kept = Vec::new();
    if total == 0 {
        return Ok((0, kept));
    }
    let consumer = messaging::streams::ordered_consumer(
        &stream,
        "loadgen",
        OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        },
    )
    .await?;
    let mut messages = consumer.messages().await?;
    let mut n = 0;
    while let Some(message) = messages.next().await {
        let message = message?;
        n += 1;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        if keep {
            kept.push((message.subject.to_string(), message.payload.clone()));
        }
        if n >= total || pending == 0 {
            break;
        }
    }
    Ok((n, kept))
}

/// Publishes `copies` remapped copies of the templates, keeping many acks in flight.
async fn publish_copies(
    js: &jetstream::Context,
    templates: &[(BoundedContext, Messages)],
    template_ns: &str,
    copies: u64,
) -> anyhow::Result<u64> {
    const IN_FLIGHT: usize = 4096;
    let mut acks = VecDeque::with_capacity(IN_FLIGHT);
    let mut published = 0u64;
    let mut last_report = Instant::now();
    let from_prefix = format!("{template_ns}.");
    let to_prefix = format!("{NAMESPACE}.");
    for copy in 0..copies {
        for (_, messages) in templates {
            for (subject, payload) in messages {
                let subject = remap(subject, copy).replacen(&from_prefix, &to_prefix, 1);
                let payload = remap(std::str::from_utf8(payload)?, copy);
                if acks.len() >= IN_FLIGHT {
                    let ack: async_nats::jetstream::context::PublishAckFuture =
                        acks.pop_front().expect("a pending ack");
                    ack.await?;
                }
                acks.push_back(js.publish(subject, payload.into()).await?);
                published += 1;
            }
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            println!("  publishing: {published} events");
            last_report = Instant::now();
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(published)
}

/// Gives copy `copy` its own ids: every UUID has bits 32 to 63 XORed with the copy number (fixed ids such as
/// the benchmark's customers keep zeros there, so no copy collides with another),
/// and every `BENCH-` SKU becomes `B<copy>-`. Copy 0 is the template itself.
pub fn remap(text: &str, copy: u64) -> String {
    if copy == 0 {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if i + 36 <= bytes.len() && looks_like_uuid(&bytes[i..i + 36]) {
            if let Ok(id) = uuid::Uuid::parse_str(&text[i..i + 36]) {
                out.push_str(&text[copied..i]);
                let mapped = uuid::Uuid::from_u128(id.as_u128() ^ (u128::from(copy as u32) << 32));
                out.push_str(&mapped.hyphenated().to_string());
                i += 36;
                copied = i;
                continue;
            }
        }
        if bytes[i..].starts_with(b"BENCH-") {
            out.push_str(&text[copied..i]);
            out.push_str(&format!("B{copy}-"));
            i += 6;
            copied = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

fn looks_like_uuid(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

#[cfg(test)]
mod tests {
    use super::remap;

    #[test]
    fn copies_get_their_own_ids_and_skus() {
        let text = r#"{"order_id":"0192f0c1-0000-7000-8000-000000000001","sku":"BENCH-0007"}"#;
        assert_eq!(remap(text, 0), text);
        let one = remap(text, 1);
        assert_eq!(
            one,
            r#"{"order_id":"0192f0c1-0000-7000-8000-000100000001","sku":"B1-0007"}"#
        );
        assert_ne!(remap(text, 2), one);
        assert_eq!(
            remap("events.orders.BENCH-0001.StockReserved", 3),
            "events.orders.B3-0001.StockReserved"
        );
    }
}
