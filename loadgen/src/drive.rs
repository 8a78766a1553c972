//! Drives a request (HTTP or anything async) from a number of clients, closed-loop (as fast as
//! answers come back) or open-loop (on a fixed schedule).
//!
//! Open-loop latency is measured from the moment the schedule said a request should leave,
//! not when a client got round to sending it, so a server that makes clients queue cannot hide
//! that wait (coordinated omission).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{LatencySpread, Percentiles, Spread};

/// What one run did.
#[derive(Debug, Clone)]
pub struct Run {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Percentiles,
    /// The first error seen, to show what went wrong.
    pub first_error: Option<String>,
}

impl Run {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each client sends its next request as soon as the previous one is answered.
    Closed,
    /// Requests are due at `rate` per second; free clients take the next due one.
    Open { rate: f64 },
}

/// Runs `request(i)` from `clients` concurrent clients for `duration`.
pub async fn drive<F, Fut>(clients: usize, pace: Pace, duration: Duration, request: F) -> Run
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (request, next) = (request.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let due = match pace {
                    Pace::Closed => Instant::now().max(start),
                    Pace::Open { rate } => start + Duration::from_secs_f64(i as f64 / rate),
                };
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                match request(i).await {
                    Ok(()) => latencies.push(due.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (l, e, f) = task.await.expect("client task");
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    // Closed-loop runs end when the last answer arrives, open ones when the last one is due
    // or answered, whichever is later.
    let elapsed = start.elapsed();
    Run {
        ok: latencies.len() as u64,
        errors,
        elapsed,
        latency: Percentiles::of(&mut latencies),
        first_error,
    }
}

/// How the driver calls the internal services: as an operator of the local CA.
static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();

/// Makes every client of [`http_client`] trust the CA of `dir` and show the operators'
/// certificate.
pub fn trust(dir: &std::path::Path) -> anyhow::Result<()> {
    let config = service_kit::tls::TlsSettings::new(dir, "operator").client_config()?;
    let _ = TLS.set(config);
    Ok(())
}

/// An HTTP client for `clients` concurrent connections to one host (HTTPS or HTTP).
pub fn http_client(clients: usize) -> reqwest::Client {
    let mut builder =
        reqwest::Client::builder().pool_idle_timeout(service_kit::https::CLIENT_IDLE_TIMEOUT);
    if let Some(config) = TLS.get() {
        builder = builder.use_preconfigured_tls(config.clone());
    }
    builder
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client")
}

/// Sends `request`, checks the status and reads the whole body (so the connection is reused).
pub async fn expect_status(
    request: reqwest::RequestBuilder,
    status: u16,
) -> Result<bytes::Bytes, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.status().as_u16() == status {
        response.bytes().await.map_err(|e| e.to_string())
    } else {
        let got = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(format!("expected {status}, got {got}: {body}"))
    }
}

/// Open-loop latency runs offer this share of the closed-loop rate.
pub const LATENCY_LOAD: f64 = 0.8;

/// One server at one concurrency: its rate and its latency.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpFigure {
    pub clients: usize,
    /// Closed loop: successful requests per second.
    pub rate: Spread,
    /// Open loop at `latency_rate` requests per second.
    pub latency: LatencySpread,
    pub latency_rate: f64,
    pub errors: u64,
}

/// `repeats` closed-loop runs for the rate, then `repeats` open-loop runs at 80% of its median
/// for the latency; `run(pace)` is one run at `clients` clients.
pub async fn rate_and_latency<F, Fut>(
    label: &str,
    clients: usize,
    repeats: usize,
    run: F,
) -> HttpFigure
where
    F: Fn(Pace) -> Fut,
    Fut: Future<Output = Run>,
{
    let mut errors = 0;
    let mut note = |r: &Run| {
        errors += r.errors;
        if let Some(e) = &r.first_error {
            eprintln!("  {label}: {} requests failed; first: {e}", r.errors);
        }
    };
    let mut rates = Vec::new();
    for _ in 0..repeats {
        let r = run(Pace::Closed).await;
        note(&r);
        rates.push(r.rate());
    }
    let rate = Spread::of(&rates);
    let latency_rate = (rate.median * LATENCY_LOAD).max(1.0);
    let mut latencies = Vec::new();
    for _ in 0..repeats {
        let r = run(Pace::Open { rate: latency_rate }).await;
        note(&r);
        latencies.push(r.latency);
    }
    let latency = LatencySpread::of(&latencies);
    println!(
        "  {label}, {clients} clients: {}/s; at {latency_rate:.0}/s p50 {} p99 {} ms",
        rate.show(0),
        latency.p50.show(2),
        latency.p99.show(2)
    );
    HttpFigure {
        clients,
        rate,
        latency,
        latency_rate,
        errors,
    }
}
