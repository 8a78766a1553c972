//! One order from HTTP to the query API through the real orders service, JetStream, the
//! projection worker and the read database.

use std::time::{Duration, Instant};

use contracts::orders::PlaceOrder;
use domain::order::OrderLine;
use domain::Sku;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::stack::Options;

/// The orders service, the projections worker and the query API in this process (beside
/// the inventory and payments services, which stay idle without an orchestrator), on
/// ephemeral ports, in private databases and namespace.
struct Stack {
    orders: String,
    query: String,
    /// Stops every service when dropped.
    _services: testkit::stack::Stack,
}

impl Stack {
    async fn start(min_version_timeout_ms: u64) -> Self {
        // No orchestrator: an order stays `placed` at version 1, so a wait for a later
        // version can only time out.
        let services = testkit::stack::Stack::start_with(Options {
            orchestrator: false,
            reads: true,
            query_env: vec![(
                "READ_YOUR_WRITES_TIMEOUT_MS",
                min_version_timeout_ms.to_string(),
            )],
            ..Options::default()
        })
        .await;
        Self {
            orders: services.urls[0].clone(),
            query: services.reads[1].clone(),
            _services: services,
        }
    }

    async fn place(&self) -> Value {
        let line = |sku: &str, quantity| OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity,
        };
        let place = PlaceOrder {
            customer_id: uuid::Uuid::now_v7(),
            lines: vec![line("SKU-1", 2), line("SKU-9", 5)],
            payment_token: "tok_ok".into(),
            email: None,
        };
        let r = testkit::world::post_command(&self.orders, &place, None).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        r.body
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        testkit::get(format!("{}{path}", self.query)).await
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
    // The row exists first (a busy machine may take longer than the 300 ms wait to
    // project it), so the read below is about a version ahead of it, not about the row.
    testkit::eventually(Duration::from_secs(30), "the order's row", || async {
        let r = stack.get(&format!("/orders/{id}")).await;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;

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
    let post = testkit::http()
        .post(format!("{}/orders/{id}", stack.query))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let ready: Value = stack.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}
