//! Serves a service's router: over TLS for the internal services, letting a request through
//! only when its connection's client certificate belongs to a caller allowed on that route;
//! in plain HTTP for the gateway's public side (and `TLS=off`). Either way a client gets
//! [`HEADER_READ_TIMEOUT`] to send a request's head, so idle or trickling connections cannot
//! hold the server's sockets.
//!
//! Health and readiness are open to anyone (a Kubernetes probe has no certificate); metrics
//! also to the Prometheus scraper; everything else only to the gateway and to operators.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::problem::Problem;

/// The callers of a service's API: the public entry and people operating the system.
pub const API_CALLERS: &[&str] = &["gateway", "operator"];

/// Who may also read `/metrics`.
pub const METRICS_SCRAPER: &str = "prometheus";

/// Routes every client may reach, certificate or not.
const OPEN_ROUTES: &[&str] = &["/healthz", "/readyz"];

/// A client that opens a connection and never finishes the handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a request's head, counted from when the server starts
/// waiting for it: after connecting, or after the last response on a kept-alive connection.
/// So an idle kept-alive connection is also closed after this; clients keep idle connections
/// for less ([`CLIENT_IDLE_TIMEOUT`]), so they never send on one the server is closing.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long our clients (the gateway's, the tests', the benchmark's) keep an idle connection.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Who is at the other end of a connection, as its verified client certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// No certificate.
    Anonymous,
    /// A certificate signed by the local CA, issued to this caller (`None`: to a process that
    /// calls no API, such as a projection worker).
    Certified(Option<&'static str>),
}

impl Peer {
    fn of(certificate: Option<&rustls::pki_types::CertificateDer<'_>>) -> Self {
        match certificate {
            None => Self::Anonymous,
            Some(cert) => Self::Certified(
                API_CALLERS
                    .iter()
                    .chain([&METRICS_SCRAPER])
                    .find(|name| crate::tls::names(cert, name))
                    .copied(),
            ),
        }
    }
}

/// How many connections a server holds open at once: in all, and from one client address
/// (a proxy's addresses in `exempt` count only in all, since many clients share them).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_peer: usize,
    pub exempt: Vec<ipnet::IpNet>,
}

/// Connections open per client address.
type PerPeer = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// The connections open now, in all and per client address.
struct Admission {
    limits: ConnectionLimits,
    total: Arc<tokio::sync::Semaphore>,
    per_peer: PerPeer,
}

/// One admitted connection's place; dropped when the connection ends.
struct Admitted {
    _total: tokio::sync::OwnedSemaphorePermit,
    peer: Option<(std::net::IpAddr, PerPeer)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((ip, open)) = &self.peer {
            let mut open = open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = open.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            total: Arc::new(tokio::sync::Semaphore::new(limits.total)),
            per_peer: Arc::default(),
            limits,
        }
    }

    /// A place for a connection from `ip`, or why there is none.
    fn admit(&self, ip: std::net::IpAddr) -> Result<Admitted, &'static str> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "total")?;
        if self.limits.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(Admitted {
                _total: total,
                peer: None,
            });
        }
        let mut open = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limits.per_peer {
            return Err("per_peer");
        }
        *count += 1;
        Ok(Admitted {
            _total: total,
            peer: Some((ip, self.per_peer.clone())),
        })
    }
}

/// Serves `router` on `listener` until `shutdown`, over TLS with `tls` (admitting callers by
/// their certificates) or in plain HTTP without, then lets every connection finish the
/// request in hand.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_on(&listener, router, tls, None, shutdown).await
}

/// [`serve`] on a listener that outlives it: the start-up's waiting answers hand the same
/// socket to the service (`startup`), so the port is never closed in between. With `limits`,
/// a connection past them is closed at once (counted in
/// `http_connections_refused_total{reason}`).
pub async fn serve_on(
    listener: &TcpListener,
    router: Router,
    tls: Option<rustls::ServerConfig>,
    limits: Option<ConnectionLimits>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admission = limits.map(Admission::new);
    let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    let router = match acceptor {
        Some(_) => router.layer(axum::middleware::from_fn(admit)),
        None => router,
    };
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let admitted = match admission.as_ref().map(|a| a.admit(addr.ip())) {
            None => None,
            Some(Ok(admitted)) => Some(admitted),
            Some(Err(reason)) => {
                metrics::counter!("http_connections_refused_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(%addr, reason, "connection refused: too many open");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router, watcher) = (acceptor.clone(), router.clone(), connections.watcher());
        tokio::spawn(async move {
            // Held until the connection ends.
            let _admitted = admitted;
            let Some(acceptor) = acceptor else {
                return connection(TokioIo::new(tcp), addr, None, router, watcher).await;
            };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let peer = Peer::of(tls.get_ref().1.peer_certificates().and_then(|c| c.first()));
            connection(TokioIo::new(tls), addr, Some(peer), router, watcher).await;
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// Serves one connection's requests, each with the peer's address (and certificate, over
/// TLS) in its extensions.
async fn connection<I>(
    io: I,
    addr: std::net::SocketAddr,
    peer: Option<Peer>,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<_>| {
        request.extensions_mut().insert(ConnectInfo(addr));
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%addr, error = %e, "connection ended with an error");
    }
}

/// Refuses a request whose caller may not reach its route: 401 without a certificate, 403
/// with another process's.
async fn admit(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if OPEN_ROUTES.contains(&path) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::Anonymous);
    let allowed = match peer {
        Peer::Certified(Some(caller)) => {
            API_CALLERS.contains(&caller) || (caller == METRICS_SCRAPER && path == "/metrics")
        }
        Peer::Certified(None) => false,
        Peer::Anonymous => {
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "client-certificate-required",
                "This internal API needs a client certificate",
            )
            .detail("Call it through the gateway, or as an operator with the local CA's operator certificate.")
            .into_response();
        }
    };
    if allowed {
        next.run(request).await
    } else {
        Problem::new(
            StatusCode::FORBIDDEN,
            "caller-not-allowed",
            "This client certificate may not call this route",
        )
        .into_response()
    }
}

/// The routes of a service the gateway's certificate may call: the ones the gateway's own
/// route table forwards to, each as its method and route template (`/orders/{order_id}/cancel`).
#[derive(Debug, Clone, Default)]
pub struct GatewayRoutes(pub Vec<(axum::http::Method, String)>);

/// Refuses the gateway's certificate on a route it does not forward to (403): a gateway taken
/// over reaches only what clients can reach through it, never a saga-internal command.
/// Operators keep every route.
pub async fn gateway_scope(
    axum::extract::State(routes): axum::extract::State<std::sync::Arc<GatewayRoutes>>,
    request: Request,
    next: Next,
) -> Response {
    let gateway = request.extensions().get::<Peer>() == Some(&Peer::Certified(Some("gateway")));
    if gateway && !OPEN_ROUTES.contains(&request.uri().path()) {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str().to_owned());
        let allowed = route.is_some_and(|route| {
            routes
                .0
                .iter()
                .any(|(method, path)| method == request.method() && *path == route)
        });
        if !allowed {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "caller-not-allowed",
                "This client certificate may not call this route",
            )
            .detail("The gateway reaches only the routes it forwards to.")
            .into_response();
        }
    }
    next.run(request).await
}
