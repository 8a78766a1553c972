//! What contains a slow or stuck dependency at a service's edge: a request that takes too
//! long is answered 503 with `Retry-After` instead of holding its caller, and a database that
//! is only busy (no free connection, a statement past its timeout) is a 503, not a 500.

use std::time::Duration;

use axum::routing::get;
use service_kit::health::Readiness;
use service_kit::problem::Problem;
use service_kit::service::Service;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_request_past_the_time_limit_is_a_503_and_others_are_unaffected() {
    let routes = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/quick", get(|| async { "ok" }));
    let service = Service::bind("limited", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .routes(routes, Readiness::new(), serde_json::json!({}))
        .time_limit(Duration::from_millis(200));
    let url = service.url();
    let shutdown = CancellationToken::new();
    tokio::spawn(service.run(shutdown.clone()));

    let started = std::time::Instant::now();
    let slow = reqwest::get(format!("{url}/slow")).await.unwrap();
    assert_eq!(slow.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(slow.headers()["retry-after"], "1");
    assert_eq!(slow.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = slow.json().await.unwrap();
    assert_eq!(body["type"], "urn:streamshop:problem:timeout");
    let quick = reqwest::get(format!("{url}/quick")).await.unwrap();
    assert_eq!(quick.text().await.unwrap(), "ok");
    shutdown.cancel();
}

#[test]
fn a_busy_pool_is_a_503_with_retry_after_and_a_real_fault_an_opaque_500() {
    let busy = Problem::internal(&sqlx::Error::PoolTimedOut);
    assert_eq!(busy.status.as_u16(), 503);
    assert_eq!(busy.retry_after_secs, Some(1));
    assert_eq!(busy.kind, "unavailable");
    let broken = Problem::internal(&sqlx::Error::RowNotFound);
    assert_eq!(broken.status.as_u16(), 500);
    assert_eq!(broken.kind, "internal");
}
