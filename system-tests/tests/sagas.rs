//! End to end through the real services and JetStream: one test per saga path, each checking
//! the final state of the order, the stock and the payment, not only the saga.

use std::time::Duration;

use domain::order::{Order, OrderStatus};
use domain::payment::{Payment, PaymentStatus};
use domain::product::Product;
use serde_json::{json, Value};
use service_kit::env::Env;
use sqlx::PgPool;
use testkit::stack::{steps_failed, Stack};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_saga_confirms_an_order_it_can_fill_and_pay() {
    let s = Stack::start(30).await;
    s.product("A", 10).await;
    s.product("B", 10).await;
    let order = s.place(&[("A", 2), ("B", 1)], "tok_ok").await;
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "confirmed", "{saga}");

    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Confirmed);
    assert_eq!(o.total.unwrap().amount_minor, 750);
    let a: Product = s.inventory.aggregate("A").await;
    let b: Product = s.inventory.aggregate("B").await;
    assert_eq!((a.on_hand, a.reserved, b.on_hand, b.reserved), (8, 0, 9, 0));
    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert_eq!(p.captured.unwrap().amount_minor, 750);
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

#[tokio::test]
async fn one_line_out_of_stock_releases_the_other_two_and_rejects() {
    let s = Stack::start(30).await;
    s.product("A", 10).await;
    s.product("B", 1).await;
    s.product("C", 10).await;
    let order = s.place(&[("A", 2), ("B", 2), ("C", 3)], "tok_ok").await;
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "rejected", "{saga}");

    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Rejected);
    for (sku, stock) in [("A", 10), ("B", 1), ("C", 10)] {
        let p: Product = s.inventory.aggregate(sku).await;
        assert_eq!((p.on_hand, p.reserved), (stock, 0), "{sku} released");
    }
    let rejected: Vec<(Value,)> =
        sqlx::query_as("SELECT payload::jsonb FROM events WHERE event_type = 'OrderRejected'")
            .fetch_all(&s.orders.pool)
            .await
            .unwrap();
    assert_eq!(rejected[0].0["OrderRejected"]["reason"], "out_of_stock");
    assert_eq!(rejected[0].0["OrderRejected"]["skus"], json!(["B"]));
    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert_eq!(p.status, PaymentStatus::New, "no payment was attempted");
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

#[tokio::test]
async fn a_declined_payment_releases_the_stock_and_rejects() {
    let s = Stack::start(30).await;
    s.product("A", 5).await;
    let order = s.place(&[("A", 5)], "tok_decline").await;
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "rejected", "{saga}");
    assert_eq!(saga["compensation"]["rejected"], "payment_declined");

    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Rejected);
    let a: Product = s.inventory.aggregate("A").await;
    assert_eq!((a.on_hand, a.reserved), (5, 0));
    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert_eq!(p.status, PaymentStatus::Declined);
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

#[tokio::test]
async fn a_flaky_provider_ends_confirmed_after_retries() {
    let s = Stack::start(30).await;
    s.product("A", 5).await;
    let order = s.place(&[("A", 1)], "tok_flaky").await;
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "confirmed", "{saga}");
    assert_eq!(
        steps_failed(&saga, "authorise"),
        2,
        "two failed attempts were retried"
    );

    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert_eq!(p.captured.unwrap().amount_minor, 250);
    let a: Product = s.inventory.aggregate("A").await;
    assert_eq!((a.on_hand, a.reserved), (4, 0));
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

#[tokio::test]
async fn a_provider_that_never_answers_ends_rejected_with_the_payment_voided() {
    let s = Stack::start(3).await;
    s.product("A", 5).await;
    let order = s.place(&[("A", 2)], "tok_timeout").await;
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "rejected", "{saga}");
    assert_eq!(saga["compensation"]["rejected"], "timeout");
    assert!(
        steps_failed(&saga, "authorise") >= 2,
        "retried until the business deadline: {saga}"
    );
    assert!(
        saga["steps"]["void"]["result"].is_object(),
        "the maybe-authorised payment was voided: {saga}"
    );

    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Rejected);
    let a: Product = s.inventory.aggregate("A").await;
    assert_eq!((a.on_hand, a.reserved), (5, 0));
    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert!(p.captured.is_none() && p.status != PaymentStatus::Authorised);
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

