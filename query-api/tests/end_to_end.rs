//! One order from HTTP to the query API through the real orders service, JetStream, the
//! projection worker and the read database.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use runtime::env::Env;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The whole stack in this process, on ephemeral ports, in private databases and namespace.
struct Stack {
    orders: String,
    query: String,
    shutdown: CancellationToken,
}

impl Stack {
    async fn start(min_version_timeout_ms: u64) -> Self {
        let orders_db = testkit::fresh_database("orders").await;
        let read_db = testkit::fresh_database("read").await;
        let ns = testkit::unique_namespace();
        let nats = testkit::infra().nats_url.clone();
        let shutdown = CancellationToken::new();
        let common = |db: &str| {
            vec![
                ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
                ("DATABASE_URL", db.to_owned()),
                ("NATS_URL", nats.clone()),
                ("NATS_NAMESPACE", ns.as_str().to_owned()),
            ]
        };

        let orders = command_kit::CommandApp::of::<orders::OrdersSpec>(
            &command_kit::settings::<orders::OrdersSpec>(&Env::from_pairs(common(&orders_db)))
                .unwrap(),
        )
        .await
        .unwrap();
        let orders_url = format!("http://{}", orders.local_addr());
        tokio::spawn(orders.run(shutdown.clone()));

        let worker = projections::App::build(
            &projections::Settings::from_env(&Env::from_pairs(common(&read_db))).unwrap(),
        )
        .await
        .unwrap();
        tokio::spawn(worker.run(shutdown.clone()));

        let mut query_env = common(&read_db);
        query_env.push((
            "READ_YOUR_WRITES_TIMEOUT_MS",
            min_version_timeout_ms.to_string(),
        ));
        let query = query_api::App::build(
            &query_api::Settings::from_env(&Env::from_pairs(query_env)).unwrap(),
        )
        .await
        .unwrap();
        let query_url = format!("http://{}", query.local_addr());
        tokio::spawn(query.run(shutdown.clone()));

        Self {
            orders: orders_url,
            query: query_url,
            shutdown,
        }
    }

    async fn place(&self) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/orders", self.orders))
            .json(&json!({
                "customer_id": uuid::Uuid::now_v7(),
                "lines": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-9", "quantity": 5}],
                "payment_token": "tok_ok"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.query)).await.unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn a_placed_order_is_readable_at_its_version() {
    let stack = Stack::start(5_000).await;
    let accepted = stack.place().await;
    let id = accepted["order_id"].as_str().unwrap();
    let r = stack
        .get(&format!("/orders/{id}?min_version={}", accepted["version"]))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["order_id"], id);
    assert_eq!(order["status"], "placed");
    assert_eq!(order["version"], 1);
    assert_eq!(order["stale"], false);
    assert_eq!(
        order["lines"],
        json!([{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-9", "quantity": 5}])
    );
    // A plain read sees the same row.
    let plain: Value = stack
        .get(&format!("/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain, order);
}

#[tokio::test]
async fn a_min_version_the_projection_does_not_reach_answers_after_a_bounded_wait() {
    let stack = Stack::start(300).await;
    let accepted = stack.place().await;
    let id = accepted["order_id"].as_str().unwrap();

    // Ahead of anything that exists: the row as it is, marked stale, after the wait.
    let started = Instant::now();
    let r = stack.get(&format!("/orders/{id}?min_version=5")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status(), StatusCode::OK);
    let order: Value = r.json().await.unwrap();
    assert_eq!(
        (order["version"].as_u64(), order["stale"].as_bool()),
        (Some(1), Some(true))
    );

    // Nothing there at all: 404 that says it may still come.
    let missing = uuid::Uuid::now_v7();
    let r = stack.get(&format!("/orders/{missing}?min_version=1")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["retry-after"], "1");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:streamshop:problem:order-not-found");
    assert_eq!(problem["stale"], true);

    let r = stack.get(&format!("/orders/{missing}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let problem: Value = r.json().await.unwrap();
    assert!(problem.get("stale").is_none());
}

#[tokio::test]
async fn bad_reads_are_problems() {
    let stack = Stack::start(300).await;
    let id = uuid::Uuid::now_v7();
    for (path, status) in [
        ("/orders/not-a-uuid".to_owned(), StatusCode::BAD_REQUEST),
        (
            format!("/orders/{id}?min_version=-1"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/orders/{id}?min_version=x"),
            StatusCode::BAD_REQUEST,
        ),
        (format!("/orders/{id}?colour=red"), StatusCode::BAD_REQUEST),
        ("/nothing-here".to_owned(), StatusCode::NOT_FOUND),
    ] {
        let r = stack.get(&path).await;
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let post = reqwest::Client::new()
        .post(format!("{}/orders/{id}", stack.query))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let ready: Value = stack.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}
