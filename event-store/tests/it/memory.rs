//! The command bus keeps aggregates in memory; these tests run two buses (two replicas) on one
//! database and check that a state gone stale in one of them never decides a command.

use std::sync::Arc;

use domain::product::{Product, ProductCommand};
use domain::{Money, Sku};
use event_store::{CommandBus, Executed};
use testkit::fixtures::metadata;
use tokio::sync::Notify;
use uuid::Uuid;

async fn two_replicas() -> (CommandBus<Product>, CommandBus<Product>) {
    let pool = testkit::world::World::new("memory").await.pool;
    let bus = || CommandBus::<Product>::new(pool.clone(), (), Arc::new(Notify::new()));
    (bus(), bus())
}

fn create(stock: u32) -> ProductCommand {
    ProductCommand::Create {
        sku: Sku::parse("SKU-1").unwrap(),
        name: "one".into(),
        unit_price: Money::new(100, domain::money::Currency::parse("EUR").unwrap()),
        initial_stock: stock,
    }
}

fn reserve(order_id: Uuid, quantity: u32) -> ProductCommand {
    ProductCommand::Reserve {
        order_id,
        quantity,
        customer_id: None,
    }
}

async fn run(bus: &CommandBus<Product>, command: ProductCommand) -> Executed<Product> {
    bus.execute("SKU-1", command, &metadata()).await.unwrap()
}

fn version(executed: &Executed<Product>) -> (u64, usize) {
    match executed {
        Executed::Accepted {
            version, events, ..
        } => (*version, events.len()),
        other => panic!("expected accepted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_rejection_from_a_stale_state_is_decided_again_from_the_store() {
    let (a, b) = two_replicas().await;
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    run(&a, create(1)).await;
    // A remembers the only unit reserved for X.
    run(&a, reserve(x, 1)).await;
    // B releases it: A's memory is now behind.
    run(&b, ProductCommand::Release { order_id: x }).await;
    // From memory Y would be out of stock; from the store it is not.
    let reserved = run(&a, reserve(y, 1)).await;
    assert_eq!(version(&reserved), (4, 1), "{reserved:?}");
}

#[tokio::test]
async fn a_no_op_from_a_stale_state_is_decided_again_from_the_store() {
    let (a, b) = two_replicas().await;
    let x = Uuid::now_v7();
    run(&a, create(10)).await;
    // B reserves for X after A remembered the product without that reservation.
    run(&b, reserve(x, 2)).await;
    // From memory there is nothing to release; from the store there is.
    let released = run(&a, ProductCommand::Release { order_id: x }).await;
    assert_eq!(version(&released), (3, 1), "{released:?}");
}

#[tokio::test]
async fn an_append_on_a_stale_state_conflicts_and_is_retried_from_the_store() {
    let (a, b) = two_replicas().await;
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    run(&a, create(10)).await;
    run(&b, reserve(x, 2)).await;
    let reserved = run(&a, reserve(y, 3)).await;
    assert_eq!(version(&reserved), (3, 1), "{reserved:?}");
    let (state, v) = a.state("SKU-1").await.unwrap();
    assert_eq!((v, state.reserved), (3, 5), "both reservations count");
}
