//! The orders service started while its Postgres is stopped and its NATS server is dead: it
//! does not exit. It answers `/healthz` 200 and `/readyz` 503, naming what it waits for, and
//! becomes ready, taking commands and publishing their events, once both are back. A
//! dependency that answers but refuses (a wrong password) is a configuration error: that
//! service exits at once with the cause.

use std::time::Duration;

use messaging::BoundedContext;
use serde_json::Value;
use testkit::private::{PrivateNats, PrivatePostgres};
use testkit::process::ServiceProcess;
use testkit::world::World;

async fn probe(base: &str, path: &str) -> Option<(u16, Value)> {
    let response = testkit::http()
        .get(format!("{base}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Waits until `/readyz` says it waits for `dependency`, checking it stays alive meanwhile.
async fn waiting_for(process: &mut ServiceProcess, dependency: &str) {
    let base = process.base_url.clone();
    testkit::eventually(
        Duration::from_secs(30),
        &format!("readyz to name {dependency}"),
        || async {
            let ready = probe(&base, "/readyz").await?;
            (ready.0 == 503 && ready.1["checks"][dependency] == "unreachable").then_some(())
        },
    )
    .await;
    assert_eq!(probe(&base, "/healthz").await.map(|h| h.0), Some(200));
    assert!(process.is_running(), "it waits; it does not exit");
}

#[tokio::test]
async fn a_service_started_without_postgres_and_nats_waits_and_becomes_ready() {
    let pg = PrivatePostgres::start().await;
    let mut nats = PrivateNats::start().await;
    testkit::use_infra(testkit::Infra {
        pg_admin_url: pg.admin_url(),
        nats_url: nats.url(),
        ..testkit::Infra::from_env()
    });
    let w = World::new("orders").await;
    pg.stop_immediate().await;
    nats.kill9().await;

    let mut orders = ServiceProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_orders")),
        testkit::free_port(),
        &w.env(),
        None,
    );
    waiting_for(&mut orders, "postgres").await;
    // A request meanwhile is a clear, retryable refusal.
    let early = testkit::http()
        .post(format!("{}/orders", orders.base_url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("it answers");
    assert_eq!(early.status(), 503);
    assert!(early.headers().contains_key("retry-after"));

    pg.start_again().await;
    waiting_for(&mut orders, "nats").await;
    nats.restart().await;
    orders.wait_ready(Duration::from_secs(30)).await;

    let place = serde_json::json!({
        "customer_id": uuid::Uuid::now_v7(),
        "lines": [{"sku": "START-1", "quantity": 1}],
        "payment_token": "tok_ok",
    });
    let placed = testkit::world::post(&orders.base_url, "/orders", place, None).await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let events = w.published(BoundedContext::Orders, 1).await;
    assert_eq!(events[0].name(), "OrderPlaced");

    // Postgres answers, and refuses the password: no waiting, the process exits.
    let mut env = w.env();
    for (name, value) in &mut env {
        if *name == "DATABASE_URL" || *name == "DATABASE_OWNER_URL" {
            *value = value.replacen(testkit::OWNER_ROLE.1, "wrong-password", 1);
            *value = value.replacen(testkit::APP_ROLE.1, "wrong-password", 1);
        }
    }
    let refused = ServiceProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_orders")),
        testkit::free_port(),
        &env,
        None,
    );
    let status = refused.wait_exit(Duration::from_secs(20)).await;
    assert!(
        !status.success(),
        "a refused password ends the start: {status}"
    );
}