#[tokio::test]
async fn a_customer_cancel_mid_saga_compensates_and_ends_cancelled() {
    let (s, order) = Stack::cancelled_mid_saga("A", 5, 3).await;

    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "cancelled", "{saga}");
    let o: Order = s.orders.aggregate(&order.to_string()).await;
    assert_eq!(o.status, OrderStatus::Cancelled);
    let a: Product = s.inventory.aggregate("A").await;
    assert_eq!(
        (a.on_hand, a.reserved),
        (5, 0),
        "the reservation was released"
    );
    let p: Payment = s.payments.aggregate(&order.to_string()).await;
    assert!(p.captured.is_none());
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

#[tokio::test]
async fn five_hundred_orders_through_two_replicas_all_end_and_balance() {
    let (mut s, mut env) = Stack::services(6).await;
    // Deadlines for a loaded machine: this test is about outcomes, not timeouts.
    for (key, value) in env.iter_mut() {
        match *key {
            "SAGA_STEP_DEADLINE_MS" => *value = "10000".into(),
            "SAGA_RECOVERY_INTERVAL_MS" => *value = "5000".into(),
            _ => {}
        }
    }
    // Two orchestrator replicas on one database.
    for _ in 0..2 {
        let settings = orchestrator::Settings::from_env(&Env::from_pairs(env.clone())).unwrap();
        let app = orchestrator::App::build(&settings).await.unwrap();
        s.urls[3] = app.url();
        let stop = CancellationToken::new();
        tokio::spawn(app.run(stop.clone()));
        s.shutdown.push(stop);
    }
    let received = [("S1", 120u64), ("S2", 90), ("S3", 60)];
    for (sku, stock) in received {
        s.product(sku, stock as u32).await;
    }
    let tokens = [
        "tok_ok",
        "tok_ok",
        "tok_ok",
        "tok_ok",
        "tok_decline",
        "tok_flaky",
        "tok_timeout",
    ];
    let s = std::sync::Arc::new(s);
    let mut placed = Vec::new();
    for chunk in (0..500).collect::<Vec<usize>>().chunks(25) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let lines: Vec<(&str, u32)> = match i % 4 {
                        0 => vec![("S1", 1)],
                        1 => vec![("S1", 1), ("S2", 2)],
                        2 => vec![("S2", 1), ("S3", 1)],
                        _ => vec![("S1", 2), ("S2", 1), ("S3", 1)],
                    };
                    s.place(&lines, tokens[i % tokens.len()]).await
                })
            })
            .collect();
        for b in batch {
            placed.push(b.await.unwrap());
        }
    }
    assert_eq!(placed.len(), 500);

    let sagas = &s.orchestrator;
    testkit::eventually(Duration::from_secs(240), "every saga to end", || async {
        let ended = scalar(sagas, "SELECT count(*) FROM events WHERE event_type IN ('SagaCompleted', 'SagaNeedsAttention')").await;
        (ended >= 500).then_some(())
    })
    .await;
    assert_eq!(
        scalar(
            sagas,
            "SELECT count(*) FROM events WHERE event_type = 'SagaStarted'"
        )
        .await,
        500
    );
    assert_eq!(
        scalar(
            sagas,
            "SELECT count(*) FROM events WHERE event_type = 'SagaNeedsAttention'"
        )
        .await,
        0,
        "no saga parked"
    );
    assert_eq!(
        scalar(
            sagas,
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE event_type = 'SagaCompleted'"
        )
        .await,
        500,
        "every saga ended exactly once"
    );

    // Stock: what is available, reserved and committed adds up to what was received, nothing
    // stays reserved, and what left equals what confirmed orders bought.
    for (sku, stock) in received {
        let p: Product = s.inventory.aggregate(sku).await;
        let committed = scalar(
            &s.inventory.pool,
            &format!("SELECT sum((payload::jsonb->'ReservationCommitted'->>'quantity')::bigint)::bigint FROM events WHERE aggregate_id = '{sku}' AND event_type = 'ReservationCommitted'"),
        )
        .await as u64;
        assert_eq!(
            p.available() + p.reserved + committed,
            stock,
            "{sku} balances"
        );
        assert_eq!(p.reserved, 0, "{sku}: no reservation left behind");
        let bought = scalar(
            &s.orders.pool,
            &format!(
                "SELECT sum((line->>'quantity')::bigint)::bigint FROM events e, \
                   json_array_elements(e.payload->'OrderPlaced'->'lines') line \
                 WHERE e.event_type = 'OrderPlaced' AND line->>'sku' = '{sku}' \
                   AND e.aggregate_id IN (SELECT aggregate_id FROM events WHERE event_type = 'OrderConfirmed')"
            ),
        )
        .await as u64;
        assert_eq!(
            committed, bought,
            "{sku}: stock left only for confirmed orders"
        );
    }

    // Money: what was captured (less refunds) equals the confirmed orders' totals.
    let confirmed_total = scalar(
        &s.orders.pool,
        "SELECT sum((payload::jsonb->'OrderConfirmed'->'total'->>'amount_minor')::bigint)::bigint FROM events WHERE event_type = 'OrderConfirmed'",
    )
    .await;
    let captured = scalar(
        &s.payments.pool,
        "SELECT sum((payload::jsonb->'PaymentCaptured'->'amount'->>'amount_minor')::bigint)::bigint FROM events WHERE event_type = 'PaymentCaptured'",
    )
    .await;
    let refunded = scalar(
        &s.payments.pool,
        "SELECT sum((payload::jsonb->'PaymentRefunded'->'amount'->>'amount_minor')::bigint)::bigint FROM events WHERE event_type = 'PaymentRefunded'",
    )
    .await;
    assert!(confirmed_total > 0, "some orders were confirmed");
    assert_eq!(captured - refunded, confirmed_total);
    let confirmed = scalar(
        &s.orders.pool,
        "SELECT count(*) FROM events WHERE event_type = 'OrderConfirmed'",
    )
    .await;
    let rejected = scalar(
        &s.orders.pool,
        "SELECT count(*) FROM events WHERE event_type = 'OrderRejected'",
    )
    .await;
    assert_eq!(
        confirmed + rejected,
        500,
        "every order ended confirmed or rejected"
    );
    println!("500 orders: {confirmed} confirmed, {rejected} rejected");
    s.assert_consistent().await;
}

