//! The payments service SIGKILLed for a minute while 200 orders flow (their sagas reach the
//! authorisation and wait there), then started again: none gives up or is parked, and every
//! order ends where it would have ended with payments up all along.

use std::path::Path;
use std::time::{Duration, Instant};

use domain::payment::Payment;
use domain::product::Product;
use testkit::stack::{Options, Stack};

const OUTAGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn payments_killed_for_a_minute_at_the_authorisation_while_200_orders_flow() {
    // The business deadline (15 minutes) is far away: an outage is weather. Retries back off
    // to 5 s, as in production (10 s), rather than the tests' usual 200 ms.
    let mut s = Stack::start_with(Options {
        business_deadline_secs: 900,
        orchestrator_env: vec![("SAGA_BACKOFF_MAX_MS", "5000".into())],
        ..Options::default()
    })
    .await;
    // The real binary, in place of the in-process service, so it can be SIGKILLed.
    s.shutdown[2].cancel();
    let binary = Path::new(env!("CARGO_BIN_EXE_payments"));
    let provider = [("PAYMENT_PROVIDER_TIMEOUT_MS", "300")];
    let payments = s.payments.start_process(binary, &provider).await;
    s.urls[2] = payments.base_url.clone();
    s.product("OUT-1", 100).await;
    s.product("OUT-2", 100).await;

    let mut orders = Vec::new();
    let mut killed_at = None;
    let mut payments = Some(payments);
    for i in 0..200u32 {
        if i == 30 {
            payments.take().unwrap().kill9().await;
            killed_at = Some(Instant::now());
        }
        // Every fifth is declined; the rest fit the stock exactly (80 per SKU).
        let token = if i % 5 == 4 { "tok_decline" } else { "tok_ok" };
        let sku = if i % 2 == 0 { "OUT-1" } else { "OUT-2" };
        orders.push((s.place(&[(sku, 1)], token).await, token));
    }
    let killed_at = killed_at.unwrap();
    tokio::time::sleep(OUTAGE.saturating_sub(killed_at.elapsed())).await;
    // A minute without payments: the sagas are waiting at the authorisation, not parked or
    // rejected.
    let parked_or_rejected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('SagaNeedsAttention', 'StepGaveUp')",
    )
    .fetch_one(&s.orchestrator)
    .await
    .unwrap();
    assert_eq!(parked_or_rejected, 0, "nothing gave up during the outage");

    let _back = s.payments.start_process(binary, &provider).await;
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
