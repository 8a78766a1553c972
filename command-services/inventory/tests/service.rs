//! The inventory service over HTTP and NATS against real Postgres and JetStream.

use contracts::inventory::{
    ChangePrice, CommitStock, CreateProduct, ReleaseStock, ReserveStock, RestockProduct,
};
use contracts::Command;
use std::sync::Arc;

use cqrs_es::Aggregate;
use domain::product::Product;
use messaging::BoundedContext;
use serde_json::{json, Value};
use testkit::world::{post, Via, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn start(world: &World) -> (String, CancellationToken) {
    let settings = command_kit::settings::<inventory::InventorySpec>(
        &runtime::env::Env::from_pairs(world.env()),
    )
    .unwrap();
    testkit::world::serve(
        command_kit::CommandApp::of::<inventory::InventorySpec>(&settings)
            .await
            .unwrap(),
    )
}

/// The product as its stored events make it.
async fn product(world: &World, sku: &str) -> Product {
    let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT payload::jsonb FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(sku)
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let mut product = Product::default();
    for (payload,) in rows {
        product.apply(serde_json::from_value(payload).unwrap());
    }
    product
}

fn create(sku: &str, stock: u32) -> Value {
    json!({"sku": sku, "name": "Mug", "unit_price": 1250, "currency": "EUR", "initial_stock": stock})
}

#[tokio::test]
async fn two_hundred_concurrent_reservations_sell_exactly_the_fifty_in_stock() {
    let world = World::new("inventory").await;
    let (base, shutdown) = start(&world).await;
    assert_eq!(
        post(&base, "/products", create("HOT-1", 50), None)
            .await
            .status,
        202
    );

    let base = Arc::new(base);
    let attempts: Vec<_> = (0..200)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                post(
                    &base,
                    "/products/HOT-1/reservations",
                    json!({"order_id": Uuid::now_v7(), "quantity": 1}),
                    None,
                )
                .await
            })
        })
        .collect();
    let (mut reserved, mut out_of_stock, mut other) = (0, 0, Vec::new());
    for a in attempts {
        let answer = a.await.unwrap();
        match (answer.status, answer.body["reason"].as_str()) {
            (202, _) => {
                assert_eq!(answer.body["unit_price"], 1250);
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
    let p = product(&world, "HOT-1").await;
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
    let (base, shutdown) = start(&world).await;
    let nats = |command: &'static str, body: Value| {
        let world = &world;
        async move {
            world
                .nats_command(BoundedContext::Inventory, command, body)
                .await
        }
    };
    let order_a = Uuid::now_v7();
    let order_b = Uuid::now_v7();

    // Create over HTTP, then the rest alternating transports.
    let created = post(&base, "/products", create("SKU-7", 10), None).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    assert_eq!(
        (
            created.body["sku"].as_str(),
            created.body["version"].as_u64()
        ),
        (Some("SKU-7"), Some(1))
    );

    let restocked = nats(
        RestockProduct::NAME,
        json!({"command_id": "c1", "sku": "SKU-7", "quantity": 5}),
    )
    .await;
    assert_eq!(restocked["status"], "accepted", "{restocked}");
    assert_eq!(restocked["data"]["on_hand"], 15);

    let repriced = post(
        &base,
        "/products/SKU-7/price",
        json!({"unit_price": 990, "currency": "EUR"}),
        None,
    )
    .await;
    assert_eq!(
        (repriced.status, repriced.body["unit_price"].as_i64()),
        (202, Some(990))
    );

    let reserve = json!({"command_id": "c2", "sku": "SKU-7", "order_id": order_a, "quantity": 4});
    let reserved = nats(ReserveStock::NAME, reserve.clone()).await;
    assert_eq!(reserved["status"], "accepted", "{reserved}");
    assert_eq!(
        (
            reserved["data"]["unit_price"].as_i64(),
            reserved["data"]["available"].as_u64()
        ),
        (Some(990), Some(11))
    );
    // The same command id again: the first answer, nothing new stored.
    let again = nats(ReserveStock::NAME, reserve).await;
    assert_eq!(
        (again["replayed"].as_bool(), again["version"].clone()),
        (Some(true), reserved["version"].clone())
    );

    let released = post(
        &base,
        &format!("/products/SKU-7/reservations/{order_a}/release"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(
        (released.status, released.body["available"].as_u64()),
        (202, Some(15))
    );

    // HTTP idempotency: a repeat gets the first answer; the key with another body is a 422.
    let body = json!({"order_id": order_b, "quantity": 2});
    let first = post(
        &base,
        "/products/SKU-7/reservations",
        body.clone(),
        Some("key-1"),
    )
    .await;
    let repeat = post(&base, "/products/SKU-7/reservations", body, Some("key-1")).await;
    assert_eq!(
        (first.status, repeat.status, repeat.replayed),
        (202, 202, true)
    );
    assert_eq!(first.body, repeat.body);
    let reused = post(
        &base,
        "/products/SKU-7/reservations",
        json!({"order_id": order_b, "quantity": 3}),
        Some("key-1"),
    )
    .await;
    assert_eq!(
        (reused.status, reused.body["type"].as_str()),
        (422, Some("urn:streamshop:problem:idempotency-key-reused"))
    );

    let committed = nats(
        CommitStock::NAME,
        json!({"command_id": "c3", "sku": "SKU-7", "order_id": order_b}),
    )
    .await;
    assert_eq!(committed["status"], "accepted", "{committed}");
    assert_eq!(
        (
            committed["data"]["on_hand"].as_u64(),
            committed["data"]["reservation"].as_str()
        ),
        (Some(13), Some("committed"))
    );

    // Rejections, over both transports.
    let too_many = nats(
        ReserveStock::NAME,
        json!({"command_id": "c4", "sku": "SKU-7", "order_id": Uuid::now_v7(), "quantity": 14}),
    )
    .await;
    assert_eq!(
        (
            too_many["status"].as_str(),
            too_many["reason"].as_str(),
            too_many["retryable"].as_bool()
        ),
        (Some("rejected"), Some("out_of_stock"), Some(false))
    );
    let missing = post(
        &base,
        "/products/NOPE/restock",
        json!({"quantity": 1}),
        None,
    )
    .await;
    assert_eq!(
        (missing.status, missing.body["reason"].as_str()),
        (404, Some("not_found"))
    );
    let no_id = nats(RestockProduct::NAME, json!({"sku": "SKU-7", "quantity": 1})).await;
    assert_eq!(no_id["reason"], "invalid_body");
    let bad = nats(
        RestockProduct::NAME,
        json!({"command_id": "c5", "sku": "SKU-7", "quantity": -1}),
    )
    .await;
    assert_eq!(bad["reason"], "invalid_body");
    let unknown = nats("ShipProduct", json!({"command_id": "c6"})).await;
    assert_eq!(unknown["reason"], "unknown_command");
    let bad_sku = post(&base, "/products", create("bad sku", 1), None).await;
    assert_eq!(bad_sku.status, 422);
    let mismatch = post(
        &base,
        "/products/SKU-7/restock",
        json!({"sku": "SKU-8", "quantity": 1}),
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
    let (base, shutdown) = start(&world).await;
    for (via, sku) in [
        (Via::Http(base.clone()), "VIA-HTTP"),
        (Via::Nats, "VIA-NATS"),
    ] {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let steps: [(&str, String, Value); 7] = [
            (CreateProduct::NAME, "/products".into(), create(sku, 10)),
            (
                RestockProduct::NAME,
                format!("/products/{sku}/restock"),
                json!({"sku": sku, "quantity": 5}),
            ),
            (
                ChangePrice::NAME,
                format!("/products/{sku}/price"),
                json!({"sku": sku, "unit_price": 990, "currency": "EUR"}),
            ),
            (
                ReserveStock::NAME,
                format!("/products/{sku}/reservations"),
                json!({"sku": sku, "order_id": a, "quantity": 3}),
            ),
            (
                ReleaseStock::NAME,
                format!("/products/{sku}/reservations/{a}/release"),
                json!({"sku": sku, "order_id": a}),
            ),
            (
                ReserveStock::NAME,
                format!("/products/{sku}/reservations"),
                json!({"sku": sku, "order_id": b, "quantity": 4}),
            ),
            (
                CommitStock::NAME,
                format!("/products/{sku}/reservations/{b}/commit"),
                json!({"sku": sku, "order_id": b}),
            ),
        ];
        for (i, (command, path, body)) in steps.into_iter().enumerate() {
            let answer = world
                .send(&via, BoundedContext::Inventory, command, &path, body)
                .await;
            assert!(
                answer.accepted,
                "{command} over {via:?}: {:?}",
                answer.fields
            );
            assert_eq!(
                answer.fields["version"],
                i as u64 + 1,
                "{command} over {via:?}"
            );
        }
        let p = product(&world, sku).await;
        assert_eq!((p.on_hand, p.available()), (11, 11), "over {via:?}");
    }
    shutdown.cancel();
}
