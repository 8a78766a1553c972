//! The real orchestrator binary, SIGKILLed at every step boundary of a running saga and
//! restarted: each saga still completes exactly once.

use std::time::Duration;

use domain::payment::Payment;
use domain::product::Product;
use sqlx::PgPool;
use testkit::stack::Stack;
use uuid::Uuid;

/// How many times an event type was stored in a world's database for one aggregate.
async fn stored(pool: &PgPool, event_type: &str, correlation: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = $1 AND metadata->>'correlation_id' = $2",
    )
    .bind(event_type)
    .bind(correlation.to_string())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_saga_killed_at_every_step_boundary_completes_exactly_once() {
    // A business deadline far past the time a kill and a restart take on a busy machine:
    // the test is about completing exactly once, not about timeouts.
    let (mut s, env) = Stack::services(60).await;
    s.product("K1", 1000).await;
    s.product("K2", 1000).await;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_orchestrator"));
    let markers = std::env::temp_dir().join(format!("streamshop-markers-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&markers).unwrap();
    let mut confirmed = 0u64;
    // A two-line order has 8 steps: reserve x2, price, authorise, commit x2, capture, confirm.
    for boundary in ["saga.after_attempt", "saga.after_result"] {
        for n in 1..=8 {
            let order = s.place(&[("K1", 2), ("K2", 1)], "tok_ok").await;
            let mut with_failpoint = env.clone();
            with_failpoint.push(("FAILPOINTS", format!("{boundary}@{n}:hang")));
            with_failpoint.push(("FAILPOINT_MARKER_DIR", markers.display().to_string()));
            let port = testkit::free_port();
            let doomed =
                testkit::process::ServiceProcess::start(binary, port, &with_failpoint).await;
            let marker = markers.join(boundary);
            testkit::eventually(Duration::from_secs(30), "the failpoint", || async {
                marker.exists().then_some(())
            })
            .await;
            doomed.kill9().await;
            std::fs::remove_file(&marker).unwrap();

            let survivor = testkit::process::ServiceProcess::start(binary, port, &env).await;
            s.urls[3] = survivor.base_url.clone();
            let saga = s.finished(order).await;
            assert_eq!(
                saga["outcome"], "confirmed",
                "killed at {boundary}@{n}: {saga}"
            );
            assert!(survivor.terminate().await);
            confirmed += 1;

            // Exactly as without the kill: one reservation per line, one capture.
            for (event, pool, expected) in [
                ("StockReserved", &s.inventory.pool, 2),
                ("ReservationCommitted", &s.inventory.pool, 2),
                ("PaymentAuthorised", &s.payments.pool, 1),
                ("PaymentCaptured", &s.payments.pool, 1),
                ("OrderConfirmed", &s.orders.pool, 1),
            ] {
                assert_eq!(
                    stored(pool, event, order).await,
                    expected,
                    "{event} after a kill at {boundary}@{n}"
                );
            }
            let p: Payment = s.payments.aggregate(&order.to_string()).await;
            assert_eq!(p.captured.unwrap().amount_minor, 750);
        }
    }
    let k1: Product = s.inventory.aggregate("K1").await;
    let k2: Product = s.inventory.aggregate("K2").await;
    assert_eq!((k1.on_hand, k1.reserved), (1000 - 2 * confirmed, 0));
    assert_eq!((k2.on_hand, k2.reserved), (1000 - confirmed, 0));
    let _ = std::fs::remove_dir_all(&markers);
    let _ = &s.orchestrator;
}
