//! Prometheus metrics: one recorder per process, `GET /metrics` on every service, and the
//! HTTP RED metrics (requests by route and status, latency histograms) as a middleware.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The pools whose usage `/metrics` reports, read at each scrape.
static POOLS: Mutex<Vec<sqlx::PgPool>> = Mutex::new(Vec::new());

/// Reports the pool's connections (in use, idle, the maximum) on `/metrics` from now on,
/// labelled by database, until the pool is closed (every service closes its pool when it
/// stops).
pub fn watch_pool(pool: &sqlx::PgPool) {
    POOLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(pool.clone());
}

fn record_pools() {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|pool| !pool.is_closed());
    // Pools on one database (replicas in one process) add up.
    let mut by_database: std::collections::BTreeMap<String, [u32; 3]> = Default::default();
    for pool in pools.iter() {
        let database = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let idle = pool.num_idle() as u32;
        let sums = by_database.entry(database).or_default();
        sums[0] += pool.size().saturating_sub(idle);
        sums[1] += idle;
        sums[2] += pool.options().get_max_connections();
    }
    for (database, [in_use, idle, max]) in by_database {
        for (state, value) in [("in_use", in_use), ("idle", idle), ("max", max)] {
            metrics::gauge!("db_pool_connections", "database" => database.clone(), "state" => state)
                .set(f64::from(value));
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn build(service: Option<&'static str>) -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("static buckets are valid");
    if let Some(service) = service {
        builder = builder.add_global_label("service", service);
    }
    match builder.install_recorder() {
        Ok(handle) => handle,
        // Another recorder is installed (a test harness): render an empty registry.
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder already installed");
            PrometheusBuilder::new().build_recorder().handle()
        }
    }
}

/// Installs the process's recorder with a `service` label on every metric. Call once, early
/// in `main`; without it the recorder is installed unlabelled on first use.
pub fn install(service: &'static str) {
    let _ = HANDLE.get_or_init(|| build(Some(service)));
}

fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| build(None))
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render() -> Response {
    let _ = handle();
    record_pools();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// Counts and times every request by method, matched route and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    // Make sure the recorder exists before the first metric is emitted.
    let _ = handle();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
