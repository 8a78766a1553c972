//! The inventory service over HTTP and NATS against real Postgres and JetStream.

use contracts::inventory::{
    ChangePrice, CommitStock, CreateProduct, ReleaseStock, ReserveStock, RestockProduct,
    StockAnswer,
};
use contracts::{Command, Reply};
use std::sync::Arc;
use testkit::fixtures::{eur, sku};

use domain::product::{Product, ReservationState};
use messaging::BoundedContext;
use serde_json::json;
use testkit::world::{path_of, post, post_command, Via, World};
use uuid::Uuid;

fn create(s: &str, stock: u32) -> CreateProduct {
    CreateProduct {
        sku: sku(s),
        name: "Mug".into(),
        unit_price: 1250,
        currency: eur(),
        initial_stock: stock,
    }
}

fn restock(s: &str, quantity: u32) -> RestockProduct {
    RestockProduct {
        sku: sku(s),
        quantity,
    }
}

fn reserve(s: &str, order_id: Uuid, quantity: u32) -> ReserveStock {
    ReserveStock {
        sku: sku(s),
        order_id,
        quantity,
        customer_id: None,
    }
}

#[tokio::test]
async fn two_hundred_concurrent_reservations_sell_exactly_the_fifty_in_stock() {
    let world = World::new("inventory").await;
    let (base, shutdown) = world.spawn::<inventory::InventorySpec>().await;
    assert_eq!(
        post_command(&base, &create("HOT-1", 50), None).await.status,
        202
    );

    let base = Arc::new(base);
    let attempts: Vec<_> = (0..200)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                post_command(&base, &reserve("HOT-1", Uuid::now_v7(), 1), None).await
            })
        })
        .collect();
    let (mut reserved, mut out_of_stock, mut other) = (0, 0, Vec::new());
    for a in attempts {
        let answer = a.await.unwrap();
        match (answer.status, answer.body["reason"].as_str()) {
            (202, _) => {
                assert_eq!(answer.answer::<StockAnswer>().unit_price, Some(1250));
                reserved += 1;
            }
            (422, Some("out_of_stock")) => out_of_stock += 1,
            _ => other.push(answer),
        }
    }
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    assert_eq!((reserved, out_of_stock), (50, 150));

    let stored = world
        .count("SELECT count(*) FROM events WHERE event_type = 'StockReserved'")
        .await;
    assert_eq!(stored, 50, "the stored events agree");
    let p = world.aggregate::<Product>("HOT-1").await;
    assert_eq!((p.on_hand, p.reserved, p.available()), (50, 50, 0));
    assert_eq!(
        world.published(BoundedContext::Inventory, 51).await.len(),
        51
    );
    shutdown.cancel();
}

