//! Group commit: commands on different aggregates that arrive while a transaction commits are
//! appended together in the next one; a conflict in one of them fails only that one, which is
//! decided again from the store, while the others commit together without it. A batch that a
//! trigger refuses as a whole (an idempotency key used twice) is committed one by one.

use std::sync::Arc;
use std::time::Duration;

use domain::product::{Product, ProductCommand};
use domain::{Money, Sku};
use event_store::{CommandBus, Executed};
use testkit::fixtures::metadata;
use tokio::sync::Notify;

fn sku(i: usize) -> String {
    format!("GROUP-{i:02}")
}

fn version(executed: &Executed<Product>) -> u64 {
    match executed {
        Executed::Accepted { version, .. } => *version,
        other => panic!("expected accepted, got {other:?}"),
    }
}

async fn restock(bus: &CommandBus<Product>, i: usize) -> u64 {
    let executed = bus
        .execute(
            &sku(i),
            ProductCommand::Restock { quantity: 1 },
            &metadata(),
        )
        .await
        .unwrap();
    version(&executed)
}

#[tokio::test]
async fn a_batch_with_one_conflicting_command_commits_the_others_and_retries_only_that_one() {
    let world = testkit::world::World::new("group").await;
    let bus = || {
        Arc::new(CommandBus::<Product>::new(
            world.pool.clone(),
            (),
            Arc::new(Notify::new()),
        ))
    };
    // Two replicas on one database.
    let (a, b) = (bus(), bus());
    for i in 0..20 {
        let create = ProductCommand::Create {
            sku: Sku::parse(&sku(i)).unwrap(),
            name: sku(i),
            unit_price: Money::new(100, domain::money::Currency::parse("EUR").unwrap()),
            initial_stock: 1,
        };
        a.execute(&sku(i), create, &metadata()).await.unwrap();
    }
    // The other replica moves GROUP-05 on: A's memory of it is now one version behind.
    assert_eq!(restock(&b, 5).await, 2);
    let (transactions, commands) = a.commit_stats();

    // Hold every append back (a share lock on the outbox, which each append's trigger writes).
    let hold = hold_outbox(&world).await;
    // The first command's transaction waits on the lock; the other nineteen queue behind it.
    let first = tokio::spawn({
        let a = a.clone();
        async move { restock(&a, 0).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest: Vec<_> = (1..20)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { (i, restock(&a, i).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    hold.rollback().await.unwrap();

    assert_eq!(first.await.unwrap(), 2);
    for handle in rest {
        let (i, version) = handle.await.unwrap();
        // GROUP-05 was decided again on top of the other replica's restock.
        let expected = if i == 5 { 3 } else { 2 };
        assert_eq!(version, expected, "{}", sku(i));
    }
    let (t, c) = a.commit_stats();
    assert_eq!(c - commands, 20, "every command appended once");
    assert_eq!(
        t - transactions,
        3,
        "one transaction for the first, one for the eighteen beside the conflict, one for its retry"
    );
    let stored: i64 = world
        .count("SELECT count(*) FROM events WHERE event_type = 'ProductRestocked'")
        .await;
    assert_eq!(stored, 21);
    // No relay runs here: every event appended, in a batch or not, left its outbox row.
    assert_eq!(world.count("SELECT count(*) FROM outbox").await, 20 + 21);
}

#[tokio::test]
async fn a_batch_that_a_trigger_refuses_is_committed_one_command_at_a_time() {
    let world = testkit::world::World::new("group_key").await;
    let bus = Arc::new(CommandBus::<Product>::new(
        world.pool.clone(),
        (),
        Arc::new(Notify::new()),
    ));
    // Five creations of five products under one idempotency key (a client's bug): queued
    // behind a held outbox, they reach the committer as one batch, which the idempotency
    // trigger refuses as a whole.
    let hold = hold_outbox(&world).await;
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let create = ProductCommand::Create {
                    sku: Sku::parse(&sku(i)).unwrap(),
                    name: sku(i),
                    unit_price: Money::new(100, domain::money::Currency::parse("EUR").unwrap()),
                    initial_stock: 1,
                };
                let mut metadata = metadata();
                metadata.idempotency = Some(("one-key".into(), "same-hash".into()));
                bus.execute(&sku(i), create, &metadata).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    hold.rollback().await.unwrap();

    // One of them commits; the others learn that the key was used and get its first answer.
    let mut answered = Vec::new();
    for task in tasks {
        match task.await.unwrap().expect("every caller gets an answer") {
            Executed::Accepted { aggregate_id, .. } => answered.push(aggregate_id),
            other => panic!("expected the first answer, got {other:?}"),
        }
    }
    answered.dedup();
    assert_eq!(answered.len(), 1, "one answer for the key: {answered:?}");
    assert_eq!(world.count("SELECT count(*) FROM events").await, 1);
    // The first alone (it met the held outbox first), then the refused batch of four, tried
    // one by one: each conflicts with the key, and is answered from it.
    assert_eq!(bus.commit_stats(), (1, 1));
}

/// A transaction that holds a share lock on the outbox, which every append's trigger writes:
/// appends wait until it ends.
async fn hold_outbox(world: &testkit::world::World) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let pool = sqlx::PgPool::connect(&world.db.owner).await.unwrap();
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE outbox IN SHARE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    hold
}
