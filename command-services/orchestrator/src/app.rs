//! Wires the orchestrator on the shared service start-up: database, saga bus and relay, event
//! consumers, driver, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use domain::saga::OrderSaga;
use event_store::{CommandBus, Relay, RelaySettings};
use messaging::BoundedContext;
use service_kit::health::Readiness;
use service_kit::service::{task, Service};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::driver::Driver;
use crate::Settings;

/// A built orchestrator, bound to its port, not yet running.
pub struct App {
    service: Service,
    settings: Settings,
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    relay: Relay,
    consumers: Vec<messaging::keeper::Keeper>,
    readiness: Readiness,
    committed: Arc<Notify>,
}

/// The streams the orchestrator listens to.
const INPUTS: [BoundedContext; 3] = messaging::durables::ORCHESTRATOR_INPUTS;

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The orchestrator owns its database and the SAGAS stream.
        let basics = &settings.basics;
        let pool = basics.connect_database("orchestrator", Some(&event_store::SCHEMA));
        let pool = pool.await?;
        let nats = settings.nats.connect_with_streams(&[BoundedContext::Sagas]);
        let (nats, js) = nats.await?;
        let ns = &settings.nats.namespace;
        // The other contexts' streams are theirs to create: wait for them, then make (or
        // take) the orchestrator's consumers, each kept as declared from then on.
        let mut consumers = Vec::new();
        for context in INPUTS {
            messaging::streams::existing_stream(&js, ns, context).await;
            let keeper = crate::inputs::keeper(&js, ns, context);
            keeper
                .consumer(|_| async { Ok(async_nats::jetstream::consumer::DeliverPolicy::All) })
                .await
                .with_context(|| {
                    format!(
                        "creating the orchestrator consumer on {}",
                        ns.stream(context)
                    )
                })?;
            consumers.push(keeper);
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
        // A consumer deleted or changed behind its back makes the orchestrator unready
        // until it has restored it.
        let readiness = consumers.iter().fold(
            Readiness::new()
                .postgres("orchestrator", pool.clone())
                .nats(nats.clone())
                .streams(js, streams),
            |readiness, keeper| {
                readiness.condition(
                    format!("consumer:{}:{}", keeper.name(), keeper.stream()),
                    keeper.intact(),
                )
            },
        );
        let service = Service::bind("orchestrator", settings.basics.http_addr)
            .await?
            .tls(settings.basics.tls.as_ref())?
            .gateway_routes(crate::http::gateway_routes());
        Ok(Self {
            service,
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
        self.service.local_addr()
    }

    /// The base URL it answers on (`https://` when TLS is on).
    pub fn url(&self) -> String {
        self.service.url()
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
            self.settings.containment,
            shutdown.clone(),
        );
        let relay = self.relay;
        let pool = self.pool.clone();
        let mut service = self
            .service
            .routes(
                crate::http::router(driver.clone()),
                self.readiness,
                crate::http::openapi(),
            )
            .time_limit(self.settings.basics.request_timeout)
            .with_pool(self.pool)
            .with_task(task(|shutdown| async move {
                relay.run(shutdown).await;
                Ok(())
            }));
        for keeper in self.consumers {
            let (driver, pool) = (driver.clone(), pool.clone());
            service = service.with_task(task(|shutdown| async move {
                crate::inputs::run(keeper, pool, driver, shutdown).await;
                Ok(())
            }));
        }
        let interval = self.settings.recovery_interval;
        service = service.with_task(task(move |_| async move {
            driver.recover(interval).await;
            Ok(())
        }));
        service.run(shutdown).await
    }
}
