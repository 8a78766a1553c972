//! The query API process SIGKILLed behind the gateway: its routes turn into fast 503s once
//! the circuit opens (the breaker's state in the gateway's `/metrics`), and recover by
//! themselves when the process is back.

use std::time::{Duration, Instant};

use testkit::front::{gateway_with_metrics, Upstreams};
use testkit::oidc::Oidc;
use testkit::process::ServiceProcess;
use testkit::world::World;

fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_query-api"))
}

/// The query API's circuit in the gateway's metrics (served on its internal listener).
async fn circuit(metrics: std::net::SocketAddr) -> Option<String> {
    let scheme = if testkit::tls_as("operator").is_some() {
        "https"
    } else {
        "http"
    };
    let metrics = testkit::http()
        .get(format!("{scheme}://{metrics}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find(|l| l.starts_with("gateway_upstream_circuit") && l.contains("query-api"))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

async fn catalog(gateway: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = testkit::get(format!("{gateway}/api/products"))
        .await
        .status()
        .as_u16();
    (status, started.elapsed())
}

#[tokio::test]
async fn a_killed_upstream_is_a_fast_503_and_recovers_by_itself() {
    let world = World::read().await;
    let port = testkit::free_port();
    let env = world.env();
    let query = ServiceProcess::start(binary(), port, &env).await;
    let oidc = Oidc::start().await;
    let (url, metrics, _stop) = gateway_with_metrics(
        &oidc,
        &world.ns,
        Upstreams::all(&query.base_url),
        &[
            ("BREAKER_FAILURES", "2".into()),
            ("BREAKER_OPEN_MS", "1000".into()),
            // No catalog cache: every read reaches the query API, as a breaker test needs.
            ("CATALOG_CACHE_MS", "0".into()),
        ],
    )
    .await;
    assert_eq!(catalog(&url).await.0, 200);

    query.kill9().await;
    // Two refused connections open the circuit...
    for _ in 0..2 {
        assert_eq!(catalog(&url).await.0, 503);
    }
    assert_eq!(circuit(metrics).await.as_deref(), Some("1"), "open");
    // ...and then the gateway answers without trying.
    let (status, took) = catalog(&url).await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let response = testkit::get(format!("{url}/api/products")).await;
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:streamshop:problem:unavailable");

    // Back on the same port: a probe finds it and the circuit closes.
    let _query = ServiceProcess::start(binary(), port, &env).await;
    testkit::eventually(
        Duration::from_secs(15),
        "the catalog to answer again",
        || async { (catalog(&url).await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(circuit(metrics).await.as_deref(), Some("0"), "closed");
}
