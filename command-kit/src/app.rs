//! Wires a command service: database and migrations, NATS and its stream, command bus, outbox
//! relay, HTTP routes and NATS request/reply.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::Aggregate;
use event_store::{CommandBus, Relay, RelaySettings};
use runtime::health::Readiness;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::settings::ServiceSettings;
use crate::spec::CommandSpec;

type Task = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A built command service, bound to its port, not yet serving.
pub struct CommandApp {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    relay: Option<Relay>,
    commands: Box<dyn FnOnce(CancellationToken) -> Task + Send>,
    pool: sqlx::PgPool,
}

impl CommandApp {
    /// Connects, migrates, creates the stream and binds. `routes` adds the context's HTTP
    /// command routes (see [`crate::http::command`]).
    pub async fn build<S>(
        settings: &ServiceSettings,
        spec: S,
        services: <S::Aggregate as Aggregate>::Services,
        upcasters: Vec<Box<dyn EventUpcaster>>,
        routes: Router<Arc<Dispatcher<S>>>,
    ) -> anyhow::Result<Self>
    where
        S: CommandSpec,
    {
        let context = S::CONTEXT;
        let pool = event_store::connect_and_migrate(&settings.database)
            .await
            .with_context(|| {
                format!(
                    "connecting the {context} database {}",
                    settings.database.url
                )
            })?;
        runtime::metrics::watch_pool(&pool);
        let nats = settings
            .nats
            .connect()
            .await
            .with_context(|| format!("connecting NATS at {}", settings.nats.url))?;
        let js = async_nats::jetstream::new(nats.clone());
        let namespace = settings.nats.namespace.clone();
        // The service owns its stream: create it even on replicas that run no relay.
        messaging::streams::ensure_stream(&js, &namespace, context, &settings.nats.stream)
            .await
            .with_context(|| format!("creating the {} stream", namespace.stream(context)))?;

        let committed = Arc::new(Notify::new());
        let relay = settings.outbox_relay.then(|| {
            Relay::new(
                pool.clone(),
                js.clone(),
                RelaySettings {
                    context,
                    namespace: namespace.clone(),
                    stream: settings.nats.stream.clone(),
                    batch_size: settings.outbox_batch_size,
                    poll_interval: settings.outbox_poll_interval,
                },
                committed.clone(),
            )
        });
        let bus = CommandBus::new(pool.clone(), services, committed).with_upcasters(upcasters);
        let dispatcher = Arc::new(Dispatcher::new(spec, bus));

        let concurrency = settings.nats_command_concurrency;
        let commands: Box<dyn FnOnce(CancellationToken) -> Task + Send> = {
            let (nats, namespace, dispatcher) =
                (nats.clone(), namespace.clone(), dispatcher.clone());
            Box::new(move |shutdown| {
                Box::pin(crate::nats::serve(
                    nats,
                    namespace,
                    dispatcher,
                    concurrency,
                    shutdown,
                ))
            })
        };
        let readiness = Readiness::new()
            .postgres(context.token(), pool.clone())
            .nats(nats)
            .streams(js, vec![namespace.stream(context)]);
        let router = routes
            .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
            .with_state(dispatcher)
            .merge(runtime::health::routes(readiness))
            .fallback(runtime::problem::not_found)
            .layer(axum::middleware::from_fn(runtime::metrics::track_http))
            .layer(axum::middleware::from_fn(runtime::trace::http_span));
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        Ok(Self {
            name: context.token(),
            listener,
            router,
            relay,
            commands,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves HTTP and NATS commands until `shutdown`; commands in hand are answered and the
    /// relay finishes its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        let commands = tokio::spawn((self.commands)(shutdown.clone()));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        commands.await.context("NATS command task")??;
        if let Some(relay) = relay {
            relay.await.context("outbox relay task")?;
        }
        self.pool.close().await;
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }
}
