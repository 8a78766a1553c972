//! Impossible numbers (which only a forged or corrupt event can carry) are dead-lettered by
//! the projections: never a panic that kills the worker, never a value that wraps. The
//! aggregate's later events wait behind the letter until an operator discards or replays it.

use chrono::Utc;
use domain::payment::PaymentEvent;
use domain::product::ProductEvent;
use domain::{Currency, Money, Sku};
use messaging::envelope::StoredEvent;
use messaging::{BoundedContext, Envelope};
use projections::payments_view::PaymentsView;
use projections::products_view::ProductsView;
use projections::projection::Projection;
use projections::worker::Worker;
use testkit::world::World;
use uuid::Uuid;

async fn worker<P: Projection>(w: &World, projection: P) -> Worker<P> {
    crate::stream(w, projection.context()).await;
    crate::worker_on(w, projection, false).await
}

fn event<E: serde::Serialize + cqrs_es::DomainEvent>(
    context: BoundedContext,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    event: E,
) -> Envelope {
    Envelope::from_stored(&StoredEvent {
        context,
        aggregate_type: aggregate_type.into(),
        aggregate_id: aggregate_id.into(),
        sequence,
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(&event).unwrap(),
        correlation_id: None,
        causation_id: None,
        recorded_at: Utc::now(),
    })
}

/// Steps the worker until it has nothing left; returns (applied, dead-lettered).
async fn drain<P: Projection>(worker: &Worker<P>) -> (usize, usize) {
    let (mut applied, mut dead) = (0, 0);
    for _ in 0..100 {
        let o = worker.process_batch().await.unwrap();
        applied += o.applied;
        dead += o.dead_lettered;
        if o.fetched == 0 && worker.lag().await.unwrap() == 0 {
            return (applied, dead);
        }
    }
    panic!("the projection did not catch up");
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").unwrap())
}

#[tokio::test]
async fn a_stock_level_past_what_the_read_model_holds_is_dead_lettered_and_holds_its_product() {
    let w = World::read().await;
    let worker = worker(&w, ProductsView).await;
    let sku = Sku::parse("BIG-1").unwrap();
    let product = |sequence, e| event(BoundedContext::Inventory, "Product", "BIG-1", sequence, e);
    w.publish(&product(
        1,
        ProductEvent::ProductCreated {
            sku: sku.clone(),
            name: "Big".into(),
            unit_price: eur(100),
            initial_stock: 1,
        },
    ))
    .await;
    w.publish(&product(
        2,
        ProductEvent::ProductRestocked {
            sku: sku.clone(),
            quantity: 1,
            on_hand: u64::MAX,
        },
    ))
    .await;
    w.publish(&product(
        3,
        ProductEvent::ProductRestocked {
            sku,
            quantity: 4,
            on_hand: 5,
        },
    ))
    .await;
    assert_eq!(drain(&worker).await, (1, 2));
    let on_hand = || w.count("SELECT on_hand FROM products_view WHERE sku = 'BIG-1'");
    assert_eq!(
        on_hand().await,
        1,
        "the product's later event waits behind the impossible one"
    );
    let letters: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, reason FROM dead_letters ORDER BY sequence")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    assert!(letters[0].1.contains("out of range"), "{letters:?}");
    assert_eq!(letters[1].1, projections::worker::HELD);
    // Replaying the impossible event changes nothing; discarding it lets the rest apply.
    let pool = sqlx::PgPool::connect(&w.db_url).await.unwrap();
    let still = projections::dead_letters::replay(&pool, letters[0].0).await;
    assert!(
        matches!(
            still,
            Err(projections::dead_letters::LetterError::StillFailing { .. })
        ),
        "{still:?}"
    );
    assert_eq!(on_hand().await, 1);
    projections::dead_letters::discard(&pool, letters[0].0)
        .await
        .unwrap();
    let replayed = projections::dead_letters::replay(&pool, letters[1].0)
        .await
        .unwrap();
    assert_eq!(replayed.letters, [letters[1].0]);
    assert_eq!(on_hand().await, 5);
}

#[tokio::test]
async fn sums_that_would_overflow_and_negative_amounts_are_dead_lettered() {
    let w = World::read().await;
    let worker = worker(&w, PaymentsView).await;
    let order_id = Uuid::now_v7();
    let id = order_id.to_string();
    let payment = |sequence, e| event(BoundedContext::Payments, "Payment", &id, sequence, e);
    let captured = |amount| PaymentEvent::PaymentCaptured {
        order_id,
        amount: eur(amount),
        captured_total: eur(amount),
    };
    w.publish(&payment(
        1,
        PaymentEvent::PaymentAuthorised {
            order_id,
            amount: eur(i64::MAX),
            provider_reference: "ref".into(),
        },
    ))
    .await;
    w.publish(&payment(2, captured(i64::MAX))).await;
    // In one batch the fold overflows; alone, the database's sum does.
    w.publish(&payment(3, captured(i64::MAX))).await;
    w.publish(&payment(4, captured(-5))).await;
    assert_eq!(drain(&worker).await, (2, 2));
    assert_eq!(
        w.count(&format!(
            "SELECT captured FROM payments_view WHERE order_id = '{order_id}'"
        ))
        .await,
        i64::MAX,
        "nothing wrapped"
    );
    assert_eq!(w.count("SELECT count(*) FROM dead_letters").await, 2);
}