#[tokio::test]
async fn every_inventory_command_works_over_http_and_nats() {
    let world = World::new("inventory").await;
    let (base, shutdown) = world.spawn::<inventory::InventorySpec>().await;
    let order_a = Uuid::now_v7();
    let order_b = Uuid::now_v7();

    // Create over HTTP, then the rest alternating transports.
    let created = post_command(&base, &create("SKU-7", 10), None).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    assert_eq!(
        (
            created.body["sku"].as_str(),
            created.body["version"].as_u64()
        ),
        (Some("SKU-7"), Some(1))
    );

    let restocked = world.nats_send("c1", &restock("SKU-7", 5)).await;
    let (_, data) = restocked
        .accepted()
        .unwrap_or_else(|| panic!("{restocked:?}"));
    assert_eq!(data.on_hand, 15);

    let repriced = post_command(
        &base,
        &ChangePrice {
            sku: sku("SKU-7"),
            unit_price: 990,
            currency: eur(),
        },
        None,
    )
    .await;
    assert_eq!(repriced.status, 202, "{repriced:?}");
    assert_eq!(repriced.answer::<StockAnswer>().unit_price, Some(990));

    let reserve_a = reserve("SKU-7", order_a, 4);
    let reserved = world.nats_send("c2", &reserve_a).await;
    let (reserved_version, data) = reserved
        .accepted()
        .unwrap_or_else(|| panic!("{reserved:?}"));
    assert_eq!((data.unit_price, data.available), (Some(990), 11));
    // The same command id again: the first answer, nothing new stored.
    let again = world.nats_send("c2", &reserve_a).await;
    assert!(again.is_replayed(), "{again:?}");
    assert_eq!(again.accepted().map(|(v, _)| v), Some(reserved_version));

    let released = post_command(
        &base,
        &ReleaseStock {
            sku: sku("SKU-7"),
            order_id: order_a,
        },
        None,
    )
    .await;
    assert_eq!(released.status, 202, "{released:?}");
    assert_eq!(released.answer::<StockAnswer>().available, 15);

    // HTTP idempotency: a repeat gets the first answer; the key with another body is a 422.
    let reserve_b = reserve("SKU-7", order_b, 2);
    let first = post_command(&base, &reserve_b, Some("key-1")).await;
    let repeat = post_command(&base, &reserve_b, Some("key-1")).await;
    assert_eq!(
        (first.status, repeat.status, repeat.replayed),
        (202, 202, true)
    );
    assert_eq!(first.body, repeat.body);
    let reused = post_command(&base, &reserve("SKU-7", order_b, 3), Some("key-1")).await;
    assert_eq!(
        (reused.status, reused.body["type"].as_str()),
        (422, Some("urn:streamshop:problem:idempotency-key-reused"))
    );

    let committed = world
        .nats_send(
            "c3",
            &CommitStock {
                sku: sku("SKU-7"),
                order_id: order_b,
            },
        )
        .await;
    let (_, data) = committed
        .accepted()
        .unwrap_or_else(|| panic!("{committed:?}"));
    assert_eq!(
        (data.on_hand, data.reservation),
        (13, Some(ReservationState::Committed))
    );

    // Rejections, over both transports.
    let too_many = world
        .nats_send("c4", &reserve("SKU-7", Uuid::now_v7(), 14))
        .await;
    assert!(
        matches!(
            &too_many,
            Reply::Rejected { reason, retryable: false, .. } if reason == "out_of_stock"
        ),
        "{too_many:?}"
    );
    let missing = post_command(&base, &restock("NOPE", 1), None).await;
    assert_eq!(
        (missing.status, missing.body["reason"].as_str()),
        (404, Some("not_found"))
    );
    // A well-formed command without its command_id.
    let no_id = world
        .nats_command(
            BoundedContext::Inventory,
            RestockProduct::NAME,
            serde_json::to_value(restock("SKU-7", 1)).unwrap(),
        )
        .await;
    assert_eq!(no_id["reason"], "invalid_body");
    // Malformed on purpose: a negative quantity.
    let bad = world
        .nats_command(
            BoundedContext::Inventory,
            RestockProduct::NAME,
            json!({"command_id": "c5", "sku": "SKU-7", "quantity": -1}),
        )
        .await;
    assert_eq!(bad["reason"], "invalid_body");
    // Malformed on purpose: a command the context does not have.
    let unknown = world
        .nats_command(
            BoundedContext::Inventory,
            "ShipProduct",
            json!({"command_id": "c6"}),
        )
        .await;
    assert_eq!(unknown["reason"], "unknown_command");
    // Malformed on purpose: a SKU that does not parse.
    let bad_sku = post(
        &base,
        CreateProduct::PATH,
        json!({"sku": "bad sku", "name": "Mug", "unit_price": 1250, "currency": "EUR", "initial_stock": 1}),
        None,
    )
    .await;
    assert_eq!(bad_sku.status, 422);
    // SKU-8's restock sent to SKU-7's path: the body disagrees with the path.
    let mismatch = post(
        &base,
        &path_of(&restock("SKU-7", 1)),
        serde_json::to_value(restock("SKU-8", 1)).unwrap(),
        None,
    )
    .await;
    assert_eq!(mismatch.status, 422);

    // Every event reached INVENTORY in a valid envelope, in order.
    let envelopes = world.published(BoundedContext::Inventory, 7).await;
    let types: Vec<&str> = envelopes.iter().map(|e| e.name()).collect();
    assert_eq!(
        types,
        [
            "ProductCreated",
            "ProductRestocked",
            "PriceChanged",
            "StockReserved",
            "ReservationReleased",
            "StockReserved",
            "ReservationCommitted"
        ]
    );
    for (i, e) in envelopes.iter().enumerate() {
        assert_eq!(e.sequence, i as u64 + 1);
        assert_eq!(e.subject, "SKU-7");
        assert_eq!(e.source, "/streamshop/inventory");
        testkit::schemas::assert_valid(e);
    }
    shutdown.cancel();
}

#[tokio::test]
async fn every_inventory_command_succeeds_over_each_transport() {
    let world = World::new("inventory").await;
    let (base, shutdown) = world.spawn::<inventory::InventorySpec>().await;
    for (via, name) in [
        (Via::Http(base.clone()), "VIA-HTTP"),
        (Via::Nats, "VIA-NATS"),
    ] {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let id = sku(name);
        let change_price = ChangePrice {
            sku: id.clone(),
            unit_price: 990,
            currency: eur(),
        };
        step(&world, &via, &create(name, 10), 1).await;
        step(&world, &via, &restock(name, 5), 2).await;
        step(&world, &via, &change_price, 3).await;
        step(&world, &via, &reserve(name, a, 3), 4).await;
        let release = ReleaseStock {
            sku: id.clone(),
            order_id: a,
        };
        step(&world, &via, &release, 5).await;
        step(&world, &via, &reserve(name, b, 4), 6).await;
        let commit = CommitStock {
            sku: id,
            order_id: b,
        };
        step(&world, &via, &commit, 7).await;
        let p = world.aggregate::<Product>(name).await;
        assert_eq!((p.on_hand, p.available()), (11, 11), "over {via:?}");
    }
    shutdown.cancel();
}

/// Sends `command` over `via`; it must be accepted and bring the product to `version`.
async fn step<C: Command>(world: &World, via: &Via, command: &C, version: u64) {
    let fields = world.expect_accepted(via, command).await;
    assert_eq!(fields["version"], version, "{} over {via:?}", C::NAME);
}
