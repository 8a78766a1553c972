//! The projection worker against real JetStream and Postgres: batches, redeliveries, gaps,
//! poison messages, and a worker process killed mid-batch.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use domain::order::{OrderLine, OrderPlaced};
use domain::Sku;
use messaging::envelope::StoredEvent;
use messaging::{BoundedContext, Envelope};
use projections::orders_view::OrdersView;
use projections::worker::{BatchOutcome, Worker};
use testkit::world::World;
use uuid::Uuid;

/// A fresh read database and a namespace with an `ORDERS` stream.
async fn world() -> World {
    let w = World::read().await;
    crate::stream(&w, BoundedContext::Orders).await;
    w
}

/// The orders projection's worker on `w`.
async fn worker(w: &World) -> Worker<OrdersView> {
    crate::worker_on(w, OrdersView, true).await
}

fn envelope(
    order_id: Uuid,
    sequence: u64,
    event_type: &str,
    payload: serde_json::Value,
) -> Envelope {
    versioned(order_id, sequence, event_type, "1", payload)
}

fn versioned(
    order_id: Uuid,
    sequence: u64,
    event_type: &str,
    version: &str,
    payload: serde_json::Value,
) -> Envelope {
    Envelope::from_stored(&StoredEvent {
        context: BoundedContext::Orders,
        aggregate_type: "Order".into(),
        aggregate_id: order_id.to_string(),
        sequence,
        event_type: event_type.into(),
        event_version: version.into(),
        payload,
        correlation_id: Some(order_id.to_string()),
        causation_id: None,
        recorded_at: Utc::now(),
    })
}

fn placed(order_id: Uuid, customer_id: Uuid) -> Envelope {
    let event = OrderPlaced {
        order_id,
        customer_id,
        lines: vec![OrderLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 3,
        }],
        payment_token: Some("tok_ok".into()),
        email: None,
        placed_at: Utc::now(),
    };
    versioned(
        order_id,
        1,
        "OrderPlaced",
        "2",
        serde_json::to_value(event).unwrap(),
    )
}

/// Steps until a fetch comes back empty and the projection has caught up; sums the outcomes.
async fn drain(worker: &Worker<OrdersView>) -> BatchOutcome {
    let mut total = BatchOutcome::default();
    for _ in 0..200 {
        let o = worker.process_batch().await.unwrap();
        total.fetched += o.fetched;
        total.applied += o.applied;
        total.duplicates += o.duplicates;
        total.deferred += o.deferred;
        total.dead_lettered += o.dead_lettered;
        if o.fetched == 0 && worker.lag().await.unwrap() == 0 {
            return total;
        }
    }
    panic!("projection did not catch up: {total:?}");
}

#[tokio::test]
async fn events_apply_once_and_redeliveries_change_nothing() {
    let w = world().await;
    let customers: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let events: Vec<Envelope> = (0..10)
        .map(|i| placed(Uuid::now_v7(), customers[i % 3]))
        .collect();
    for e in &events {
        w.publish(e).await;
    }
    let worker = worker(&w).await;
    let first = drain(&worker).await;
    assert_eq!((first.applied, first.duplicates), (10, 0));
    assert_eq!(w.count("SELECT count(*) FROM orders_view").await, 10);
    assert_eq!(
        w.count("SELECT sum(orders)::bigint FROM customer_order_counts")
            .await,
        10
    );
    assert_eq!(
        w.count("SELECT stream_sequence FROM projection_checkpoints")
            .await,
        10
    );

    // The same events again, as a re-publish after the duplicate window would bring them.
    for e in &events {
        w.publish(e).await;
    }
    let second = drain(&worker).await;
    assert_eq!((second.applied, second.duplicates), (0, 10));
    assert_eq!(
        w.count("SELECT sum(orders)::bigint FROM customer_order_counts")
            .await,
        10,
        "no effect applied twice"
    );
    assert_eq!(worker.lag().await.unwrap(), 0);
}

