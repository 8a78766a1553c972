//! `/healthz` (the process answers), `/readyz` (its dependencies answer) and `/metrics` for
//! every service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

/// The dependencies a service needs before it can do useful work.
#[derive(Clone, Default)]
pub struct Readiness {
    postgres: Vec<(&'static str, sqlx::PgPool)>,
    nats: Option<async_nats::Client>,
    streams: Option<(async_nats::jetstream::Context, Vec<String>)>,
    /// Set when a background task stopped on its own: the service can no longer do its work.
    stopped_task: Option<Arc<AtomicBool>>,
    /// Conditions a worker keeps (a durable consumer held as declared): ready only while
    /// each is true.
    conditions: Vec<(String, Arc<AtomicBool>)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// A database that must answer `SELECT 1`.
    pub fn postgres(mut self, name: &'static str, pool: sqlx::PgPool) -> Self {
        self.postgres.push((name, pool));
        self
    }

    /// A NATS connection that must be connected.
    pub fn nats(mut self, client: async_nats::Client) -> Self {
        self.nats = Some(client);
        self
    }

    /// JetStream streams that must exist.
    pub fn streams(mut self, js: async_nats::jetstream::Context, names: Vec<String>) -> Self {
        self.streams = Some((js, names));
        self
    }

    /// Fails once `stopped` is set (by the service's task supervisor).
    pub fn tasks(mut self, stopped: Arc<AtomicBool>) -> Self {
        self.stopped_task = Some(stopped);
        self
    }

    /// A condition the service keeps itself, named `name` in the report: ready only while
    /// `holds` is true (a durable consumer as declared, say).
    pub fn condition(mut self, name: impl Into<String>, holds: Arc<AtomicBool>) -> Self {
        self.conditions.push((name.into(), holds));
        self
    }

    /// Runs every check; `Ok` when all pass. The map says what each check found. A failed
    /// check says only that it failed: the driver's error goes to the log, never to callers.
    pub async fn check(&self) -> (bool, Map<String, Value>) {
        let mut ok = true;
        let mut report = Map::new();
        for (name, pool) in &self.postgres {
            let answer = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool);
            let status = probe(answer, "postgres", name).await;
            ok &= status == "ok";
            report.insert(format!("postgres:{name}"), Value::String(status.into()));
        }
        if let Some(client) = &self.nats {
            let state = client.connection_state();
            let connected = state == async_nats::connection::State::Connected;
            ok &= connected;
            report.insert(
                "nats".into(),
                Value::String(if connected {
                    "ok".into()
                } else {
                    format!("error: {state}")
                }),
            );
        }
        if let Some((js, names)) = &self.streams {
            for name in names {
                // `get_stream` asks the server (`get_stream_no_info` sends nothing, so it
                // would call a missing stream ready).
                let status = probe(js.get_stream(name), "stream", name).await;
                ok &= status == "ok";
                report.insert(format!("stream:{name}"), Value::String(status.into()));
            }
        }
        if let Some(stopped) = &self.stopped_task {
            let alive = !stopped.load(Ordering::SeqCst);
            ok &= alive;
            let status = if alive {
                "ok"
            } else {
                "error: a background task stopped"
            };
            report.insert("tasks".into(), Value::String(status.into()));
        }
        for (name, holds) in &self.conditions {
            let holds = holds.load(Ordering::SeqCst);
            ok &= holds;
            let status = if holds { "ok" } else { "error: being restored" };
            report.insert(name.clone(), Value::String(status.into()));
        }
        (ok, report)
    }
}

/// Routes `/healthz` and `/readyz` (and `/metrics` unless the service serves it apart, on
/// an internal listener), to merge into a service's router.
pub fn routes<S: Clone + Send + Sync + 'static>(readiness: Readiness, metrics: bool) -> Router<S> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let router = if metrics {
        router.route("/metrics", get(crate::metrics::render))
    } else {
        router
    };
    router.with_state(Arc::new(readiness))
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "alive" }))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> (StatusCode, axum::Json<Value>) {
    let (ok, checks) = readiness.check().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ok { "ready" } else { "unready" };
    (
        status,
        axum::Json(json!({ "status": word, "checks": checks })),
    )
}

/// How long one readiness check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `ok`, or why `what` `name` failed its check; the driver's error goes to the log only.
async fn probe<T, E: std::error::Error + 'static>(
    check: impl std::future::Future<Output = Result<T, E>>,
    what: &str,
    name: &str,
) -> &'static str {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(_)) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(what, name, error = %crate::problem::ErrorChain(&e), "readiness: a check failed");
            "error: unavailable"
        }
        Err(_) => "error: timed out",
    }
}
