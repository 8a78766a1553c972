//! Builds the gateway from its settings: the token verifier, the edge checks, the upstreams,
//! the routes and the layers every answer passes (request id, CORS, body limit).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use service_kit::health::Readiness;
use service_kit::service::{task, Service};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::catalog::CatalogCache;
use crate::edge::{self, Edge};
use crate::oidc::Verifier;
use crate::owners::Owners;
use crate::routes::{self, Gateway};
use crate::settings::Settings;
use crate::streams::OpenStreams;
use crate::upstream::Upstream;

/// The built gateway, bound, not yet serving.
pub struct App {
    service: Service,
    stop_streams: CancellationToken,
}

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // The issuer's documents: a provider that hangs must not hold requests for long.
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .timeout(settings.breaker.timeout)
            .build()
            .context("building the HTTP client")?;
        // The streams are their contexts' to create: until they exist, the live streams answer
        // 503, and everything else works.
        let (nats, js) = settings.nats.connect_with_streams(&[]).await?;

        let verifier = Verifier::new(settings.oidc.clone(), http.clone());
        match verifier.warm_up().await {
            Ok(keys) => {
                tracing::info!(keys, issuer = %settings.oidc.issuer, "OpenID provider found")
            }
            // The provider may start after the gateway: tokens fetch the keys when it is up.
            Err(e) => {
                tracing::warn!(error = %e, "the OpenID provider's keys are not available yet")
            }
        }
        let edge = Arc::new(Edge::new(verifier, &settings.limits));

        let urls = &settings.upstreams;
        let breaker = &settings.breaker;
        let calls = crate::upstream::client(settings.tls.as_ref())?;
        let upstream = |name, url: &str| Upstream::new(name, url, calls.clone(), breaker);
        let stop_streams = CancellationToken::new();
        let gateway = Arc::new(Gateway {
            orders: upstream(topology::ORDERS.name, &urls.orders)?,
            inventory: upstream(topology::INVENTORY.name, &urls.inventory)?,
            payments: upstream(topology::PAYMENTS.name, &urls.payments)?,
            orchestrator: upstream(topology::ORCHESTRATOR.name, &urls.orchestrator)?,
            projections: upstream(topology::PROJECTIONS.name, &urls.projections)?,
            query: upstream(topology::QUERY_API.name, &urls.query)?,
            notifications: upstream(topology::NOTIFICATIONS.name, &urls.notifications)?,
            owners: Owners::new(js.clone(), settings.nats.namespace.clone()),
            catalog: CatalogCache::new(settings.catalog_fresh_for),
            js: js.clone(),
            ns: settings.nats.namespace.clone(),
            request_timeout: settings.limits.request_timeout,
            stop: stop_streams.clone(),
            streams: OpenStreams::new(
                settings.limits.streams_per_caller,
                settings.limits.streams_total,
            ),
        });

        // Outermost first: the rate limits and the token, then the body (read whole within
        // its time limit), then the route.
        let limits = &settings.limits;
        let api = routes::router(gateway)
            .layer(axum::middleware::from_fn_with_state(
                (limits.body_read_timeout, limits.body_limit_bytes),
                edge::read_body,
            ))
            .layer(axum::middleware::from_fn_with_state(
                edge.clone(),
                edge::check,
            ))
            .layer(DefaultBodyLimit::max(settings.limits.body_limit_bytes));
        let readiness = Readiness::new().nats(nats);
        let cors = cors(&settings.limits.cors_origins)?;
        // The public side: metrics served apart (internal, over TLS), a client's trace only
        // linked, connections capped (a trusted proxy's only in all).
        let connections = service_kit::https::ConnectionLimits {
            total: limits.max_connections,
            per_peer: limits.max_connections_per_client,
            exempt: limits.trusted_proxies.clone(),
        };
        let service = Service::bind("gateway", settings.http_addr)
            .await?
            .public(settings.metrics_addr, settings.tls.as_ref(), connections)
            .await?
            .routes(api, readiness, crate::openapi::served())
            .wrap(|router| {
                router.layer(
                    tower::ServiceBuilder::new()
                        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                        .layer(PropagateRequestIdLayer::x_request_id())
                        .layer(cors),
                )
            })
            .with_task(task(move |shutdown: CancellationToken| async move {
                // Full buckets are forgotten, so memory follows the callers of the last
                // minutes, not of all time.
                while service_kit::retry::sleep_unless_cancelled(Duration::from_secs(60), &shutdown)
                    .await
                {
                    edge.forget_idle();
                }
                Ok(())
            }));
        Ok(Self {
            service,
            stop_streams,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.service.local_addr()
    }

    /// Where its `/metrics` is served (internal, apart from the public side).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.service.metrics_addr()
    }

    /// The base URL it answers on (`https://` when TLS is on).
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// Serves until `shutdown`; live streams end first so the server can finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop_streams = self.stop_streams;
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            stop_streams.cancel();
        });
        self.service.run(shutdown).await
    }
}

/// Browsers on `origins` may call the API; with none, no CORS headers are sent.
fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin {o:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600)))
}