#[tokio::test]
async fn an_event_that_overtakes_its_predecessor_waits_for_it() {
    let w = world().await;
    let order = Uuid::now_v7();
    // Sequence 2 (of a type this projection does not know) arrives first.
    w.publish(&envelope(
        order,
        2,
        "OrderShipped",
        serde_json::json!({"OrderShipped": {}}),
    ))
    .await;
    let worker = worker(&w).await;
    let first = worker.process_batch().await.unwrap();
    assert_eq!((first.fetched, first.deferred), (1, 1));
    assert_eq!(w.count("SELECT count(*) FROM dead_letters").await, 0);

    w.publish(&placed(order, Uuid::now_v7())).await;
    let rest = drain(&worker).await;
    assert_eq!(rest.applied, 1, "{rest:?}");
    assert_eq!(
        rest.dead_lettered, 1,
        "the unknown type, in its turn: {rest:?}"
    );
    let reason: String = sqlx::query_scalar("SELECT reason FROM dead_letters")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert!(
        reason.contains("unknown event type OrderShipped"),
        "{reason}"
    );
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_lag_returns_to_zero() {
    let w = world().await;
    let worker = worker(&w).await;
    w.publish_raw(
        BoundedContext::Orders,
        "junk",
        "OrderPlaced",
        b"{not json".to_vec(),
    )
    .await;
    let order = Uuid::now_v7();
    w.publish(&envelope(
        order,
        1,
        "OrderPlaced",
        serde_json::json!({"OrderPlaced": {"order_id": 5}}),
    ))
    .await;
    w.publish(&placed(Uuid::now_v7(), Uuid::now_v7())).await;

    let outcome = drain(&worker).await;
    assert_eq!(
        (outcome.applied, outcome.dead_lettered),
        (1, 2),
        "{outcome:?}"
    );
    assert_eq!(w.count("SELECT count(*) FROM dead_letters").await, 2);
    assert_eq!(w.count("SELECT count(*) FROM orders_view").await, 1);
    assert_eq!(worker.lag().await.unwrap(), 0);
    // Terminated, not left for redelivery.
    assert_eq!(worker.process_batch().await.unwrap().fetched, 0);
}

#[tokio::test]
async fn a_worker_killed_mid_batch_applies_every_event_exactly_once() {
    let w = world().await;
    let customers: Vec<Uuid> = (0..37).map(|_| Uuid::now_v7()).collect();
    // Small batches of many events: the worker is still busy when each kill lands.
    let total = 12_000;
    let mut expected: HashMap<Uuid, i64> = HashMap::new();
    let mut acks = Vec::with_capacity(total);
    for i in 0..total {
        let customer = customers[i % customers.len()];
        *expected.entry(customer).or_default() += 1;
        let e = placed(Uuid::now_v7(), customer);
        let subject =
            w.ns.event_subject(BoundedContext::Orders, &e.subject, "OrderPlaced");
        acks.push(w.js.publish(subject, e.to_vec().into()).await.unwrap());
        // async-nats holds a permit per unawaited ack (5,000 by default): settle them often.
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }

    let env = vec![
        ("DATABASE_URL", w.db_url.clone()),
        ("NATS_URL", testkit::infra().nats_url.clone()),
        ("NATS_CREDENTIALS_DIR", testkit::nats_credentials_dir()),
        testkit::tls_env(),
        ("NATS_NAMESPACE", w.ns.as_str().to_owned()),
        ("PROJECTION_BATCH_SIZE", "10".to_owned()),
        ("PROJECTION_ACK_WAIT_MS", "2000".to_owned()),
    ];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_projections"));
    let checkpoint = "SELECT coalesce(max(stream_sequence), 0) FROM projection_checkpoints";
    // Kill it three times while it is busy, each time once it has made progress.
    let mut last = 0;
    for _ in 0..3 {
        let process =
            testkit::process::ServiceProcess::start(binary, testkit::free_port(), &env).await;
        last = testkit::eventually(Duration::from_secs(60), "progress", || async {
            let now = w.count(checkpoint).await;
            (now > last).then_some(now)
        })
        .await;
        process.kill9().await;
    }
    assert!(
        last < total as i64,
        "killed before the end ({last} of {total})"
    );

    let _survivor =
        testkit::process::ServiceProcess::start(binary, testkit::free_port(), &env).await;
    testkit::eventually(Duration::from_secs(120), "all events applied", || async {
        (w.count(checkpoint).await == total as i64).then_some(())
    })
    .await;
    assert_eq!(
        w.count("SELECT count(*) FROM orders_view").await,
        total as i64
    );
    let counts: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT customer_id, orders FROM customer_order_counts")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    assert_eq!(counts.len(), customers.len());
    for (customer, orders) in counts {
        assert_eq!(
            orders, expected[&customer],
            "customer {customer} counted exactly once per order"
        );
    }
    assert_eq!(
        w.count("SELECT count(*) FROM projection_positions WHERE sequence <> 1")
            .await,
        0
    );
}

/// The worker's durable consumer as the server holds it.
async fn durable(w: &World) -> Option<async_nats::jetstream::consumer::Info> {
    let stream =
        w.js.get_stream(w.ns.stream(BoundedContext::Orders))
            .await
            .ok()?;
    stream.consumer_info(read_contract::ORDERS_VIEW).await.ok()
}

/// Steps until `check` holds (the worker notices what happened to its consumer when a fetch
/// fails or it is idle).
async fn step_until(worker: &Worker<OrdersView>, what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        let _ = worker.process_batch().await;
        if check() {
            return;
        }
    }
    panic!("the worker never got to: {what}");
}

