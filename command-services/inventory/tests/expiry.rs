//! An open reservation does not hold stock forever: past its time to live the service releases
//! it; a committed one stays committed.

use std::time::Duration;

use contracts::inventory::{CommitStock, CreateProduct, ReserveStock};
use domain::product::{Product, ReservationState};
use testkit::fixtures::{eur, sku};
use testkit::world::{post_command, World};
use uuid::Uuid;

#[tokio::test]
async fn an_open_reservation_past_its_time_is_released_and_a_committed_one_is_kept() {
    let world = World::new("expiry").await;
    let settings = command_kit::settings::<inventory::InventorySpec>(
        &runtime::env::Env::from_pairs(world.env()),
    )
    .unwrap();
    let spec = inventory::InventorySpec {
        reservation_ttl: Duration::from_secs(2),
        sweep_every: Duration::from_millis(200),
    };
    let (base, stop) = testkit::world::serve(
        command_kit::CommandApp::build(&settings, spec, ())
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
