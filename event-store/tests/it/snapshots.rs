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

/// Creates the product with no stock, then restocks it one unit at a time, `restocks` times.
async fn long_history(writer: &CommandBus<Product>, restocks: u64) {
    let create = ProductCommand::Create {
        sku: Sku::parse(SKU).unwrap(),
        name: "long".into(),
        unit_price: Money::new(100, domain::money::Currency::parse("EUR").unwrap()),
        initial_stock: 0,
    };
    writer.execute(SKU, create, &metadata()).await.unwrap();
    for _ in 0..restocks {
        let restock = ProductCommand::Restock { quantity: 1 };
        writer.execute(SKU, restock, &metadata()).await.unwrap();
    }
}

#[tokio::test]
async fn a_load_reads_the_latest_snapshot_and_only_the_events_after_it() {
    let world = testkit::world::World::new("snapshots").await;
    let bus = || CommandBus::<Product>::new(world.pool.clone(), (), Arc::new(Notify::new()));
    // A long history: 350 restocks after the creation.
    long_history(&bus(), 350).await;
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

#[tokio::test]
async fn a_repeated_command_is_answered_from_its_own_events_and_the_snapshot_not_the_history() {
    let world = testkit::world::World::new("snapshot_replay").await;
    let bus = || CommandBus::<Product>::new(world.pool.clone(), (), Arc::new(Notify::new()));
    let writer = bus();
    long_history(&writer, SNAPSHOT_EVERY + 10).await;
    let keyed = || event_store::CommandMetadata {
        idempotency: Some(("restock-once".into(), "hash".into())),
        ..metadata()
    };
    let restock = || ProductCommand::Restock { quantity: 5 };
    let first = writer.execute(SKU, restock(), &keyed()).await.unwrap();
    let Executed::Accepted {
        version, events, ..
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(version, SNAPSHOT_EVERY + 12);

    // An early event no longer decodes: folding the whole history would fail here.
    sqlx::query("UPDATE events SET payload = '{\"garbled\": true}' WHERE sequence = 5")
        .execute(&world.pool)
        .await
        .unwrap();
    let repeat = bus().execute(SKU, restock(), &keyed()).await.unwrap();
    let Executed::Accepted {
        version: again,
        events: same,
        state,
        replayed,
        ..
    } = repeat
    else {
        panic!("{repeat:?}")
    };
    assert!(replayed);
    assert_eq!((again, same), (version, events));
    assert_eq!(
        state.on_hand,
        SNAPSHOT_EVERY + 15,
        "the aggregate as it is now"
    );
}
