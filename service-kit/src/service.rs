//! One start-up for every service: connect the database (migrating it when the service owns
//! it), bind, mount health, readiness, metrics and `/openapi.json` beside the service's own
//! routes, then serve HTTP and run the background tasks until the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::DatabaseSettings;
use crate::env::{Env, EnvError};
use crate::health::Readiness;

/// A background task of a service: it runs until the token is cancelled, then finishes the
/// work in hand.
pub type Task = Box<dyn FnOnce(CancellationToken) -> BoxFuture + Send>;
type BoxFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Wraps a future-making closure as a [`Task`].
pub fn task<F, Fut>(run: F) -> Task
where
    F: FnOnce(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Box::new(move |shutdown| Box::pin(run(shutdown)))
}

/// Where `cargo xtask up` runs Postgres.
const LOCAL_POSTGRES: &str = "127.0.0.1:25432";

/// The service's database of `cargo xtask up`, as the role it runs as (the password comes with
/// the real `DATABASE_URL`).
fn local_database_url(service: &topology::Service) -> String {
    match service.database {
        Some(a) => format!("postgres://{}@{LOCAL_POSTGRES}/{}", a.role, a.database),
        None => String::new(),
    }
}

/// What every service binary reads the same way: where it listens, its database, its logs
/// and its failpoints.
#[derive(Debug, Clone)]
pub struct Basics {
    /// `HTTP_ADDR`, default `127.0.0.1:<the service's port>`.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL` (default the service's database of `cargo xtask up`) and
    /// `DATABASE_MAX_CONNECTIONS`.
    pub database: DatabaseSettings,
    /// `FAILPOINTS`: comma-separated crash points for fault-injection tests, default none.
    pub failpoints: String,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub log: crate::telemetry::LogSettings,
    /// `TLS` (default on) and `TLS_DIR`: the service's certificate, for its HTTPS and as a
    /// client.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `HTTP_REQUEST_TIMEOUT_MS`, default 10000: the longest a request may take before it is
    /// answered 503 (`Service::time_limit`).
    pub request_timeout: std::time::Duration,
}

impl Basics {
    /// Opens the service's pool, and reports its connections in the pool gauges. When the
    /// service owns the database's `schema`, it is migrated first: as `DATABASE_OWNER_URL`'s
    /// role when that is set (which then grants the everyday role its privileges), else as
    /// the everyday role itself.
    pub async fn connect_database(
        &self,
        label: &str,
        schema: Option<&crate::db::Schema>,
    ) -> anyhow::Result<sqlx::PgPool> {
        use sqlx::Connection;
        let settings = &self.database;
        if let (Some(schema), Some(owner_url)) = (schema, &settings.owner_url) {
            let mut owner = sqlx::PgConnection::connect(owner_url.expose())
                .await
                .with_context(|| format!("connecting the {label} database as {owner_url}"))?;
            let role = crate::db::user_of(settings.url.expose())
                .with_context(|| format!("reading the user of {}", settings.url))?;
            schema
                .apply(&mut owner, &role)
                .await
                .with_context(|| format!("migrating the {label} database"))?;
            // The owner's connection is not kept: the service works as its own role.
            let _ = owner.close().await;
        }
        let pool = settings
            .connect()
            .await
            .with_context(|| format!("connecting the {label} database {}", settings.url))?;
        if let (Some(schema), None) = (schema, &settings.owner_url) {
            schema
                .migrator
                .run(&pool)
                .await
                .with_context(|| format!("migrating the {label} database"))?;
        }
        crate::metrics::watch_pool(&pool);
        Ok(pool)
    }

    /// Reads the variables; the defaults are `service`'s under `cargo xtask up` (its port,
    /// certificate, database and pool size as the topology declares them).
    pub fn from_env(env: &Env, service: &'static topology::Service) -> Result<Self, EnvError> {
        let pool = service.database.map_or(1, |a| a.pool);
        Ok(Self {
            http_addr: env.parse_or(
                "HTTP_ADDR",
                SocketAddr::from(([127, 0, 0, 1], service.port)),
            )?,
            database: DatabaseSettings::from_env(env, &local_database_url(service), pool)?,
            failpoints: env.string_or("FAILPOINTS", ""),
            log: crate::telemetry::LogSettings::from_env(env)?,
            tls: crate::tls::TlsSettings::from_env(env, service.certificate)?,
            request_timeout: env.millis_or(
                "HTTP_REQUEST_TIMEOUT_MS",
                std::time::Duration::from_secs(10),
            )?,
        })
    }
}

/// What a service process sets up before anything else: its telemetry (kept until the
/// process ends, so spans are flushed), its metrics recorder, its failpoints and the one
/// shutdown signal (SIGINT or SIGTERM).
pub struct Process {
    _telemetry: crate::telemetry::Telemetry,
    pub shutdown: CancellationToken,
}

