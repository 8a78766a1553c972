//! Every step's first reply is lost: the command took effect in its service, but its answer
//! never reaches the orchestrator. The saga must find out what happened (its retry carries the
//! same command id, so the service answers with what it did) and end where it would have
//! ended had nothing been lost: confirmed, paid once and not refunded, stock committed once.
//!
//! The failpoints are process-wide, so this file holds one test.

use std::time::Duration;

use domain::order::{Order, OrderStatus};
use domain::payment::{Payment, PaymentStatus};
use domain::product::Product;
use testkit::stack::Stack;

/// The commands of a saga that goes well, each of whose first reply is dropped.
const STEPS: &[&str] = &[
    "ReserveStock",
    "PriceOrder",
    "AuthorisePayment",
    "CommitStock",
    "CapturePayment",
    "ConfirmOrder",
];

#[tokio::test]
async fn a_lost_reply_at_every_step_still_ends_confirmed_with_everything_done_once() {
    let points: Vec<String> = STEPS
        .iter()
        .map(|c| format!("nats.before_reply.{c}@1:hang"))
        .collect();
    service_kit::failpoint::arm(&points.join(","));
    // A far business deadline: only the truth decides, never a give-up.
    let s = Stack::start(600).await;
    s.product("LOST-1", 10).await;
    let order = s.place(&[("LOST-1", 2)], "tok_ok").await;

    let saga = testkit::eventually(Duration::from_secs(60), "the saga to end", || async {
        let saga = s.saga(order).await;
        (saga["status"] == "completed" || saga["status"] == "needs_attention").then_some(saga)
    })
    .await;
    assert_eq!(saga["outcome"], "confirmed", "{saga}");
    assert!(
        saga["compensation"].is_null(),
        "nothing compensated: {saga}"
    );

    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Confirmed);
    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert_eq!(p.status, PaymentStatus::Authorised);
    assert_eq!(p.captured.map(|m| m.amount_minor), Some(500), "captured");
    assert!(p.refunded.is_none(), "not refunded");
    let a: Product = s.inventory.aggregate("LOST-1").await;
    assert_eq!((a.on_hand, a.reserved), (8, 0), "committed once");
    // Each command took effect once, whatever the retries.
    for (pool, event_type) in [
        (&s.inventory.pool, "StockReserved"),
        (&s.inventory.pool, "ReservationCommitted"),
        (&s.orders.pool, "OrderPriced"),
        (&s.orders.pool, "OrderConfirmed"),
        (&s.payments.pool, "PaymentAuthorised"),
        (&s.payments.pool, "PaymentCaptured"),
    ] {
        let n = testkit::stack::events_of_type(pool, event_type).await;
        assert_eq!(n, 1, "{event_type} once");
    }
    s.assert_consistent().await;
}
