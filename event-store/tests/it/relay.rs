//! The command bus and the outbox relay against real Postgres and JetStream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::order::{Order, OrderCommand, OrderLine, PlaceOrder};
use domain::Sku;
use event_store::{CommandBus, CommandMetadata, Executed, Relay, RelaySettings};
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
    /// The service role's URL, for a pool of the relay's own.
    db_url: String,
}

async fn fixture() -> Fixture {
    let world = testkit::world::World::new("relay").await;
    let (pool, js, ns, db_url) = (world.pool, world.js, world.ns, world.db_url);
    messaging::streams::ensure_stream(&js, &ns, BoundedContext::Orders, &StreamSettings::default())
        .await
        .unwrap();
    Fixture {
        pool,
        js,
        ns,
        wake: Arc::new(Notify::new()),
        db_url,
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
        .bind(serde_json::json!({"correlation_id": aggregate_id, "traceparent": service_kit::trace::new_traceparent()}))
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
            .is_some_and(service_kit::trace::is_valid_traceparent));
    }
}

async fn drain(relay: &Relay, conn: &mut sqlx::PgConnection) -> usize {
    let mut total = 0;
    loop {
        let n = relay.publish_batch(conn).await.unwrap();
        if n == 0 {
            relay.delete_published(conn).await.unwrap();
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

fn metadata(key: Option<&str>, hash: &str) -> CommandMetadata {
    CommandMetadata {
        command_id: Uuid::now_v7(),
        correlation_id: "c".into(),
        traceparent: service_kit::trace::new_traceparent(),
        idempotency: key.map(|k| (k.to_owned(), hash.to_owned())),
    }
}

fn place(order_id: Uuid) -> OrderCommand {
    OrderCommand::Place(PlaceOrder {
        order_id,
        customer_id: Uuid::from_u128(42),
        lines: vec![OrderLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: 1,
        }],
        payment_token: "tok_ok".into(),
        email: None,
        placed_at: Utc::now(),
    })
}

fn accepted(executed: Executed<Order>) -> (String, u64, bool) {
    match executed {
        Executed::Accepted {
            aggregate_id,
            version,
            replayed,
            ..
        } => (aggregate_id, version, replayed),
        other => panic!("expected accepted, got {other:?}"),
    }
}

impl Fixture {
    /// Places the order `id` through a bus, with the idempotency key `key` and the request's
    /// hash `hash` when there is a key.
    async fn place(
        &self,
        id: Uuid,
        key: Option<&str>,
        hash: &str,
    ) -> Result<Executed<Order>, event_store::BusError> {
        self.bus()
            .execute(&id.to_string(), place(id), &metadata(key, hash))
            .await
    }

    fn bus(&self) -> CommandBus<Order> {
        let services = domain::order::OrderServices {
            sealer: std::sync::Arc::new(Unsealed),
        };
        CommandBus::<Order>::new(self.pool.clone(), services, self.wake.clone())
            .with_upcasters(domain::order::upcasters())
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn acknowledged_rows_wait_to_be_deleted_together_and_are_never_published_twice() {
    let f = fixture().await;
    let relay = f.relay();
    let mut conn = relay.try_lead().await.unwrap().expect("sole relay leads");
    f.append("lazy", 1).await;
    let started = std::time::Instant::now();
    assert_eq!(relay.publish_batch(&mut conn).await.unwrap(), 1);
    if started.elapsed() < event_store::relay::DELETE_DELAY {
        assert_eq!(f.outbox_len().await, 1, "its delete waits for company");
    }
    f.append("lazy", 2).await;
    assert_eq!(
        relay.publish_batch(&mut conn).await.unwrap(),
        1,
        "the row waiting for its delete is not published again"
    );
    assert_eq!(relay.publish_batch(&mut conn).await.unwrap(), 0);
    tokio::time::sleep(event_store::relay::DELETE_DELAY).await;
    assert_eq!(relay.publish_batch(&mut conn).await.unwrap(), 0);
    assert_eq!(
        f.outbox_len().await,
        0,
        "once the delay has passed, a step deletes what waited, in one statement"
    );
    assert_once_and_ordered(&f.stream().await, 2);
}

#[tokio::test]
async fn the_bus_reports_the_new_version_and_writes_the_outbox_in_the_same_commit() {
    let f = fixture().await;
    let bus = f.bus();
    let id = Uuid::now_v7();
    let first = f.place(id, None, "").await.unwrap();
    assert_eq!(accepted(first), (id.to_string(), 1, false));
    assert_eq!(f.outbox_len().await, 1);

    let again = f.place(id, None, "").await.unwrap();
    assert!(matches!(
        again,
        Executed::Rejected { ref reason, .. } if reason == "already_placed"
    ));
    assert_eq!(f.outbox_len().await, 1, "a refused command writes nothing");
    assert_eq!(bus.load_events(&id.to_string()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_answers_a_repeat_with_the_first_answer() {
    let f = fixture().await;
    let (first_id, second_id) = (Uuid::now_v7(), Uuid::now_v7());
    let first = f.place(first_id, Some("k1"), "h1").await.unwrap();
    assert_eq!(accepted(first), (first_id.to_string(), 1, false));
    // The retry would place another order (a new id); the key returns the first one instead.
    let repeat = f.place(second_id, Some("k1"), "h1").await.unwrap();
    assert_eq!(accepted(repeat), (first_id.to_string(), 1, true));
    assert_eq!(f.count("events").await, 1, "the repeat appended nothing");

    let other_body = f.place(second_id, Some("k1"), "h2").await;
    assert!(matches!(other_body, Err(event_store::BusError::KeyReused)));

    // A rejection is an answer too.
    let rejected = f.place(first_id, Some("k2"), "h3").await.unwrap();
    assert!(matches!(
        rejected,
        Executed::Rejected {
            replayed: false,
            ..
        }
    ));
    let rejected_again = f.place(first_id, Some("k2"), "h3").await.unwrap();
    assert!(matches!(
        rejected_again,
        Executed::Rejected { ref reason, replayed: true, .. } if reason == "already_placed"
    ));
}

#[tokio::test]
async fn concurrent_repeats_of_one_key_commit_once() {
    let f = Arc::new(fixture().await);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let id = Uuid::now_v7();
                f.place(id, Some("same"), "h").await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        let (id, version, _) = accepted(t.await.unwrap());
        answers.push((id, version));
    }
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "every caller got the same answer: {answers:?}"
    );
    assert_eq!(f.count("events").await, 1, "one order placed");
}

#[tokio::test]
async fn stored_v1_events_load_through_the_upcaster() {
    let f = fixture().await;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Order', $1, 1, 'OrderPlaced', '1', $2, '{}')",
    )
    .bind(id.to_string())
    .bind(serde_json::json!({"OrderPlaced": {
        "order_id": id, "customer_id": Uuid::from_u128(9),
        "lines": [{"sku": "OLD-1", "quantity": 3}], "placed_at": "2025-01-01T00:00:00Z"}}))
    .execute(&f.pool)
    .await
    .unwrap();
    let bus = f.bus();
    let events = bus.load_events(&id.to_string()).await.unwrap();
    match &events[0].payload {
        domain::order::OrderEvent::OrderPlaced(p) => {
            assert_eq!(p.payment_token, None);
            assert_eq!(p.lines[0].quantity, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The aggregate built from v1 history accepts the next command of its life cycle.
    let cancel = OrderCommand::Cancel {
        cancelled_at: Utc::now(),
    };
    let (_, version, _) = accepted(
        bus.execute(&id.to_string(), cancel, &metadata(None, ""))
            .await
            .unwrap(),
    );
    assert_eq!(version, 2);
}

#[tokio::test]
async fn a_row_that_can_never_be_published_is_dead_lettered_and_the_rest_go_out() {
    service_kit::metrics::install("relay-test");
    let f = fixture().await;
    // Larger than any stream message: JetStream would refuse it on every try.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Order', 'huge', 1, 'OrderRejected', '1', $1, '{}')",
    )
    .bind(serde_json::json!({"OrderRejected": {"detail": "x".repeat(1_100_000)}}))
    .execute(&f.pool)
    .await
    .unwrap();
    // 1,000 good events behind it, in one statement (the trigger writes their outbox rows).
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'Order', 'agg-' || (n % 10), n / 10 + 1, 'OrderPlaced', '1', \
                jsonb_build_object('OrderPlaced', jsonb_build_object('n', n)), '{}' \
         FROM generate_series(0, 999) AS n ORDER BY n / 10, n % 10",
    )
    .execute(&f.pool)
    .await
    .unwrap();

    let relay = f.relay();
    let mut conn = relay.try_lead().await.unwrap().expect("sole relay leads");
    assert_eq!(drain(&relay, &mut conn).await, 1_001);
    assert_eq!(f.outbox_len().await, 0, "outbox drained");
    let messages = f.stream().await;
    assert_eq!(messages.len(), 1_000, "every good event is published");
    assert!(messages.iter().all(|m| !m.subject.contains("huge")));
    let dead: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT aggregate_id, sequence, reason FROM outbox_dead_letters")
            .fetch_all(&f.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0.as_str(), dead[0].1), ("huge", 1));
    assert!(dead[0].2.contains("exceed"), "{}", dead[0].2);
    let metrics = service_kit::metrics::render().await;
    let body = axum::body::to_bytes(metrics.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("outbox_dead_letters_total") && l.ends_with(" 1")),
        "the dead letter is counted:\n{text}"
    );
}

#[tokio::test]
async fn the_bus_refuses_an_event_the_stream_could_not_store() {
    let f = fixture().await;
    let bus = f.bus();
    let order_id = Uuid::new_v4();
    accepted(f.place(order_id, None, "h").await.unwrap());
    // Past the contract's bounds (1,000 characters), as a caller that skips them would send it.
    let reject = OrderCommand::Reject {
        reason: domain::order::RejectionReason::Failed,
        detail: "x".repeat(1_100_000),
        skus: vec![],
    };
    let outcome = bus
        .execute(&order_id.to_string(), reject, &metadata(None, "h"))
        .await;
    assert!(
        matches!(outcome, Err(event_store::BusError::TooLarge { .. })),
        "{outcome:?}"
    );
    assert_eq!(f.count("events").await, 1, "nothing more was written");
}

#[tokio::test]
async fn idempotency_answers_past_their_retention_are_deleted() {
    let f = fixture().await;
    sqlx::query(
        "INSERT INTO idempotency (key, request_hash, command_id, recorded_at) \
         SELECT 'k' || n, 'h', 'c', now() - make_interval(hours => n) FROM generate_series(0, 9) AS n",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let rule = service_kit::retention::Rule {
        table: "idempotency",
        column: "recorded_at",
        keep: Duration::from_secs(4 * 3600 + 1800),
    };
    assert_eq!(
        service_kit::retention::prune(&f.pool, &rule).await.unwrap(),
        5
    );
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT key FROM idempotency ORDER BY recorded_at DESC")
            .fetch_all(&f.pool)
            .await
            .unwrap();
    assert_eq!(kept, ["k0", "k1", "k2", "k3", "k4"]);
}

/// Leaves a payment token (or address) as it is: these tests are about the relay, not the tokens (the
/// orders service seals them, `orders::keys`).
struct Unsealed;

impl domain::sealing::TokenSealer for Unsealed {
    fn seal<'a>(
        &'a self,
        _customer_id: uuid::Uuid,
        _order_id: uuid::Uuid,
        _field: domain::sealing::Field,
        value: &'a str,
    ) -> domain::payment::BoxFuture<'a, Result<String, domain::sealing::SealingError>> {
        Box::pin(std::future::ready(Ok(value.to_owned())))
    }
}

/// A relay passes over the NOTIFY of its own pool's commits (its command bus signals it) and is
/// woken at once by another pool's, as another replica's. The poll is too slow to matter here.
#[tokio::test]
async fn a_relay_is_woken_by_another_pool_s_commit_and_not_by_its_own() {
    let f = fixture().await;
    let own = service_kit::db::DatabaseSettings {
        url: service_kit::secret::Secret::new(f.db_url.clone()),
        owner_url: None,
        max_connections: 2,
        statement_timeout: Duration::from_secs(10),
        session: Vec::new(),
    }
    .connect()
    .await
    .unwrap();
    let relay = Relay::new(
        own.clone(),
        f.js.clone(),
        RelaySettings {
            context: BoundedContext::Orders,
            namespace: f.ns.clone(),
            stream: StreamSettings::default(),
            batch_size: 50,
            poll_interval: Duration::from_secs(30),
        },
        f.wake.clone(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    // Leading and listening: the first wake-up finds nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Appended on the relay's own pool without the bus's signal: nothing wakes it.
    let mine = Fixture {
        pool: own.clone(),
        js: f.js.clone(),
        ns: f.ns.clone(),
        wake: f.wake.clone(),
        db_url: f.db_url.clone(),
    };
    mine.append("own-pool", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        f.stream().await.len(),
        0,
        "its own pool's NOTIFY is passed over"
    );

    // Another pool's commit (another replica's) wakes it, and the row before goes too.
    f.append("other-pool", 1).await;
    let published = testkit::eventually(Duration::from_secs(5), "the relay to publish", || async {
        let n = f.stream().await.len();
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(published, 2);
    shutdown.cancel();
    running.await.unwrap();
}
