//! The compensations' first replies are lost: each takes effect, but its answer never reaches
//! the orchestrator. First a declined order's releases and rejection; then an order whose
//! capture is refused (a `refuse` failpoint) after its stock was committed, so the stock is
//! restocked, the authorisation voided and the order rejected. The saga learns what was done
//! (from the services' events, or by retrying with the same command ids) and ends where it
//! would have ended: rejected, each compensation done once, nothing parked.
//!
//! The failpoints are process-wide, so this file holds one test.

use std::time::Duration;

use domain::order::{Order, OrderStatus};
use domain::payment::{Payment, PaymentStatus};
use domain::product::Product;
use testkit::stack::Stack;

#[tokio::test]
async fn lost_replies_of_compensations_still_end_rejected_with_everything_undone_once() {
    // Each failpoint leaves a marker file when it swallows a reply.
    let markers = std::env::temp_dir().join(format!("lost-compensations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&markers).unwrap();
    service_kit::failpoint::arm_with_markers(
        "nats.before_reply.ReleaseStock@1:hang,nats.before_reply.RejectOrder@1:hang,\
         nats.refuse.CapturePayment@1:refuse,nats.before_reply.RestockProduct@1:hang,\
         nats.before_reply.VoidPayment@1:hang,nats.before_reply.RejectOrder@2:hang",
        Some(markers.clone()),
    );
    let s = Stack::start(600).await;
    s.product("LOSTC-1", 10).await;
    s.product("LOSTC-2", 10).await;
    let order = s
        .place(&[("LOSTC-1", 2), ("LOSTC-2", 1)], "tok_decline")
        .await;

    let saga = testkit::eventually(Duration::from_secs(60), "the saga to end", || async {
        let saga = s.saga(order).await;
        (saga["status"] == "completed" || saga["status"] == "needs_attention").then_some(saga)
    })
    .await;
    assert_eq!(
        (saga["status"].as_str(), saga["outcome"].as_str()),
        (Some("completed"), Some("rejected")),
        "{saga}"
    );
    // The lost replies were waited out and retried, not taken for refusals.
    for step in ["release:LOSTC-1", "release:LOSTC-2", "reject"] {
        assert!(
            saga["steps"][step]["attempts"].as_u64() >= Some(1),
            "{step}: {saga}"
        );
    }
    // The replies were lost: the saga learned the truth from the services' events (or from a
    // retry with the same command id, answered with what was done).
    testkit::stack::assert_replies_swallowed(&markers, &["ReleaseStock", "RejectOrder"]);
    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Rejected);
    for sku in ["LOSTC-1", "LOSTC-2"] {
        let p: Product = s.inventory.aggregate(sku).await;
        assert_eq!((p.on_hand, p.reserved), (10, 0), "{sku} released");
    }
    for (pool, event_type, n) in [
        (&s.inventory.pool, "ReservationReleased", 2),
        (&s.orders.pool, "OrderRejected", 1),
    ] {
        let count = testkit::stack::events_of_type(pool, event_type).await;
        assert_eq!(count, n, "{event_type} once per aggregate");
    }
    s.assert_consistent().await;

    // The capture is refused after the stock was committed: restock, void, reject.
    s.product("LOSTC-3", 10).await;
    let order = s.place(&[("LOSTC-3", 1)], "tok_ok").await;
    let saga = s.finished(order).await;
    assert_eq!(
        (saga["status"].as_str(), saga["outcome"].as_str()),
        (Some("completed"), Some("rejected")),
        "{saga}"
    );
    for step in ["restock:LOSTC-3", "void", "reject"] {
        assert_eq!(
            saga["steps"][step]["result"]["result"], "done",
            "{step}: {saga}"
        );
    }
    testkit::stack::assert_replies_swallowed(&markers, &["RestockProduct", "VoidPayment"]);
    let _ = std::fs::remove_dir_all(&markers);
    let p: Product = s.inventory.aggregate("LOSTC-3").await;
    assert_eq!((p.on_hand, p.reserved), (10, 0), "restocked once");
    let payment: Payment = s.payments.aggregate(&order.to_string()).await;
    assert_eq!(payment.status, PaymentStatus::Voided);
    assert!(payment.captured.is_none());
    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Rejected);
    for (pool, event_type) in [
        (&s.inventory.pool, "ProductRestocked"),
        (&s.payments.pool, "PaymentVoided"),
    ] {
        let count = testkit::stack::events_of_type(pool, event_type).await;
        assert_eq!(count, 1, "{event_type} once");
    }
    s.assert_consistent().await;
}