impl Process {
    /// Starts the process-wide parts for the service `name`; a failpoint that hangs writes
    /// its marker file in `failpoint_markers`.
    pub fn start(
        name: &'static str,
        basics: &Basics,
        failpoint_markers: Option<std::path::PathBuf>,
    ) -> Self {
        Self::start_with(name, &basics.log, &basics.failpoints, failpoint_markers)
    }

    /// [`Process::start`] for a service without a database of its own (the gateway).
    pub fn start_with(
        name: &'static str,
        log: &crate::telemetry::LogSettings,
        failpoints: &str,
        failpoint_markers: Option<std::path::PathBuf>,
    ) -> Self {
        let telemetry = crate::telemetry::init(name, log);
        crate::metrics::install(name);
        crate::failpoint::arm_with_markers(failpoints, failpoint_markers);
        Self {
            _telemetry: telemetry,
            shutdown: crate::shutdown::on_signal(),
        }
    }

    /// Builds the service with `build`, waiting while Postgres or NATS cannot be reached:
    /// meanwhile `addr` answers alive but not ready (`startup`). Ends early on the shutdown
    /// signal; a dependency that refuses (not one that is away) ends it with the cause.
    pub async fn build<T, Fut>(
        &self,
        addr: SocketAddr,
        tls: Option<&crate::tls::TlsSettings>,
        build: impl FnMut() -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        crate::startup::patiently(addr, tls, &self.shutdown, build).await
    }

    /// The rest of a service's `main`: builds its app once what it needs answers (see
    /// [`Process::build`]), then runs it until the shutdown signal.
    pub async fn serve<T, Fut, Run>(
        &self,
        basics: &Basics,
        build: impl FnMut() -> Fut,
        run: impl FnOnce(T, CancellationToken) -> Run,
    ) -> anyhow::Result<()>
    where
        Fut: Future<Output = anyhow::Result<T>>,
        Run: Future<Output = anyhow::Result<()>>,
    {
        let app = self
            .build(basics.http_addr, basics.tls.as_ref(), build)
            .await?;
        run(app, self.shutdown.clone()).await
    }
}

/// A built service, bound to its port, not yet serving.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    tasks: Vec<Task>,
    pool: Option<sqlx::PgPool>,
    /// Set when a task stops on its own (an error or a panic) before shutdown.
    stopped_task: Arc<AtomicBool>,
    /// Serve HTTPS with this, admitting callers by their client certificates; plain HTTP
    /// when `None`.
    tls: Option<rustls::ServerConfig>,
    /// Set for a side that faces clients outside the system (the gateway's).
    public: Option<PublicSide>,
    /// The routes the gateway's certificate may call (none unless declared).
    gateway_routes: crate::https::GatewayRoutes,
}

/// What a public side has of its own: `/metrics` served apart, on an internal listener (over
/// TLS, admitting the scraper and operators by certificate), and caps on its connections.
struct PublicSide {
    metrics: TcpListener,
    metrics_tls: Option<rustls::ServerConfig>,
    limits: crate::https::ConnectionLimits,
}

