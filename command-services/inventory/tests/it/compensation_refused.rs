//! A compensation refused for good, on real processes: the inventory binary refuses the first
//! `ReleaseStock` it is sent (a `refuse` failpoint), so the saga of a declined order parks on
//! its release step with the reason, and only that saga. An operator finds it in the list,
//! resumes it with a reason once the cause is gone, and it completes: rejected, the unit
//! released, nothing else changed.

use domain::product::Product;
use serde_json::{json, Value};
use testkit::stack::Stack;

async fn parked(s: &Stack) -> Vec<Value> {
    testkit::get_json(&format!("{}/sagas?status=needs_attention", s.urls[3])).await["items"]
        .as_array()
        .expect("items")
        .clone()
}

#[tokio::test]
async fn a_compensation_refused_for_good_parks_exactly_that_saga_until_an_operator_retries() {
    let mut s = Stack::start(600).await;
    // The real binary in place of the in-process service, with the failpoint armed.
    s.shutdown[1].cancel();
    let inventory = s
        .inventory
        .start_process(
            std::path::Path::new(env!("CARGO_BIN_EXE_inventory")),
            &[("FAILPOINTS", "nats.refuse.ReleaseStock@1:refuse")],
        )
        .await;
    s.urls[1] = inventory.base_url.clone();
    s.product("REF-1", 10).await;

    // An order that needs no compensation goes through untouched.
    let paid = s.place(&[("REF-1", 1)], "tok_ok").await;
    assert_eq!(s.finished(paid).await["outcome"], "confirmed");
    // A declined one must release its unit; the release is refused for good.
    let declined = s.place(&[("REF-1", 2)], "tok_decline").await;
    let saga = s.finished(declined).await;
    assert_eq!(saga["status"], "needs_attention", "{saga}");
    let items = parked(&s).await;
    assert_eq!(items.len(), 1, "exactly that saga is parked: {items:?}");
    assert_eq!(items[0]["order_id"], declined.to_string());
    assert_eq!(items[0]["step"], "release:REF-1");
    let reason = items[0]["reason"].as_str().expect("a reason");
    assert!(reason.contains("compensation refused"), "{reason}");
    let product: Product = s.inventory.aggregate("REF-1").await;
    assert_eq!(
        (product.on_hand, product.reserved),
        (9, 2),
        "the unit is still held"
    );

    // The cause is gone (the failpoint refused only the first release): the operator retries.
    let retried = testkit::http()
        .post(format!("{}/sagas/{declined}/retry", s.urls[3]))
        .json(&json!({"reason": "inventory's refusal was investigated and cleared"}))
        .send()
        .await
        .expect("the orchestrator answers");
    assert_eq!(retried.status().as_u16(), 202);
    let saga = s.finished(declined).await;
    assert_eq!(
        (saga["status"].as_str(), saga["outcome"].as_str()),
        (Some("completed"), Some("rejected")),
        "{saga}"
    );
    assert!(parked(&s).await.is_empty());
    let product: Product = s.inventory.aggregate("REF-1").await;
    assert_eq!((product.on_hand, product.reserved), (9, 0));
    let paid_saga = s.saga(paid).await;
    assert_eq!(
        paid_saga["outcome"], "confirmed",
        "the other saga is untouched"
    );
    s.assert_consistent().await;
}
