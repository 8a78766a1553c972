//! An open reservation does not hold stock forever: past its time to live the service releases
//! it; a committed one stays committed. A pass of sweeps resumes exactly where its last batch
//! ended.

use std::time::Duration;

use std::sync::Arc;

use command_kit::dispatch::{Dispatcher, Request};
use command_kit::spec::CommandSpec;
use contracts::inventory::{CommitStock, CreateProduct, ReserveStock};
use contracts::{Command, Reply};
use domain::product::{Product, ReservationState};
use inventory::expiry::{Sweeper, Swept};
use testkit::fixtures::{eur, sku};
use testkit::world::{post_command, World};
use uuid::Uuid;

#[tokio::test]
async fn an_open_reservation_past_its_time_is_released_and_a_committed_one_is_kept() {
    let world = World::new("expiry").await;
    let settings = command_kit::settings::<inventory::InventorySpec>(
        &service_kit::env::Env::from_pairs(world.env()),
    )
    .unwrap();
    let spec = inventory::InventorySpec {
        reservation_ttl: Duration::from_secs(2),
        sweep_every: Duration::from_millis(200),
    };
    let (base, stop) = testkit::world::serve(
        command_kit::CommandApp::build(&settings, spec, |_| Ok(command_kit::Parts::services(())))
            .await
            .unwrap(),
    );
    let create = CreateProduct {
        sku: sku("EXP-1"),
        name: "Mug".into(),
        unit_price: 1250,
        currency: eur(),
        initial_stock: 10,
    };
    assert_eq!(post_command(&base, &create, None).await.status, 202);
    // An order id nobody placed holds 3; a real order reserves 2 and commits them.
    let (stray, kept) = (Uuid::now_v7(), Uuid::now_v7());
    for (order_id, quantity) in [(stray, 3), (kept, 2)] {
        let reserve = ReserveStock {
            sku: sku("EXP-1"),
            order_id,
            quantity,
            customer_id: None,
        };
        assert_eq!(post_command(&base, &reserve, None).await.status, 202);
    }
    let commit = CommitStock {
        sku: sku("EXP-1"),
        order_id: kept,
    };
    assert_eq!(post_command(&base, &commit, None).await.status, 202);
    let product: Product = world.aggregate("EXP-1").await;
    assert_eq!(product.available(), 5, "3 held by the stray reservation");

    let product = testkit::eventually(
        Duration::from_secs(15),
        "the stray reservation to expire",
        || async {
            let product: Product = world.aggregate("EXP-1").await;
            (product.reservations[&stray].state == ReservationState::Released).then_some(product)
        },
    )
    .await;
    assert_eq!(product.reserved, 0);
    assert_eq!(product.on_hand, 8);
    assert_eq!(product.available(), 8, "the stray order's 3 are back");
    assert_eq!(
        product.reservations[&kept].state,
        ReservationState::Committed,
        "a committed reservation never expires"
    );
    stop.cancel();
}

/// Sends `command` straight to the dispatcher, as the HTTP and NATS entries do.
async fn dispatch<C: Command>(dispatcher: &Dispatcher<inventory::InventorySpec>, command: &C) {
    let reply = dispatcher
        .dispatch(Request {
            name: C::NAME.to_owned(),
            body: serde_json::to_value(command).unwrap(),
            idempotency_key: None,
            traceparent: None,
        })
        .await;
    assert!(matches!(reply, Reply::Accepted { .. }), "{reply:?}");
}

#[tokio::test]
async fn a_batch_ending_among_reservations_committed_together_resumes_at_the_next() {
    let world = World::new("expiry_batches").await;
    let pool = sqlx::PgPool::connect(&world.db_url).await.unwrap();
    let bus = event_store::CommandBus::new(pool.clone(), (), Arc::new(tokio::sync::Notify::new()))
        .with_upcasters(inventory::InventorySpec::upcasters());
    let dispatcher = Arc::new(Dispatcher::new(inventory::InventorySpec::default(), bus));
    let create = CreateProduct {
        sku: sku("EXP-2"),
        name: "Jug".into(),
        unit_price: 900,
        currency: eur(),
        initial_stock: 10,
    };
    dispatch(&dispatcher, &create).await;
    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for order_id in &orders {
        let reserve = ReserveStock {
            sku: sku("EXP-2"),
            order_id: *order_id,
            quantity: 1,
            customer_id: Some(uuid::Uuid::now_v7()),
        };
        dispatch(&dispatcher, &reserve).await;
    }
    assert_eq!(
        world.count("SELECT count(*) FROM open_reservations").await,
        5
    );
    // All five made an hour ago in one transaction: one time for them all.
    sqlx::query(
        "UPDATE open_reservations SET reserved_at = date_trunc('second', now()) - interval '1 hour'",
    )
    .execute(&world.pool)
    .await
    .unwrap();

    let mut sweeper = Sweeper::new(dispatcher, pool, Duration::from_secs(60)).batch(2);
    let mut sweeps = Vec::new();
    loop {
        let swept = sweeper.sweep().await.unwrap();
        sweeps.push(swept);
        if swept.caught_up {
            break;
        }
    }
    let batch = |found, caught_up| Swept {
        found,
        released: found,
        caught_up,
    };
    assert_eq!(
        sweeps,
        [batch(2, false), batch(2, false), batch(1, true)],
        "two full batches, then the last reservation of the same instant"
    );
    let product: Product = world.aggregate("EXP-2").await;
    for order_id in &orders {
        assert_eq!(
            product.reservations[order_id].state,
            ReservationState::Released
        );
    }
    assert_eq!(product.available(), 10);
    assert_eq!(
        world.count("SELECT count(*) FROM open_reservations").await,
        0,
        "a released reservation leaves the list"
    );
    assert_eq!(sweeper.sweep().await.unwrap(), batch(0, true));
}
