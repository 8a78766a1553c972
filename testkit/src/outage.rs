//! One outage scenario for any command service: the real binary SIGKILLed for a minute while
//! 200 orders flow, then started again, and the end checks of every outage test (each order
//! where it would have ended, none parked or given up, stock and money matching the confirmed
//! orders, `events verify` clean).

use std::path::Path;
use std::time::{Duration, Instant};

use domain::payment::Payment;
use domain::product::Product;

use crate::stack::{Options, Stack};

/// How long the service stays down.
pub const OUTAGE: Duration = Duration::from_secs(60);

/// Which service goes down: its place in the stack and its binary, with its extra settings.
#[derive(Debug, Clone, Copy)]
pub struct Victim<'a> {
    /// 1 for inventory, 2 for payments (the stack's `urls` and `shutdown` order).
    pub index: usize,
    pub binary: &'a Path,
    pub env: &'a [(&'static str, &'a str)],
}

/// The world of the stack's service at `index`.
fn world(s: &Stack, index: usize) -> &crate::world::World {
    match index {
        1 => &s.inventory,
        2 => &s.payments,
        _ => panic!("only inventory (1) and payments (2) are run as processes here"),
    }
}

/// Runs the scenario against `victim` and checks its end.
pub async fn kill_for_a_minute_under_200_orders(victim: Victim<'_>) {
    // The business deadline (15 minutes) is far away: an outage is weather. Retries back off
    // to 5 s, as in production (10 s), rather than the tests' usual 200 ms.
    let mut s = Stack::start_with(Options {
        business_deadline_secs: 900,
        orchestrator_env: vec![("SAGA_BACKOFF_MAX_MS", "5000".into())],
        ..Options::default()
    })
    .await;
    // The real binary, in place of the in-process service, so it can be SIGKILLed.
    s.shutdown[victim.index].cancel();
    let process = world(&s, victim.index)
        .start_process(victim.binary, victim.env)
        .await;
    s.urls[victim.index] = process.base_url.clone();
    s.product("OUT-1", 100).await;
    s.product("OUT-2", 100).await;

    let mut orders = Vec::new();
    let mut killed_at = None;
    let mut process = Some(process);
    for i in 0..200u32 {
        if i == 30 {
            process.take().expect("running").kill9().await;
            killed_at = Some(Instant::now());
        }
        // Every fifth is declined; the rest fit the stock exactly (80 per SKU).
        let token = if i % 5 == 4 { "tok_decline" } else { "tok_ok" };
        let sku = if i % 2 == 0 { "OUT-1" } else { "OUT-2" };
        orders.push((s.place(&[(sku, 1)], token).await, token));
    }
    let killed_at = killed_at.expect("killed");
    tokio::time::sleep(OUTAGE.saturating_sub(killed_at.elapsed())).await;
    // A minute without the service: the sagas that need it wait, none parked or rejected.
    let gave_up: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('SagaNeedsAttention', 'StepGaveUp')",
    )
    .fetch_one(&s.orchestrator)
    .await
    .expect("count the orchestrator's events");
    assert_eq!(gave_up, 0, "nothing gave up during the outage");

    let _back = world(&s, victim.index)
        .start_process(victim.binary, victim.env)
        .await;
    let mut confirmed = 0;
    for (order, token) in &orders {
        let saga = s.finished(*order).await;
        let expected = if *token == "tok_ok" {
            "confirmed"
        } else {
            "rejected"
        };
        assert_eq!(saga["status"], "completed", "{saga}");
        assert_eq!(saga["outcome"], expected, "{saga}");
        if expected == "confirmed" {
            confirmed += 1;
            let payment: Payment = s.payments.aggregate(&order.to_string()).await;
            assert_eq!(
                payment.captured.map(|m| m.amount_minor),
                Some(250),
                "{order} paid once, in full"
            );
        }
    }
    assert_eq!(confirmed, 160);
    // Each SKU sold 80 units and holds no reservation for a finished saga.
    for sku in ["OUT-1", "OUT-2"] {
        let product: Product = s.inventory.aggregate(sku).await;
        assert_eq!((product.on_hand, product.reserved), (20, 0), "{sku}");
    }
    s.assert_consistent().await;
}