#[tokio::test]
async fn the_query_api_shows_an_order_with_its_payment_saga_stock_and_sales() {
    let s = Stack::start(30).await;
    let read_db = testkit::fresh_read_db("read").await.owner;
    let mut env = s.orders.env();
    env.retain(|(k, _)| !k.starts_with("DATABASE_"));
    env.push(("DATABASE_URL", read_db));
    let worker = projections::App::build(
        &projections::Settings::from_env(&Env::from_pairs(env.clone())).unwrap(),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));
    let query =
        query_api::App::build(&query_api::Settings::from_env(&Env::from_pairs(env)).unwrap())
            .await
            .unwrap();
    let q = query.url();
    tokio::spawn(query.run(stop.clone()));

    s.product("R1", 10).await;
    let order = s.place(&[("R1", 4)], "tok_ok").await;
    assert_eq!(s.finished(order).await["outcome"], "confirmed");
    let get = |path: String| {
        let url = format!("{q}{path}");
        async move { testkit::get_json(&url).await }
    };
    // The order's last event is its 3rd (placed, priced, confirmed): wait for it.
    let details = get(format!("/orders/{order}?min_version=3")).await;
    assert_eq!(
        (details["status"].as_str(), details["stale"].as_bool()),
        (Some("confirmed"), Some(false)),
        "{details}"
    );
    assert_eq!(details["total"]["amount_minor"], 1000);
    assert_eq!(details["lines"][0]["unit_price"]["amount_minor"], 250);
    let details = testkit::eventually(
        Duration::from_secs(10),
        "payment and saga in the read model",
        || async move {
            let d = get(format!("/orders/{order}")).await;
            (d["payment"]["status"] == "captured" && d["saga"]["outcome"] == "confirmed")
                .then_some(d)
        },
    )
    .await;
    let kinds: Vec<&str> = details["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"SagaStarted"));
    assert_eq!(kinds.last(), Some(&"SagaCompleted"));

    let product = get("/products/R1?min_version=4".into()).await;
    assert_eq!(
        (
            product["on_hand"].as_i64(),
            product["reserved"].as_i64(),
            product["available"].as_i64()
        ),
        (Some(6), Some(0), Some(6)),
        "{product}"
    );
    let payment = get(format!("/payments/{order}")).await;
    assert_eq!(
        (payment["captured"].as_i64(), payment["authorised"].as_i64()),
        (Some(1000), Some(1000))
    );
    let analytics = get("/analytics/sales".into()).await;
    assert_eq!(analytics["sales"][0]["units"], 4, "{analytics}");
    assert_eq!(analytics["sales"][0]["revenue_minor"], 1000);
    assert_eq!(analytics["outcomes"][0]["outcome"], "confirmed");
    let customer = details["customer_id"].as_str().unwrap().to_owned();
    let mine = get(format!("/customers/{customer}/orders")).await;
    assert_eq!(mine["items"][0]["order_id"], order.to_string());
    let lags = testkit::eventually(
        Duration::from_secs(10),
        "every projection caught up",
        || async move {
            let lags = get("/projections".into()).await;
            let all = lags.as_array()?;
            (all.len() == 4 && all.iter().all(|p| p["lag"] == 0)).then_some(lags)
        },
    )
    .await;
    assert!(
        lags.as_array()
            .unwrap()
            .iter()
            .all(|p| p["dead_letters"] == 0),
        "{lags}"
    );
    stop.cancel();
    // The streams, the event stores and the aggregates' folds agree (`events verify`).
    s.assert_consistent().await;
}

