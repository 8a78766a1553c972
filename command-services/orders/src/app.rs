//! Wires the orders service together: database, NATS, command bus, relay and HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use event_store::{Relay, RelaySettings};
use messaging::BoundedContext;
use runtime::health::Readiness;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::http::{router, AppState};
use crate::Settings;

/// A built service, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    relay: Option<Relay>,
    pool: sqlx::PgPool,
}

impl App {
    /// Connects, migrates and binds. Fails with context when a dependency is unreachable.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool = event_store::connect_and_migrate(&settings.database)
            .await
            .with_context(|| format!("connecting the orders database {}", settings.database.url))?;
        let nats = settings
            .nats
            .connect()
            .await
            .with_context(|| format!("connecting NATS at {}", settings.nats.url))?;
        let js = async_nats::jetstream::new(nats.clone());
        // The service owns its stream: create it even on replicas that run no relay.
        messaging::streams::ensure_stream(
            &js,
            &settings.nats.namespace,
            BoundedContext::Orders,
            &settings.nats.stream,
        )
        .await
        .context("creating the ORDERS stream")?;
        let committed = Arc::new(Notify::new());

        let relay = settings.outbox_relay.then(|| {
            Relay::new(
                pool.clone(),
                js.clone(),
                RelaySettings {
                    context: BoundedContext::Orders,
                    namespace: settings.nats.namespace.clone(),
                    stream: settings.nats.stream.clone(),
                    batch_size: settings.outbox_batch_size,
                    poll_interval: settings.outbox_poll_interval,
                },
                committed.clone(),
            )
        });
        let state = Arc::new(AppState {
            orders: event_store::CommandBus::new(pool.clone(), (), committed),
        });
        let readiness = Readiness::new()
            .postgres("orders", pool.clone())
            .nats(nats)
            .streams(
                js,
                vec![settings.nats.namespace.stream(BoundedContext::Orders)],
            );
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        Ok(Self {
            listener,
            router: router(state, readiness, settings.body_limit_bytes),
            relay,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown`, then lets the relay finish its batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run(shutdown.clone())));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        if let Some(relay) = relay {
            relay.await.context("outbox relay task")?;
        }
        self.pool.close().await;
        tracing::info!("orders service stopped");
        Ok(())
    }
}
