//! A service whose background task dies does not carry on half-alive: `/readyz` fails and
//! `run` stops the process with the task's error.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::health::Readiness;
use service_kit::service::{task, Service};
use tokio_util::sync::CancellationToken;

async fn readyz(addr: SocketAddr) -> Option<u16> {
    reqwest::get(format!("http://{addr}/readyz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn a_task_that_fails_fails_readiness_and_stops_the_service() {
    let crashed = CancellationToken::new();
    let crash = crashed.clone();
    let service = Service::bind("supervised", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .routes(axum::Router::new(), Readiness::new(), serde_json::json!({}))
        .with_task(task(move |shutdown: CancellationToken| async move {
            tokio::select! {
                _ = shutdown.cancelled() => Ok(()),
                _ = crash.cancelled() => anyhow::bail!("the worker lost its footing"),
            }
        }));
    let addr = service.local_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(shutdown.clone()));
    assert_eq!(readyz(addr).await, Some(200));

    crashed.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the service stops by itself")
        .unwrap();
    let error = format!(
        "{:#}",
        outcome.expect_err("the task's failure is the service's")
    );
    assert!(error.contains("lost its footing"), "{error}");
    assert!(shutdown.is_cancelled(), "every other task is told to stop");
    assert_eq!(readyz(addr).await, None, "the process no longer serves");
}

#[tokio::test]
async fn readiness_fails_once_a_task_has_stopped() {
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readiness = Readiness::new().tasks(stopped.clone());
    assert!(readiness.check().await.0);
    stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, report) = readiness.check().await;
    assert!(!ok);
    assert_eq!(report["tasks"], "error: a background task stopped");
}
