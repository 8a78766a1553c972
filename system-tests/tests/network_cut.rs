//! The network between the orchestrator and NATS cut for 30 seconds while orders flow: the
//! orchestrator loses its connection, its requests and its consumers, reconnects when the
//! network is back, and every saga ends as it would have, none parked.

use std::time::Duration;

use domain::product::Product;
use testkit::gate::Gate;
use testkit::stack::{Options, Stack};

#[tokio::test]
async fn the_orchestrator_cut_off_from_nats_for_30_s_catches_up() {
    let nats = testkit::infra().nats_url.clone();
    let gate = Gate::start(nats.trim_start_matches("nats://")).await;
    let s = Stack::start_with(Options {
        business_deadline_secs: 900,
        orchestrator_env: vec![
            ("NATS_URL", format!("nats://127.0.0.1:{}", gate.port)),
            ("SAGA_BACKOFF_MAX_MS", "2000".into()),
        ],
        ..Options::default()
    })
    .await;
    s.product("CUT-1", 100).await;

    let mut orders = Vec::new();
    for i in 0..40 {
        if i == 10 {
            gate.close();
        }
        orders.push(s.place(&[("CUT-1", 1)], "tok_ok").await);
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let parked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('SagaNeedsAttention', 'StepGaveUp')",
    )
    .fetch_one(&s.orchestrator)
    .await
    .unwrap();
    assert_eq!(parked, 0, "nothing gave up while the network was cut");
    gate.open();

    for order in &orders {
        let saga = testkit::eventually(Duration::from_secs(90), "the saga to end", || async {
            let saga = s.saga(*order).await;
            (saga["status"] == "completed" || saga["status"] == "needs_attention").then_some(saga)
        })
        .await;
        assert_eq!(saga["outcome"], "confirmed", "{saga}");
    }
    let product: Product = s.inventory.aggregate("CUT-1").await;
    assert_eq!((product.on_hand, product.reserved), (60, 0));
    s.assert_consistent().await;
}
