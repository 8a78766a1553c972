//! Two projection workers side by side build exactly what one builds, from 20,000 events that
//! went through the real orders service.

use std::sync::Arc;
use std::time::Duration;

use contracts::orders::{CancelOrder, PlaceOrder};
use serde_json::Value;
use service_kit::env::Env;
use sqlx::PgPool;
use testkit::fixtures::line;
use testkit::world::{post_command, OrderAccepted, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Every read model's rows, in key order, as JSON.
async fn snapshot(pool: &PgPool) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for (table, key) in [
        ("orders_view", "order_id"),
        ("customer_order_counts", "customer_id"),
        ("sales_daily", "day, sku, currency"),
        ("order_outcomes_daily", "day, outcome"),
        (
            "projection_positions",
            "projection, aggregate_type, aggregate_id",
        ),
    ] {
        let rows: Vec<(Value,)> =
            sqlx::query_as(&format!("SELECT to_jsonb(t) FROM {table} t ORDER BY {key}"))
                .fetch_all(pool)
                .await
                .unwrap();
        out.push((table.to_owned(), rows.into_iter().map(|(v,)| v).collect()));
    }
    out
}

async fn checkpoint(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(stream_sequence), 0) FROM projection_checkpoints WHERE projection = 'orders_view'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// An order of `quantity` of `sku` for `customer`.
fn order(customer: Uuid, sku: &str, quantity: u32) -> PlaceOrder {
    PlaceOrder {
        customer_id: customer,
        lines: vec![line(sku, quantity)],
        payment_token: "tok_ok".into(),
        email: None,
    }
}

#[tokio::test]
async fn two_workers_build_exactly_what_one_builds_from_20000_events() {
    let world = World::new("orders").await;
    let (base, stop_orders) = world.spawn_orders(orders::OrdersSpec::default()).await;

    // 16,000 orders from 400 customers, 4,000 of them cancelled: 20,000 events.
    let customers: Arc<Vec<Uuid>> = Arc::new((0..400).map(|_| Uuid::now_v7()).collect());
    let base = Arc::new(base);
    let mut placed = Vec::new();
    for chunk in (0..16_000usize).collect::<Vec<_>>().chunks(64) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (base, customers) = (base.clone(), customers.clone());
                tokio::spawn(async move {
                    let place = order(
                        customers[i % customers.len()],
                        &format!("S{}", i % 7),
                        1 + i as u32 % 3,
                    );
                    let r = post_command(&base, &place, None).await;
                    assert_eq!(r.status, 202, "{:?}", r.body);
                    r.answer::<OrderAccepted>().order_id
                })
            })
            .collect();
        for t in tasks {
            placed.push(t.await.unwrap());
        }
    }
    for chunk in placed.iter().step_by(4).collect::<Vec<_>>().chunks(64) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|id| {
                let (base, order_id) = (base.clone(), **id);
                tokio::spawn(async move {
                    let r = post_command(&base, &CancelOrder { order_id }, None).await;
                    assert_eq!(r.status, 202, "{:?}", r.body);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let total = world
        .published(messaging::BoundedContext::Orders, 20_000)
        .await
        .len();
    assert_eq!(total, 20_000);

    // One read database built by one worker, another by two workers side by side.
    let mut stops = vec![stop_orders];
    let mut dbs = Vec::new();
    for (prefix, workers) in [("single_", 1), ("pair_", 2)] {
        let url = testkit::fresh_read_db("read").await.owner;
        for _ in 0..workers {
            let mut env = world.env();
            env.retain(|(k, _)| !k.starts_with("DATABASE_"));
            env.extend([
                ("DATABASE_URL", url.clone()),
                // Two read databases on one stream need two sets of consumers, under names
                // no deployment uses: the administrator may make them.
                ("NATS_NKEY_SEED", admin_seed()),
                ("PROJECTION_BATCH_SIZE", "200".to_owned()),
                ("PROJECTION_RETRY_DELAY_MS", "50".to_owned()),
            ]);
            let mut settings = projections::Settings::from_env(&Env::from_pairs(env)).unwrap();
            settings.worker.consumer_prefix = prefix.to_owned();
            let app = projections::App::build(&settings).await.unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(app.run(stop.clone()));
            stops.push(stop);
        }
        dbs.push(PgPool::connect(&url).await.unwrap());
    }
    for db in &dbs {
        testkit::eventually(
            Duration::from_secs(300),
            "the projection to catch up",
            || async { (checkpoint(db).await >= 20_000).then_some(()) },
        )
        .await;
    }
    // Deferred events may still be in flight: wait for both to settle on the same row count.
    for db in &dbs {
        testkit::eventually(Duration::from_secs(60), "every position at its last sequence", || async {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM projection_positions WHERE projection = 'orders_view' AND sequence < \
                   CASE WHEN aggregate_id IN (SELECT order_id::text FROM orders_view WHERE status = 'cancelled') THEN 2 ELSE 1 END",
            )
            .fetch_one(db)
            .await
            .unwrap();
            let cancelled: i64 = sqlx::query_scalar("SELECT count(*) FROM orders_view WHERE status = 'cancelled'")
                .fetch_one(db)
                .await
                .unwrap();
            (pending == 0 && cancelled == 4_000).then_some(())
        })
        .await;
    }
    let single = snapshot(&dbs[0]).await;
    let pair = snapshot(&dbs[1]).await;
    for ((table, a), (_, b)) in single.iter().zip(&pair) {
        assert_eq!(a.len(), b.len(), "{table}: row counts differ");
        assert!(a == b, "{table}: the two builds differ");
    }
    assert_eq!(single[0].1.len(), 16_000);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&dbs[1])
        .await
        .unwrap();
    assert_eq!(dead, 0);
    for s in stops {
        s.cancel();
    }
}

