//! Wires a command service: database and migrations, NATS and its stream, command bus, outbox
//! relay, the contract's HTTP routes and NATS request/reply, on the shared service start-up.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use cqrs_es::Aggregate;
use event_store::{CommandBus, Relay, RelaySettings};
use service_kit::health::Readiness;
use service_kit::service::{task, Service};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::settings::ServiceSettings;
use crate::spec::CommandSpec;

/// A built command service, bound to its port, not yet serving.
pub struct CommandApp {
    service: Service,
}

/// What a context's service is built from beyond its database: the connections the shared
/// machinery opened, for the context's own parts to use.
pub struct Resources<'a> {
    pub pool: &'a sqlx::PgPool,
    pub nats: &'a async_nats::Client,
    pub namespace: &'a messaging::Namespace,
}

/// What a context adds to the shared machinery: its aggregate's services, background tasks
/// beside serving commands (orders answers payments' requests to open a sealed token), and
/// routes beside its commands' (documented by [`CommandSpec::extra_paths`]).
pub struct Parts<A: Aggregate> {
    pub services: A::Services,
    pub tasks: Vec<service_kit::service::Task>,
    pub routes: axum::Router,
    /// Which of `routes` the gateway forwards to (operators' routes, say): its certificate
    /// is admitted there, as on the public commands.
    pub gateway_routes: Vec<(axum::http::Method, String)>,
}

impl<A: Aggregate> Parts<A> {
    /// Only the aggregate's services.
    pub fn services(services: A::Services) -> Self {
        Self {
            services,
            tasks: Vec::new(),
            routes: axum::Router::new(),
            gateway_routes: Vec::new(),
        }
    }
}

impl CommandApp {
    /// Connects, migrates, creates the stream and binds; the HTTP routes are the contract's
    /// (and the context's own, from `parts`, made once the database and NATS are connected).
    pub async fn build<S>(
        settings: &ServiceSettings,
        spec: S,
        parts: impl FnOnce(&Resources<'_>) -> anyhow::Result<Parts<S::Aggregate>>,
    ) -> anyhow::Result<Self>
    where
        S: CommandSpec,
    {
        let context = S::CONTEXT;
        let mut basics = settings.basics.clone();
        basics.database.session.extend(spec.session());
        let pool = basics
            .connect_database(context.token(), Some(&event_store::SCHEMA))
            .await?;
        // The service owns its stream: create it even on replicas that run no relay.
        let (nats, js) = settings.nats.connect_with_streams(&[context]).await?;
        let namespace = settings.nats.namespace.clone();
        let Parts {
            services,
            tasks: own_tasks,
            routes: own_routes,
            gateway_routes: own_gateway_routes,
        } = parts(&Resources {
            pool: &pool,
            nats: &nats,
            namespace: &namespace,
        })?;

        let committed = Arc::new(Notify::new());
        let bus = CommandBus::new(pool.clone(), services, committed.clone())
            .with_upcasters(S::upcasters());
        let dispatcher = Arc::new(Dispatcher::new(spec, bus));
        let housekeeping = dispatcher
            .spec()
            .housekeeping(dispatcher.clone(), pool.clone());
        let readiness = Readiness::new()
            .postgres(context.token(), pool.clone())
            .nats(nats.clone())
            .streams(js.clone(), vec![namespace.stream(context)]);
        let (spec_routes, spec_gateway_routes) =
            dispatcher.spec().routes(dispatcher.clone(), pool.clone());
        let routes = crate::http::routes::<S>()
            .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
            .with_state(dispatcher.clone())
            .merge(own_routes)
            .merge(spec_routes);
        let retention = service_kit::retention::Rule {
            table: "idempotency",
            column: "recorded_at",
            keep: settings.idempotency_retention,
        };
        // The gateway forwards the public commands only: a saga-internal one (confirm,
        // capture, ...) refuses its certificate.
        let public = S::bindings()
            .into_iter()
            .filter(|b| !b.info.saga_internal)
            .map(|b| (axum::http::Method::POST, b.info.path.to_owned()))
            .chain(own_gateway_routes)
            .chain(spec_gateway_routes);
        let mut service = Service::bind(context.token(), settings.basics.http_addr)
            .await?
            .tls(settings.basics.tls.as_ref())?
            .gateway_routes(public)
            .routes(routes, readiness, crate::openapi::document::<S>())
            .time_limit(settings.basics.request_timeout)
            .with_task(service_kit::retention::task_for(
                pool.clone(),
                vec![retention],
                RETENTION_EVERY,
            ))
            .with_pool(pool.clone());
        for task in housekeeping.into_iter().chain(own_tasks) {
            service = service.with_task(task);
        }
        if settings.outbox_relay {
            let relay = Relay::new(
                pool,
                js,
                RelaySettings {
                    context,
                    namespace: namespace.clone(),
                    stream: settings.nats.stream.clone(),
                    batch_size: settings.outbox_batch_size,
                    poll_interval: settings.outbox_poll_interval,
                },
                committed,
            );
            service = service.with_task(task(|shutdown| async move {
                relay.run(shutdown).await;
                Ok(())
            }));
        }
        let concurrency = settings.nats_command_concurrency;
        let service = service.with_task(task(move |shutdown| {
            crate::nats::serve(nats, namespace, dispatcher, concurrency, shutdown)
        }));
        Ok(Self { service })
    }

    /// Context `S`, whose aggregate needs no services, built and bound.
    pub async fn of<S>(settings: &ServiceSettings) -> anyhow::Result<Self>
    where
        S: CommandSpec + Default,
        <S::Aggregate as Aggregate>::Services: Default,
    {
        Self::build(settings, S::default(), |_| {
            Ok(Parts::services(Default::default()))
        })
        .await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// The base URL it answers on (`https://` when TLS is on).
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// Serves HTTP and NATS commands until `shutdown`; commands in hand are answered and the
    /// relay finishes its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(shutdown).await.context("command service")
    }
}

/// How often old idempotency rows are deleted.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The whole `main` of the command service of context `S` (whose aggregate needs no
/// services): settings from the environment, the process's telemetry and shutdown signal, then
/// serve until the signal.
pub async fn main<S>() -> anyhow::Result<()>
where
    S: CommandSpec + Default,
    <S::Aggregate as Aggregate>::Services: Default,
{
    let env = service_kit::env::Env::from_process();
    let settings = crate::settings::settings::<S>(&env).context("reading settings")?;
    let name = S::CONTEXT.token();
    let process = service_kit::service::Process::start(name, &settings.basics, None);
    process
        .serve(
            &settings.basics,
            || CommandApp::of::<S>(&settings),
            CommandApp::run,
        )
        .await
}
