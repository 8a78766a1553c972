//! Wires the orchestrator: database, saga bus and relay, event consumers, driver, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use domain::saga::OrderSaga;
use event_store::{CommandBus, Relay, RelaySettings};
use messaging::BoundedContext;
use runtime::health::Readiness;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::driver::Driver;
use crate::Settings;

/// A built orchestrator, bound to its port, not yet running.
pub struct App {
    listener: TcpListener,
    settings: Settings,
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    relay: Relay,
    consumers: Vec<async_nats::jetstream::consumer::PullConsumer>,
    readiness: Readiness,
    committed: Arc<Notify>,
}

/// The streams the orchestrator listens to.
const INPUTS: [BoundedContext; 3] = [
    BoundedContext::Orders,
    BoundedContext::Inventory,
    BoundedContext::Payments,
];

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool = event_store::connect_and_migrate(&settings.database)
            .await
            .with_context(|| {
                format!(
                    "connecting the orchestrator database {}",
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
        let ns = &settings.nats.namespace;
        messaging::streams::ensure_stream(&js, ns, BoundedContext::Sagas, &settings.nats.stream)
            .await
            .context("creating the SAGAS stream")?;
        let mut consumers = Vec::new();
        for context in INPUTS {
            consumers.push(
                crate::inputs::consumer(&js, ns, context, &settings.nats.stream)
                    .await
                    .with_context(|| {
                        format!(
                            "creating the orchestrator consumer on {}",
                            ns.stream(context)
                        )
                    })?,
            );
        }
        let committed = Arc::new(Notify::new());
        let relay = Relay::new(
            pool.clone(),
            js.clone(),
            RelaySettings {
                context: BoundedContext::Sagas,
                namespace: ns.clone(),
                stream: settings.nats.stream.clone(),
                batch_size: 500,
                poll_interval: settings.outbox_poll_interval,
            },
            committed.clone(),
        );
        let mut streams = vec![ns.stream(BoundedContext::Sagas)];
        streams.extend(INPUTS.iter().map(|c| ns.stream(*c)));
        let readiness = Readiness::new()
            .postgres("orchestrator", pool.clone())
            .nats(nats.clone())
            .streams(js, streams);
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        Ok(Self {
            listener,
            settings: settings.clone(),
            pool,
            nats,
            relay,
            consumers,
            readiness,
            committed,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Runs until `shutdown`: consumers finish their batch, the relay its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let bus =
            CommandBus::<OrderSaga>::new(self.pool.clone(), self.settings.policy, self.committed);
        let driver = Driver::new(
            bus,
            self.pool.clone(),
            self.nats,
            self.settings.nats.namespace.clone(),
            self.settings.policy,
            shutdown.clone(),
        );
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let mut tasks = Vec::new();
        for consumer in self.consumers {
            tasks.push(tokio::spawn(crate::inputs::run(
                consumer,
                driver.clone(),
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(
            driver.clone().recover(self.settings.recovery_interval),
        ));
        axum::serve(self.listener, crate::http::router(driver, self.readiness))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        for task in tasks {
            task.await.context("orchestrator task")?;
        }
        relay.await.context("outbox relay task")?;
        self.pool.close().await;
        tracing::info!("orchestrator stopped");
        Ok(())
    }
}
