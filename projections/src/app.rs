//! Wires the projections worker: read database, NATS, one worker per projection, health HTTP.

use std::net::SocketAddr;

use anyhow::Context;
use runtime::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::orders_view::OrdersView;
use crate::worker::Worker;
use crate::Settings;

/// A built worker process, bound to its port, not yet running.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    orders_view: Worker<OrdersView>,
    pool: sqlx::PgPool,
}

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool =
            settings.database.connect().await.with_context(|| {
                format!("connecting the read database {}", settings.database.url)
            })?;
        crate::MIGRATOR
            .run(&pool)
            .await
            .context("migrating the read database")?;
        let nats = settings
            .nats
            .connect()
            .await
            .with_context(|| format!("connecting NATS at {}", settings.nats.url))?;
        let js = async_nats::jetstream::new(nats.clone());
        let orders_view = Worker::new(
            OrdersView,
            pool.clone(),
            &js,
            &settings.nats.namespace,
            &settings.nats.stream,
            settings.worker.clone(),
        )
        .await
        .context("creating the orders_view consumer")?;
        let readiness = Readiness::new()
            .postgres("read", pool.clone())
            .nats(nats)
            .streams(
                js,
                vec![settings
                    .nats
                    .namespace
                    .stream(messaging::BoundedContext::Orders)],
            );
        let router = axum::Router::new()
            .merge(runtime::health::routes(readiness))
            .fallback(runtime::problem::not_found);
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        Ok(Self {
            listener,
            router,
            orders_view,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Runs the workers and the health endpoint until `shutdown`; batches in hand finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let worker = tokio::spawn(self.orders_view.run(shutdown.clone()));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving HTTP")?;
        worker.await.context("projection worker task")?;
        self.pool.close().await;
        tracing::info!("projections stopped");
        Ok(())
    }
}
