//! Starting while a dependency is away: a service whose Postgres or NATS cannot be reached
//! yet does not exit (a crash loop). It keeps its port, answers `/healthz` 200 (alive) and
//! `/readyz` 503 (not ready, naming what it waits for), and tries again with capped backoff
//! until the dependency answers or the shutdown signal comes. Then the real service takes
//! over the same listening socket, so its port is never closed in between.
//!
//! A dependency that answers but refuses (a wrong password, a missing database, a failed
//! migration, a TLS or permission error) is a configuration error: the service exits at once
//! with the cause, as before.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::problem::ErrorChain;

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// A socket held while the service waits, serving the starting answers on it.
struct Held {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<TcpListener>,
}

/// The held socket, for [`take`]. One service per process holds one.
static HELD: Mutex<Option<Held>> = Mutex::new(None);

/// The listening socket held for `addr`, when a start-up is holding one: the service takes it
/// over instead of binding anew.
pub async fn take(addr: SocketAddr) -> Option<TcpListener> {
    let held = {
        let mut slot = HELD.lock().expect("the held socket's lock");
        match slot.as_ref() {
            Some(h) if h.addr == addr => slot.take(),
            _ => None,
        }
    }?;
    held.stop.cancel();
    held.task.await.ok()
}

/// Which dependency `error` says is unreachable (rather than refusing), if any.
pub fn unreachable(error: &anyhow::Error) -> Option<&'static str> {
    use async_nats::ConnectErrorKind as Kind;
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return crate::db::unavailable(e).then_some("postgres");
        }
        if let Some(e) = cause.downcast_ref::<async_nats::ConnectError>() {
            let away = matches!(
                e.kind(),
                Kind::Io | Kind::TimedOut | Kind::Dns | Kind::MaxReconnects
            );
            return away.then_some("nats");
        }
        if let Some(e) = cause.downcast_ref::<async_nats::jetstream::context::CreateStreamError>() {
            use async_nats::jetstream::context::CreateStreamErrorKind as Stream;
            let away = matches!(e.kind(), Stream::TimedOut | Stream::JetStreamUnavailable);
            return away.then_some("nats");
        }
        // A JetStream request that times out or finds no responder: a cluster still electing
        // its stream and consumer leaders (a fresh `up --cluster` on a busy machine timed out
        // making the orchestrator's consumer), or a node restarting.
        if let Some(e) = cause.downcast_ref::<async_nats::jetstream::stream::ConsumerError>() {
            use async_nats::jetstream::stream::ConsumerErrorKind as Consumer;
            return matches!(e.kind(), Consumer::TimedOut).then_some("nats");
        }
        if let Some(e) = cause.downcast_ref::<async_nats::jetstream::context::ConsumerInfoError>() {
            use async_nats::jetstream::context::ConsumerInfoErrorKind as Info;
            let away = matches!(
                e.kind(),
                Info::TimedOut | Info::NoResponders | Info::Offline
            );
            return away.then_some("nats");
        }
        if let Some(e) = cause.downcast_ref::<async_nats::jetstream::context::RequestError>() {
            use async_nats::jetstream::context::RequestErrorKind as Request;
            let away = matches!(e.kind(), Request::TimedOut | Request::NoResponders);
            return away.then_some("nats");
        }
    }
    None
}

/// Builds the service with `build`, waiting out unreachable dependencies (see the module);
/// while it waits, `addr` answers as a service that is alive but not ready, over TLS when
/// `tls` is given (the probes' routes admit anyone).
pub async fn patiently<T, Fut>(
    addr: SocketAddr,
    tls: Option<&crate::tls::TlsSettings>,
    shutdown: &CancellationToken,
    mut build: impl FnMut() -> Fut,
) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let waiting_for = Arc::new(Mutex::new(""));
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1u32;
    loop {
        let error = match build().await {
            Ok(service) => {
                release().await;
                if attempt > 1 {
                    tracing::info!(attempt, "dependencies reachable: started");
                }
                return Ok(service);
            }
            Err(e) => e,
        };
        let Some(dependency) = unreachable(&error) else {
            release().await;
            return Err(error);
        };
        *waiting_for.lock().expect("the waiting lock") = dependency;
        tracing::warn!(
            dependency,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            error = %ErrorChain(error.as_ref()),
            "a dependency cannot be reached yet; waiting (alive, not ready)"
        );
        hold(addr, tls, waiting_for.clone()).await?;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {
                release().await;
                anyhow::bail!("stopped while waiting for {dependency}");
            }
        }
        delay = (delay * 2).min(MAX_DELAY);
        attempt += 1;
    }
}

/// Binds `addr` (unless a failed attempt left it held) and serves the starting answers.
async fn hold(
    addr: SocketAddr,
    tls: Option<&crate::tls::TlsSettings>,
    waiting_for: Arc<Mutex<&'static str>>,
) -> anyhow::Result<()> {
    if HELD.lock().expect("the held socket's lock").is_some() {
        return Ok(());
    }
    use anyhow::Context;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let tls = tls
        .map(crate::tls::TlsSettings::server_config)
        .transpose()?;
    let router = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "starting"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let dependency = *waiting_for.lock().expect("the waiting lock");
                async move {
                    let body = json!({"status": "starting", "checks": {dependency: "unreachable"}});
                    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
                }
            }),
        )
        .fallback(|| async {
            crate::problem::Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is starting: a dependency cannot be reached yet",
            )
            .retry_after(1)
        });
    let stop = CancellationToken::new();
    let serving = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::https::serve_on(&listener, router, tls, None, serving).await {
            tracing::warn!(error = %e, "serving the starting answers");
        }
        listener
    });
    *HELD.lock().expect("the held socket's lock") = Some(Held { addr, stop, task });
    Ok(())
}

/// Stops serving the starting answers and closes the socket, if the service did not take it.
async fn release() {
    let held = HELD.lock().expect("the held socket's lock").take();
    if let Some(held) = held {
        held.stop.cancel();
        let _ = held.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::unreachable;
    use anyhow::Context;
    use async_nats::jetstream::context::{
        ConsumerInfoError, ConsumerInfoErrorKind, RequestError, RequestErrorKind,
    };
    use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};

    fn wrapped<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
        Err::<(), _>(e)
            .context("creating the orchestrator consumer on INVENTORY")
            .unwrap_err()
    }

    #[test]
    fn a_jetstream_request_that_times_out_is_waited_out_and_a_refusal_is_not() {
        let away = [
            wrapped(ConsumerError::new(ConsumerErrorKind::TimedOut)),
            wrapped(ConsumerInfoError::new(ConsumerInfoErrorKind::TimedOut)),
            wrapped(ConsumerInfoError::new(ConsumerInfoErrorKind::NoResponders)),
            wrapped(RequestError::new(RequestErrorKind::TimedOut)),
        ];
        for error in &away {
            assert_eq!(unreachable(error), Some("nats"), "{error:#}");
        }
        let refused = [
            wrapped(ConsumerError::new(ConsumerErrorKind::InvalidName)),
            wrapped(ConsumerInfoError::new(ConsumerInfoErrorKind::InvalidName)),
            wrapped(RequestError::new(RequestErrorKind::InvalidSubject)),
        ];
        for error in &refused {
            assert_eq!(unreachable(error), None, "{error:#}");
        }
    }
}