/// One customer's 40 orders whose payments never answer (the test provider's `tok_timeout`):
/// their failed attempts are that customer's, not the payments context's, so another
/// customer's order goes through at its first attempt while they still fail.
#[tokio::test]
async fn one_customer_s_silent_payments_do_not_hold_up_another_customer_s_order() {
    let s = Stack::start(60).await;
    s.product("A", 1000).await;
    let hog = uuid::Uuid::now_v7();
    let mut held = Vec::new();
    for _ in 0..40 {
        let r = s.post_order(hog, &[("A", 1)], "tok_timeout").await;
        match r.status {
            202 => held.push(uuid::Uuid::parse_str(r.body["order_id"].as_str().unwrap()).unwrap()),
            // Past the customer's fair share of open orders.
            429 => {}
            other => panic!("{other}: {:?}", r.body),
        }
    }
    assert!(!held.is_empty());
    // Well past the failures in a row that open a context's circuit (5).
    testkit::eventually(
        Duration::from_secs(60),
        "the silent payments to fail ten times",
        || async {
            let mut failed = 0;
            for order in &held {
                failed += steps_failed(&s.saga(*order).await, "authorise");
            }
            (failed >= 10).then_some(())
        },
    )
    .await;
    let order = s.place(&[("A", 1)], "tok_ok").await;
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "confirmed", "{saga}");
    assert_eq!(
        steps_failed(&saga, "authorise"),
        0,
        "authorised at the first attempt, no circuit opened by another's failures: {saga}"
    );
    let still_failing = s.saga(held[0]).await;
    assert_ne!(
        still_failing["status"], "completed",
        "the silent ones are still being retried: {still_failing}"
    );
}
