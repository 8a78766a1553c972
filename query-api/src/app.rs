//! Wires the query API on the shared service start-up: read database, freshness listener,
//! HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use service_kit::health::Readiness;
use service_kit::service::Service;
use tokio_util::sync::CancellationToken;

use crate::freshness::Freshness;
use crate::http::{router, AppState};
use crate::Settings;

/// A built API, bound to its port, not yet serving.
pub struct App {
    service: Service,
    pool: sqlx::PgPool,
    settings: Settings,
}

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The read database belongs to the projections, which migrate it.
        let pool = settings.basics.connect_database("read", None).await?;
        // Every read is the gateway's to forward.
        let service = Service::bind("query-api", settings.basics.http_addr)
            .await?
            .tls(settings.basics.tls.as_ref())?
            .gateway_routes(
                crate::http::routes().map(|r| (axum::http::Method::GET, r.path.to_owned())),
            );
        Ok(Self {
            service,
            pool,
            settings: settings.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// The base URL it answers on (`https://` when TLS is on).
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = Arc::new(AppState {
            pool: self.pool.clone(),
            freshness: Freshness::start(self.pool.clone(), shutdown.clone()),
            min_version_timeout: self.settings.min_version_timeout,
            min_version_max_ahead: self.settings.min_version_max_ahead,
            request_timeout: self.settings.request_timeout,
        });
        let readiness = Readiness::new().postgres("read", self.pool.clone());
        self.service
            .routes(router(state), readiness, crate::openapi::document())
            .with_pool(self.pool)
            .run(shutdown)
            .await
    }
}