impl Service {
    /// Binds `addr`; the service answers 404 to everything until [`Service::routes`].
    /// A socket the start-up held while waiting for a dependency is taken over instead.
    pub async fn bind(name: &'static str, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = match crate::startup::take(addr).await {
            Some(held) => held,
            None => TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        };
        Ok(Self {
            name,
            listener,
            router: Router::new(),
            tasks: Vec::new(),
            pool: None,
            stopped_task: Arc::default(),
            tls: None,
            public: None,
            gateway_routes: crate::https::GatewayRoutes::default(),
        })
    }

    /// The routes of this service the gateway forwards to: over TLS its certificate is
    /// refused (403) everywhere else. Operators' certificates are not limited by this.
    pub fn gateway_routes(
        mut self,
        routes: impl IntoIterator<Item = (axum::http::Method, String)>,
    ) -> Self {
        self.gateway_routes.0.extend(routes);
        self
    }

    /// Makes this a side that faces clients outside the system (call it before
    /// [`Service::routes`]): `/metrics` is not served here but on `metrics_addr`, an internal
    /// listener (HTTPS with `tls`'s certificate, admitting the scraper and operators); a
    /// client's `traceparent` becomes a link of a trace of the service's own, never its
    /// parent; and connections are capped by `limits`.
    pub async fn public(
        mut self,
        metrics_addr: SocketAddr,
        tls: Option<&crate::tls::TlsSettings>,
        limits: crate::https::ConnectionLimits,
    ) -> anyhow::Result<Self> {
        let metrics = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding the metrics listener {metrics_addr}"))?;
        let metrics_tls = tls
            .map(|settings| {
                settings
                    .server_config()
                    .with_context(|| format!("the TLS configuration in {}", settings.dir.display()))
            })
            .transpose()?;
        self.public = Some(PublicSide {
            metrics,
            metrics_tls,
            limits,
        });
        Ok(self)
    }

    /// Where `/metrics` is served: the internal listener of a public side, else `None` (it is
    /// on the service's own address).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.public
            .as_ref()
            .and_then(|p| p.metrics.local_addr().ok())
    }

    /// Answers 503 problem+json to a request that takes longer than `limit`, so no caller
    /// waits on a stuck request for ever; what it was doing is dropped (a command's
    /// transaction rolls back unless it committed, and its idempotency key answers a retry).
    pub fn time_limit(mut self, limit: std::time::Duration) -> Self {
        self.router = self
            .router
            .layer(axum::middleware::from_fn(move |request, next| {
                crate::problem::within(limit, request, next)
            }));
        self
    }

    /// Serves HTTPS with the certificate of `tls`, admitting to the API only the callers of
    /// [`crate::https::API_CALLERS`]; plain HTTP for `None` (`TLS=off`, or the gateway's
    /// public side).
    pub fn tls(mut self, tls: Option<&crate::tls::TlsSettings>) -> anyhow::Result<Self> {
        self.tls = tls
            .map(|settings| {
                settings
                    .server_config()
                    .with_context(|| format!("the TLS configuration in {}", settings.dir.display()))
            })
            .transpose()?;
        Ok(self)
    }

    /// The base URL the service answers on.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    /// Serves `routes` and, beside them: `/healthz`, `/readyz` (running `readiness`),
    /// `/metrics`, `/openapi.json` (`openapi`), a problem+json 404 for anything else, the HTTP
    /// metrics and the trace span of every request.
    pub fn routes(mut self, routes: Router, readiness: Readiness, openapi: Value) -> Self {
        let public = self.public.is_some();
        self.router = routes
            .route(
                "/openapi.json",
                get(move || {
                    let document = openapi.clone();
                    async move { axum::Json(document) }
                }),
            )
            .merge(crate::health::routes(
                readiness.tasks(self.stopped_task.clone()),
                !public,
            ))
            .fallback(crate::problem::not_found)
            .layer(axum::middleware::from_fn(crate::metrics::track_http))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                    if public {
                        crate::trace::http_span_public(request, next).await
                    } else {
                        crate::trace::http_span(request, next).await
                    }
                },
            ));
        self
    }

    /// Wraps everything served, the shared routes and the 404 included, in `layers` (the
    /// gateway's request ids and CORS apply to every answer).
    pub fn wrap(mut self, layers: impl FnOnce(Router) -> Router) -> Self {
        self.router = layers(self.router);
        self
    }

    /// Runs `task` beside the HTTP server.
    pub fn with_task(mut self, task: Task) -> Self {
        self.tasks.push(task);
        self
    }

    /// Closes `pool` once everything else has stopped.
    pub fn with_pool(mut self, pool: sqlx::PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves HTTP and runs the tasks until `shutdown`; each task finishes what it has in
    /// hand, and the pool is closed last.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(service = self.name, url = %self.url(), "listening");
        // A task that fails or panics before shutdown leaves the service unable to do its
        // work (a dead projection worker would leave `/readyz` green while nothing moves):
        // readiness fails and the whole process stops, so a supervisor restarts it.
        let tasks: Vec<_> = self
            .tasks
            .into_iter()
            .map(|task| {
                let run = tokio::spawn(task(shutdown.clone()));
                let (shutdown, stopped, name) =
                    (shutdown.clone(), self.stopped_task.clone(), self.name);
                tokio::spawn(async move {
                    let outcome = run.await;
                    let failed = !matches!(outcome, Ok(Ok(())));
                    if failed && !shutdown.is_cancelled() {
                        stopped.store(true, Ordering::SeqCst);
                        tracing::error!(service = name, "a background task stopped; shutting down");
                        shutdown.cancel();
                    }
                    outcome
                })
            })
            .collect();
        // A public side's metrics, on their internal listener.
        let (limits, metrics) = match self.public {
            Some(public) => {
                let router = Router::new()
                    .route("/metrics", get(crate::metrics::render))
                    .fallback(crate::problem::not_found);
                let stop = shutdown.clone();
                let served = tokio::spawn(crate::https::serve(
                    public.metrics,
                    router,
                    public.metrics_tls,
                    stop,
                ));
                (Some(public.limits), Some(served))
            }
            None => (None, None),
        };
        // The gateway's certificate reaches only the routes it forwards to (checked per route,
        // where the matched route template is known).
        let router = self.router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self.gateway_routes),
            crate::https::gateway_scope,
        ));
        // The peer address is offered to every handler (the gateway limits anonymous calls by
        // it).
        let served =
            crate::https::serve_on(&self.listener, router, self.tls, limits, shutdown.clone())
                .await
                .context("serving HTTP");
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // A server that failed stops the tasks too, rather than leaving them unsupervised.
        shutdown.cancel();
        for task in tasks {
            task.await
                .context("supervising a task")?
                .with_context(|| format!("a {} task panicked", self.name))??;
        }
        served?;
        if let Some(pool) = self.pool {
            pool.close().await;
        }
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }
}
