//! Wires the query API: read database, freshness listener, HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use runtime::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::freshness::Freshness;
use crate::http::{router, AppState};
use crate::Settings;

/// A built API, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    pool: sqlx::PgPool,
    settings: Settings,
}

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool =
            settings.database.connect().await.with_context(|| {
                format!("connecting the read database {}", settings.database.url)
            })?;
        runtime::metrics::watch_pool(&pool);
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        Ok(Self {
            listener,
            pool,
            settings: settings.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = Arc::new(AppState {
            pool: self.pool.clone(),
            freshness: Freshness::start(self.pool.clone(), shutdown.clone()),
            min_version_timeout: self.settings.min_version_timeout,
            request_timeout: self.settings.request_timeout,
        });
        let readiness = Readiness::new().postgres("read", self.pool.clone());
        axum::serve(self.listener, router(state, readiness))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving HTTP")?;
        self.pool.close().await;
        tracing::info!("query API stopped");
        Ok(())
    }
}