#[tokio::test]
async fn a_rebuild_swaps_in_equal_tables_while_a_reader_never_sees_them_empty_or_partial() {
    let world = World::new("orders").await;
    let (base, stop_orders) = world.spawn_orders(orders::OrdersSpec::default()).await;
    let base = Arc::new(base);
    let customers: Arc<Vec<Uuid>> = Arc::new((0..50).map(|_| Uuid::now_v7()).collect());
    for chunk in (0..3_000usize).collect::<Vec<_>>().chunks(64) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (base, customers) = (base.clone(), customers.clone());
                tokio::spawn(async move {
                    let place = order(customers[i % 50], "R", 1);
                    assert_eq!(post_command(&base, &place, None).await.status, 202);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    world
        .published(messaging::BoundedContext::Orders, 3_000)
        .await;

    let url = testkit::fresh_read_db("read").await.owner;
    let mut env = world.env();
    env.retain(|(k, _)| !k.starts_with("DATABASE_"));
    env.push(("DATABASE_URL", url.clone()));
    let settings = projections::Settings::from_env(&Env::from_pairs(env)).unwrap();
    let app = projections::App::build(&settings).await.unwrap();
    let stop_worker = CancellationToken::new();
    tokio::spawn(app.run(stop_worker.clone()));
    let pool = PgPool::connect(&url).await.unwrap();
    // The checkpoint passes an event deferred behind a redelivered predecessor, so wait for
    // the rows themselves too.
    testkit::eventually(Duration::from_secs(60), "the live projection", || async {
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders_view")
            .fetch_one(&pool)
            .await
            .unwrap();
        (checkpoint(&pool).await >= 3_000 && orders == 3_000).then_some(())
    })
    .await;
    let before = snapshot(&pool).await;

    // A reader polls the live tables throughout the rebuild.
    let reading = CancellationToken::new();
    let reader = {
        let (pool, reading) = (pool.clone(), reading.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !reading.is_cancelled() {
                let (orders, counted): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM orders_view), \
                            (SELECT sum(orders)::bigint FROM customer_order_counts)",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(
                    orders, 3_000,
                    "the reader saw an empty or partial orders_view"
                );
                assert_eq!(
                    counted,
                    Some(3_000),
                    "the reader saw partial customer counts"
                );
                reads += 1;
            }
            reads
        })
    };
    let mut reports = Vec::new();
    let rebuilt = projections::app::rebuild(&settings, "orders_view", |_, p| reports.push(*p))
        .await
        .unwrap();
    assert_eq!(rebuilt[0].events, 3_000);
    assert!(
        reports.last().is_some_and(|p| p.done == p.total),
        "progress reached the end"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    reading.cancel();
    let reads = reader.await.unwrap();
    assert!(reads > 10, "the reader kept reading ({reads} reads)");
    let after = snapshot(&pool).await;
    assert!(before == after, "the rebuilt tables equal the live ones");

    // The live worker goes on, into the new tables, from the rebuilt checkpoint.
    let extra = post_command(&base, &order(customers[0], "R", 1), None).await;
    let id = extra.answer::<OrderAccepted>().order_id.to_string();
    testkit::eventually(
        Duration::from_secs(30),
        "a new order in the new tables",
        || async {
            let found: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders_view WHERE order_id::text = $1")
                    .bind(&id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (found == 1).then_some(())
        },
    )
    .await;
    stop_worker.cancel();
    stop_orders.cancel();
}

/// The administrator's NATS key: it may make consumers under any name.
fn admin_seed() -> String {
    let dir = testkit::infra()
        .nats_credentials
        .as_ref()
        .expect("the tests' NATS keys");
    messaging::settings::seed_in(dir, "admin").expect("the administrator's key")
}