#[tokio::test]
async fn a_consumer_deleted_changed_or_on_a_stream_made_again_is_restored() {
    use std::sync::atomic::Ordering;
    let w = world().await;
    let worker = worker(&w).await;
    let intact = worker.consumer_intact();
    for _ in 0..3 {
        w.publish(&placed(Uuid::now_v7(), Uuid::now_v7())).await;
    }
    assert_eq!(drain(&worker).await.applied, 3);

    // Deleted behind the worker's back: noticed, unready, made again after the checkpoint.
    let stream =
        w.js.get_stream(w.ns.stream(BoundedContext::Orders))
            .await
            .unwrap();
    stream
        .delete_consumer(read_contract::ORDERS_VIEW)
        .await
        .unwrap();
    step_until(&worker, "notice the deleted consumer", || {
        !intact.load(Ordering::SeqCst)
    })
    .await;
    w.publish(&placed(Uuid::now_v7(), Uuid::now_v7())).await;
    let after_delete = drain(&worker).await;
    assert!(intact.load(Ordering::SeqCst), "restored");
    assert_eq!(
        (after_delete.applied, after_delete.duplicates),
        (1, 0),
        "{after_delete:?}"
    );
    let info = durable(&w).await.expect("made again");
    assert_eq!(
        info.config.filter_subject,
        w.ns.events_filter(BoundedContext::Orders)
    );

    // Re-filtered to see nothing (what a reader with the old permissions could do).
    let mut changed = info.config.clone();
    changed.filter_subject = format!(
        "{}.nothing",
        w.ns.events_filter(BoundedContext::Orders)
            .trim_end_matches(".>")
    );
    stream.update_consumer(changed).await.unwrap();
    step_until(&worker, "notice the changed filter", || {
        !intact.load(Ordering::SeqCst)
    })
    .await;
    w.publish(&placed(Uuid::now_v7(), Uuid::now_v7())).await;
    assert_eq!(drain(&worker).await.applied, 1);
    assert_eq!(
        durable(&w).await.unwrap().config.filter_subject,
        w.ns.events_filter(BoundedContext::Orders),
        "the declared filter is back"
    );

    // The stream deleted and made again: its sequences start over, so the checkpoint (5) of
    // the old one is reset and the new stream is read from its first event.
    w.js.delete_stream(w.ns.stream(BoundedContext::Orders))
        .await
        .unwrap();
    crate::stream(&w, BoundedContext::Orders).await;
    let newcomer = Uuid::now_v7();
    w.publish(&placed(newcomer, Uuid::now_v7())).await;
    step_until(&worker, "apply the new stream's first event", || true).await;
    drain(&worker).await;
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM orders_view WHERE order_id = '{newcomer}'"
        ))
        .await,
        1,
        "the remade stream's first event is applied, not skipped behind the old checkpoint"
    );
    assert_eq!(w.count("SELECT count(*) FROM orders_view").await, 6);
    assert!(intact.load(Ordering::SeqCst));
    assert_eq!(worker.lag().await.unwrap(), 0);
}
