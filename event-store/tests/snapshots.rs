//! Bounded loads: every `SNAPSHOT_EVERY` events the bus keeps a snapshot in the same
//! transaction, and a load reads it and only the events after it, however long the history.
//! A snapshot that no longer decodes is ignored: the aggregate is folded from every event.

use std::sync::Arc;

use domain::product::{Product, ProductCommand};
use domain::{Money, Sku};
use event_store::bus::SNAPSHOT_EVERY;
use event_store::{CommandBus, Executed};
use testkit::fixtures::metadata;
use tokio::sync::Notify;

const SKU: &str = "LONG-1";

#[tokio::test]
async fn a_load_reads_the_latest_snapshot_and_only_the_events_after_it() {
    let world = testkit::world::World::new("snapshots").await;
    let bus = || CommandBus::<Product>::new(world.pool.clone(), (), Arc::new(Notify::new()));
    let writer = bus();
    let create = ProductCommand::Create {
        sku: Sku::parse(SKU).unwrap(),
        name: "long".into(),
        unit_price: Money::new(100, domain::money::Currency::parse("EUR").unwrap()),
        initial_stock: 0,
    };
    writer.execute(SKU, create, &metadata()).await.unwrap();
    // A long history: 350 restocks after the creation.
    for _ in 0..350 {
        let restock = ProductCommand::Restock { quantity: 1 };
        writer.execute(SKU, restock, &metadata()).await.unwrap();
    }
    let kept: i64 = world
        .count("SELECT version FROM snapshots WHERE aggregate_id = 'LONG-1'")
        .await;
    assert_eq!(kept as u64, 3 * SNAPSHOT_EVERY, "the latest mark crossed");

    // Another replica, which knows nothing of it, reads the snapshot and 51 events.
    let folded: Product = world.aggregate(SKU).await;
    let (state, version, read) = bus().load(SKU).await.unwrap();
    assert_eq!((version, read), (351, 51));
    assert_eq!((state.on_hand, state.reserved), (350, 0));
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        serde_json::to_value(&folded).unwrap(),
        "the same state as folding every event"
    );
    let fresh = bus();
    let restocked = fresh
        .execute(SKU, ProductCommand::Restock { quantity: 1 }, &metadata())
        .await
        .unwrap();
    assert!(
        matches!(restocked, Executed::Accepted { version: 352, .. }),
        "{restocked:?}"
    );

    // A snapshot that no longer decodes is passed over.
    sqlx::query("UPDATE snapshots SET state = '\"not a product\"'")
        .execute(&world.pool)
        .await
        .unwrap();
    let (state, version, read) = bus().load(SKU).await.unwrap();
    assert_eq!((version, read), (352, 352));
    assert_eq!(state.on_hand, 351);
}
