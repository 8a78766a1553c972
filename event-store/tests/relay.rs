//! The command bus and the outbox relay against real Postgres and JetStream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cqrs_es::AggregateError;
use domain::order::{Order, OrderCommand, OrderError, OrderLine, PlaceOrder};
use domain::Sku;
use event_store::{CommandBus, CommandMetadata, Relay, RelaySettings};
use messaging::streams::StreamSettings;
use messaging::{BoundedContext, Envelope, Namespace};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Fixture {
    pool: PgPool,
    js: async_nats::jetstream::Context,
    ns: Namespace,
    wake: Arc<Notify>,
}

async fn fixture() -> Fixture {
    let url = testkit::fresh_database("relay").await;
    let pool = event_store::connect_and_migrate(&runtime::db::DatabaseSettings {
        url: runtime::secret::Secret::new(url.clone()),
        max_connections: 10,
    })
    .await
    .unwrap();
    let js = async_nats::jetstream::new(testkit::nats().await);
    let ns = testkit::unique_namespace();
    messaging::streams::ensure_stream(&js, &ns, BoundedContext::Orders, &StreamSettings::default())
        .await
        .unwrap();
    Fixture {
        pool,
        js,
        ns,
        wake: Arc::new(Notify::new()),
    }
}

impl Fixture {
    fn relay(&self) -> Relay {
        Relay::new(
            self.pool.clone(),
            self.js.clone(),
            RelaySettings {
                context: BoundedContext::Orders,
                namespace: self.ns.clone(),
                stream: StreamSettings::default(),
                batch_size: 50,
                poll_interval: Duration::from_millis(200),
            },
            self.wake.clone(),
        )
    }

    /// Appends an event the way postgres-es does (the trigger adds the outbox row).
    async fn append(&self, aggregate_id: &str, sequence: i64) {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('Order', $1, $2, 'OrderPlaced', '1', $3, $4)",
        )
        .bind(aggregate_id)
        .bind(sequence)
        .bind(serde_json::json!({"OrderPlaced": {"n": sequence}}))
        .bind(serde_json::json!({"correlation_id": aggregate_id, "traceparent": messaging::trace::new_traceparent()}))
        .execute(&self.pool)
        .await
        .unwrap();
    }

    async fn outbox_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn stream(&self) -> Vec<testkit::StoredMessage> {
        testkit::read_stream(&self.js, &self.ns.stream(BoundedContext::Orders)).await
    }
}

/// Every (aggregate, sequence) appears once, and per aggregate in sequence order.
fn assert_once_and_ordered(messages: &[testkit::StoredMessage], expected: usize) {
    assert_eq!(messages.len(), expected, "stream holds each event once");
    let mut seen = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    for m in messages {
        let env = Envelope::from_slice(&m.payload).expect("valid envelope");
        assert!(
            seen.insert((env.subject.clone(), env.sequence)),
            "duplicate {m:?}"
        );
        let prev = last.insert(env.subject.clone(), env.sequence).unwrap_or(0);
        assert_eq!(
            env.sequence,
            prev + 1,
            "aggregate {} out of order",
            env.subject
        );
        assert_eq!(
            m.header("Nats-Msg-Id"),
            Some(format!("Order:{}:{}", env.subject, env.sequence).as_str())
        );
        assert!(m
            .header("traceparent")
            .is_some_and(messaging::trace::is_valid_traceparent));
    }
}

async fn drain(relay: &Relay, conn: &mut sqlx::PgConnection) -> usize {
    let mut total = 0;
    loop {
        let n = relay.publish_batch(conn).await.unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}

#[tokio::test]
async fn relay_publishes_each_event_once_in_aggregate_order() {
    let f = fixture().await;
    // Interleave 30 aggregates x 4 events, as concurrent writers would.
    for seq in 1..=4 {
        for a in 0..30 {
            f.append(&format!("agg-{a}"), seq).await;
        }
    }
    let relay = f.relay();
    let mut conn = relay.try_lead().await.unwrap().expect("sole relay leads");
    assert_eq!(drain(&relay, &mut conn).await, 120);
    assert_eq!(f.outbox_len().await, 0, "outbox drained");
    assert_once_and_ordered(&f.stream().await, 120);

    // A crash after publishing but before deleting leaves the rows: they go out again and
    // JetStream drops them by Nats-Msg-Id.
    sqlx::query("INSERT INTO outbox (aggregate_type, aggregate_id, sequence) SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY sequence")
        .execute(&f.pool)
        .await
        .unwrap();
    assert_eq!(drain(&relay, &mut conn).await, 120);
    assert_once_and_ordered(&f.stream().await, 120);
}

#[tokio::test]
async fn only_one_relay_leads_and_another_takes_over() {
    let f = fixture().await;
    let (a, b) = (f.relay(), f.relay());
    let leader = a.try_lead().await.unwrap().expect("first leads");
    assert!(b.try_lead().await.unwrap().is_none(), "second stands by");
    drop(leader);
    testkit::eventually(Duration::from_secs(5), "standby takes over", || async {
        b.try_lead().await.unwrap().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn two_running_relays_with_concurrent_writers_publish_exactly_once() {
    let f = Arc::new(fixture().await);
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| tokio::spawn(f.relay().run(shutdown.clone())))
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let f = f.clone();
            tokio::spawn(async move {
                for seq in 1..=25 {
                    for a in 0..5 {
                        f.append(&format!("w{w}-{a}"), seq).await;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    testkit::eventually(Duration::from_secs(30), "outbox drained", || async {
        (f.outbox_len().await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    for r in relays {
        r.await.unwrap();
    }
    assert_once_and_ordered(&f.stream().await, 500);
}

fn metadata() -> CommandMetadata {
    CommandMetadata {
        command_id: Uuid::now_v7(),
        correlation_id: "c".into(),
        traceparent: messaging::trace::new_traceparent(),
    }
}

#[tokio::test]
async fn the_bus_reports_the_new_version_and_writes_the_outbox_in_the_same_commit() {
    let f = fixture().await;
    let bus = CommandBus::<Order>::new(f.pool.clone(), (), f.wake.clone());
    let id = Uuid::now_v7();
    let place = OrderCommand::Place(PlaceOrder {
        order_id: id,
        customer_id: Uuid::now_v7(),
        lines: vec![OrderLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 1,
        }],
        placed_at: Utc::now(),
    });
    let committed = bus
        .execute(&id.to_string(), place.clone(), &metadata())
        .await
        .unwrap();
    assert_eq!(committed.version, 1);
    assert_eq!(f.outbox_len().await, 1);

    let again = bus.execute(&id.to_string(), place, &metadata()).await;
    assert!(matches!(
        again,
        Err(AggregateError::UserError(OrderError::AlreadyPlaced(_)))
    ));
    assert_eq!(f.outbox_len().await, 1, "a refused command writes nothing");
    assert_eq!(bus.load_events(&id.to_string()).await.unwrap().len(), 1);
}
