//! The orders service over HTTP, as an in-process app and as a real process that gets killed,
//! against real Postgres and JetStream.

use contracts::orders::{
    CancelOrder, ConfirmOrder, OrderAnswer, PlaceOrder, PriceLine, PriceOrder, RejectOrder,
};
use contracts::{Command, Reply};
use std::time::Duration;
use testkit::fixtures::{eur, line, sku};

use domain::order::{OrderEvent, OrderLine, OrderStatus, RejectionReason};
use messaging::{BoundedContext, Envelope};
use orders::OrdersSpec;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::world::{path_of, post_command, World};
use uuid::Uuid;

/// The orders binary, for the tests that run it as a process.
fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_orders"))
}

/// Rows in one of the world's tables.
async fn rows(w: &World, table: &str) -> i64 {
    w.count(&format!("SELECT count(*) FROM {table}")).await
}

/// An order for a new customer, with the given lines.
fn order_of(lines: Vec<OrderLine>) -> PlaceOrder {
    PlaceOrder {
        customer_id: Uuid::now_v7(),
        lines,
        payment_token: "tok_ok".into(),
        email: None,
    }
}

/// An order for a new customer: two of SKU-1 and one of SKU-2.
fn place_order() -> PlaceOrder {
    order_of(vec![line("SKU-1", 2), line("SKU-2", 1)])
}

/// The prices of [`place_order`]'s lines: SKU-1 at 1.50, SKU-2 at 10.00.
fn price_order(order_id: Uuid) -> PriceOrder {
    let price = |s: &str, unit_price: i64| PriceLine {
        sku: sku(s),
        unit_price,
        currency: eur(),
    };
    PriceOrder {
        order_id,
        lines: vec![price("SKU-1", 150), price("SKU-2", 1000)],
    }
}

/// The order id of an accepted HTTP answer.
fn order_id(answer: &testkit::world::HttpAnswer) -> Uuid {
    answer.body["order_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no order id in {answer:?}"))
}

/// Each event id once, and no two messages for the same (aggregate, sequence).
fn assert_exactly_once(messages: &[testkit::StoredMessage], expected: usize) {
    let mut keys: Vec<(String, u64)> = messages
        .iter()
        .map(|m| {
            let e = Envelope::from_slice(&m.payload).unwrap();
            (e.subject, e.sequence)
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), messages.len(), "no duplicates in the stream");
    assert_eq!(messages.len(), expected);
}

#[tokio::test]
async fn a_placed_order_reaches_the_stream_in_a_cloudevents_envelope() {
    let w = World::new("orders").await;
    let (base, shutdown) = w.spawn_orders(OrdersSpec::default()).await;
    let traceparent = service_kit::trace::new_traceparent();
    let place = place_order();
    let response = testkit::http()
        .post(format!("{base}{}", path_of(&place)))
        .header("traceparent", &traceparent)
        .json(&place)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["version"], 1);
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&order_id).unwrap().get_version_num(),
        7
    );

    let messages = w.published_messages(BoundedContext::Orders, 1).await;
    assert_exactly_once(&messages, 1);
    let m = &messages[0];
    assert_eq!(
        m.subject,
        format!("{}.events.orders.{order_id}.OrderPlaced", w.ns.as_str())
    );
    assert_eq!(
        m.header("Nats-Msg-Id"),
        Some(format!("Order:{order_id}:1").as_str())
    );
    assert_eq!(m.header("traceparent"), Some(traceparent.as_str()));
    let env = Envelope::from_slice(&m.payload).unwrap();
    assert_eq!(env.event_type, "streamshop.orders.OrderPlaced.v3");
    assert_eq!(env.source, "/streamshop/orders");
    assert_eq!(env.subject, order_id);
    assert_eq!(env.sequence, 1);
    assert_eq!(env.correlationid.as_deref(), Some(order_id.as_str()));
    assert!(env.causationid.is_some());
    let OrderEvent::OrderPlaced(placed) = contracts::decode::<OrderEvent>(&env).unwrap() else {
        panic!("not OrderPlaced: {env:?}");
    };
    assert_eq!(placed.customer_id, place.customer_id);
    assert_eq!(placed.lines, place.lines);
    shutdown.cancel();
}

#[tokio::test]
async fn bad_input_is_a_problem_and_writes_nothing() {
    let w = World::new("orders").await;
    let (base, shutdown) = w.spawn_orders(OrdersSpec::default()).await;
    let client = testkit::http();
    let customer = uuid::Uuid::now_v7();
    // Malformed on purpose: a line whose SKU or quantity has the wrong shape.
    let malformed_line = |sku: Value, q: Value| {
        json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": q}], "payment_token": "tok_ok"})
            .to_string()
    };
    // Well-formed requests that the Order aggregate refuses.
    let order = |lines: Vec<OrderLine>| {
        serde_json::to_string(&PlaceOrder {
            customer_id: customer,
            lines,
            payment_token: "tok_ok".into(),
            email: None,
        })
        .unwrap()
    };
    let big = "x".repeat(70 * 1024);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            "{\"customer_id\":".into(),
            StatusCode::BAD_REQUEST,
            "malformed-json",
        ),
        (
            "not an object",
            "[1,2]".into(),
            unprocessable,
            "invalid-body",
        ),
        (
            "missing lines",
            json!({"customer_id": customer}).to_string(),
            unprocessable,
            "invalid-body",
        ),
        (
            "unknown field",
            json!({"customer_id": customer, "lines": [], "price": 1}).to_string(),
            unprocessable,
            "invalid-body",
        ),
        (
            "invalid customer id",
            json!({"customer_id": "bob", "lines": []}).to_string(),
            unprocessable,
            "invalid-body",
        ),
        (
            "negative quantity",
            malformed_line(json!("SKU-1"), json!(-1)),
            unprocessable,
            "invalid-body",
        ),
        (
            "string quantity",
            malformed_line(json!("SKU-1"), json!("2")),
            unprocessable,
            "invalid-body",
        ),
        (
            "zero quantity",
            order(vec![line("SKU-1", 0)]),
            unprocessable,
            "order-rejected",
        ),
        (
            "huge quantity",
            order(vec![line("SKU-1", 1001)]),
            unprocessable,
            "order-rejected",
        ),
        (
            "bad sku",
            malformed_line(json!("sku 1"), json!(1)),
            unprocessable,
            "invalid-body",
        ),
        ("no lines", order(vec![]), unprocessable, "order-rejected"),
        (
            "repeated sku",
            order(vec![line("A", 1), line("A", 1)]),
            unprocessable,
            "order-rejected",
        ),
        (
            "oversize body",
            json!({"customer_id": customer, "lines": [], "pad": big}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        ),
    ];
    for (name, body, status, kind) in cases {
        let r = client
            .post(format!("{base}/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{name}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let problem: Value = r.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:streamshop:problem:{kind}"),
            "{name}: {problem}"
        );
        assert_eq!(problem["status"], status.as_u16(), "{name}");
    }
    let no_type = client
        .post(format!("{base}/orders"))
        .body(serde_json::to_string(&place_order()).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let wrong_method = client.get(format!("{base}/orders")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let unknown = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );

    assert_eq!(rows(&w, "events").await, 0, "nothing was written");
    assert_eq!(rows(&w, "outbox").await, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let w = World::new("orders").await;
    let (base, shutdown) = w.spawn_orders(OrdersSpec::default()).await;
    let healthz = testkit::get(format!("{base}/healthz")).await;
    assert_eq!(healthz.status(), StatusCode::OK);
    let readyz: Value = testkit::get(format!("{base}/readyz"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(readyz["checks"]["postgres:orders"], "ok");
    shutdown.cancel();
}

#[tokio::test]
async fn readiness_follows_the_database_going_away_and_coming_back() {
    let w = World::new("orders").await;
    let gate = testkit::gate::Gate::start(&testkit::gate::Gate::target_of(&w.db_url)).await;
    let mut env: Vec<_> = w
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "DATABASE_URL")
        .collect();
    env.push(("DATABASE_URL", gate.route(&w.db_url)));
    env.push(("HTTP_ADDR", "127.0.0.1:0".into()));
    let (base, shutdown) = serve_orders(env).await;
    let readyz = || async {
        let r = testkit::get(format!("{base}/readyz")).await;
        let status = r.status();
        (status, r.json::<Value>().await.unwrap())
    };
    let wait = Duration::from_secs(20);
    testkit::eventually(wait, "ready", || async {
        (readyz().await.0 == StatusCode::OK).then_some(())
    })
    .await;

    gate.close();
    let report = testkit::eventually(wait, "unready while the database is away", || async {
        let (status, body) = readyz().await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
    })
    .await;
    let check = report["checks"]["postgres:orders"]
        .as_str()
        .unwrap_or_default();
    assert!(check.starts_with("error"), "{report}");
    assert_eq!(
        report["checks"]["nats"], "ok",
        "only the database is away: {report}"
    );
    let healthz = testkit::get(format!("{base}/healthz")).await;
    assert_eq!(
        healthz.status(),
        StatusCode::OK,
        "the process itself is alive"
    );

    gate.open();
    testkit::eventually(wait, "ready again once the database is back", || async {
        (readyz().await.0 == StatusCode::OK).then_some(())
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn sigkill_after_commit_before_publish_loses_nothing() {
    let w = World::new("orders").await;
    // A replica without a relay commits events that nobody publishes yet.
    let first = w
        .start_process(binary(), &[("OUTBOX_RELAY", "false")])
        .await;
    for _ in 0..5 {
        assert_eq!(
            post_command(&first.base_url, &place_order(), None)
                .await
                .status,
            202
        );
    }
    assert_eq!(rows(&w, "outbox").await, 5);
    assert!(
        w.stream(BoundedContext::Orders).await.is_empty(),
        "nothing published before the kill"
    );
    first.kill9().await;

    let second = w.start_process(binary(), &[]).await;
    let messages = w.published_messages(BoundedContext::Orders, 5).await;
    assert_exactly_once(&messages, 5);
    assert!(second.terminate().await, "graceful exit on SIGTERM");
}

#[tokio::test]
async fn crash_between_publish_and_outbox_delete_publishes_once() {
    let w = World::new("orders").await;
    let doomed = w
        .start_process(binary(), &[("FAILPOINTS", "outbox.after_publish")])
        .await;
    // The process may die before it answers: the commit is what matters.
    let place = place_order();
    let _ = testkit::http()
        .post(format!("{}{}", doomed.base_url, path_of(&place)))
        .json(&place)
        .send()
        .await;
    let status = doomed.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "the failpoint aborted the process");
    assert_eq!(rows(&w, "events").await, 1);
    assert_eq!(
        rows(&w, "outbox").await,
        1,
        "crashed before the outbox row was deleted"
    );
    assert_eq!(
        w.stream(BoundedContext::Orders).await.len(),
        1,
        "but after JetStream stored the event"
    );

    let _restarted = w.start_process(binary(), &[]).await;
    testkit::eventually(Duration::from_secs(20), "outbox drained", || async {
        (rows(&w, "outbox").await == 0).then_some(())
    })
    .await;
    assert_exactly_once(&w.stream(BoundedContext::Orders).await, 1);
}

#[tokio::test]
async fn two_replicas_on_one_database_publish_every_event_once() {
    let w = World::new("orders").await;
    let a = w.start_process(binary(), &[]).await;
    let b = w.start_process(binary(), &[]).await;
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.base_url } else { &b.base_url };
        assert_eq!(post_command(base, &place_order(), None).await.status, 202);
    }
    let messages = w.published_messages(BoundedContext::Orders, 20).await;
    assert_exactly_once(&messages, 20);
    // One replica dies (maybe the leader); the other goes on publishing.
    a.kill9().await;
    for _ in 0..5 {
        assert_eq!(
            post_command(&b.base_url, &place_order(), None).await.status,
            202
        );
    }
    let messages = w.published_messages(BoundedContext::Orders, 25).await;
    assert_exactly_once(&messages, 25);
}

#[tokio::test]
async fn every_order_command_works_over_http_and_nats() {
    use testkit::world::post;
    let w = World::new("orders").await;
    let (base, shutdown) = w.spawn_orders(OrdersSpec::default()).await;

    // Placed over HTTP, priced over NATS, confirmed over HTTP.
    let placed = post_command(&base, &place_order(), None).await;
    assert_eq!(placed.status, 202);
    let a = order_id(&placed);
    let priced = w.nats_send("p1", &price_order(a)).await;
    let (_, data) = priced.accepted().unwrap_or_else(|| panic!("{priced:?}"));
    assert_eq!(
        (data.status, data.total),
        (OrderStatus::Priced, Some(1300)),
        "{priced:?}"
    );
    let confirm = ConfirmOrder { order_id: a };
    let confirmed = post_command(&base, &confirm, None).await;
    assert_eq!(confirmed.status, 202, "{confirmed:?}");
    assert_eq!(
        confirmed.answer::<OrderAnswer>().status,
        OrderStatus::Confirmed
    );
    let twice = post_command(&base, &confirm, None).await;
    assert_eq!(
        (twice.status, twice.body["reason"].as_str()),
        (422, Some("invalid_transition"))
    );
    let late_cancel = post_command(&base, &CancelOrder { order_id: a }, None).await;
    assert_eq!(late_cancel.body["reason"], "invalid_transition");

    // Placed over NATS (the command id makes it idempotent), rejected over NATS.
    let place = place_order();
    let first = w.nats_send("place-1", &place).await;
    let repeat = w.nats_send("place-1", &place).await;
    let (
        Reply::Accepted {
            aggregate_id: first_id,
            ..
        },
        Reply::Accepted {
            aggregate_id: repeat_id,
            ..
        },
    ) = (&first, &repeat)
    else {
        panic!("{first:?} then {repeat:?}");
    };
    assert_eq!(first_id, repeat_id, "one order for one command id");
    let b: Uuid = first_id.parse().unwrap();
    let rejected = w
        .nats_send(
            "r1",
            &RejectOrder {
                order_id: b,
                reason: RejectionReason::OutOfStock,
                detail: "SKU-2 sold out".into(),
                skus: vec![sku("SKU-2")],
            },
        )
        .await;
    let (_, data) = rejected
        .accepted()
        .unwrap_or_else(|| panic!("{rejected:?}"));
    assert_eq!(data.status, OrderStatus::Rejected, "{rejected:?}");
    let confirm_rejected = w.nats_send("c9", &ConfirmOrder { order_id: b }).await;
    assert_eq!(confirm_rejected.reason(), Some("invalid_transition"));

    // Cancelled over HTTP; cancelling again is a harmless repeat.
    let c = order_id(&post_command(&base, &place_order(), Some("place-c")).await);
    let cancel = CancelOrder { order_id: c };
    let cancelled = post_command(&base, &cancel, None).await;
    let again = w.nats_send("x1", &cancel).await;
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    assert_eq!(
        cancelled.answer::<OrderAnswer>().status,
        OrderStatus::Cancelled
    );
    let Reply::Accepted { version, .. } = &again else {
        panic!("{again:?}");
    };
    assert_eq!(Some(*version), cancelled.body["version"].as_u64());

    let missing = post_command(
        &base,
        &ConfirmOrder {
            order_id: Uuid::now_v7(),
        },
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    // Malformed on purpose: a rejection reason the contract does not know.
    let bad_reason = post(
        &base,
        &format!("/orders/{c}/reject"),
        json!({"reason": "bored"}),
        None,
    )
    .await;
    assert_eq!(bad_reason.status, 422);

    assert_eq!(
        w.published_types(BoundedContext::Orders, 7).await,
        [
            "OrderCancelled",
            "OrderConfirmed",
            "OrderPlaced",
            "OrderPriced",
            "OrderRejected"
        ]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn every_order_command_succeeds_over_each_transport() {
    use testkit::world::{Answer, Via};
    let world = World::new("orders").await;
    let (base, shutdown) = serve_orders(world.env()).await;
    let ctx = BoundedContext::Orders;
    for via in [Via::Http(base.clone()), Via::Nats] {
        let place = || async { world.send(&via, &place_order()).await };
        let id = |a: &Answer| -> Uuid {
            a.fields["order_id"]
                .as_str()
                .or(a.fields["aggregate_id"].as_str())
                .unwrap()
                .parse()
                .unwrap()
        };
        let placed = place().await;
        assert!(
            placed.accepted,
            "{} over {via:?}: {:?}",
            PlaceOrder::NAME,
            placed.fields
        );
        let a = id(&placed);
        let b = id(&place().await);
        let c = id(&place().await);
        step(&world, &via, &price_order(a), OrderStatus::Priced).await;
        step(
            &world,
            &via,
            &ConfirmOrder { order_id: a },
            OrderStatus::Confirmed,
        )
        .await;
        step(
            &world,
            &via,
            &RejectOrder {
                order_id: b,
                reason: RejectionReason::PaymentDeclined,
                detail: "card declined".into(),
                skus: vec![],
            },
            OrderStatus::Rejected,
        )
        .await;
        step(
            &world,
            &via,
            &CancelOrder { order_id: c },
            OrderStatus::Cancelled,
        )
        .await;
    }
    for e in world.published(ctx, 12).await {
        testkit::schemas::assert_valid(&e);
    }
    shutdown.cancel();
}

/// Sends `command` over `via`; it must be accepted and leave the order in `status`.
async fn step<C: Command<Answer = OrderAnswer>>(
    world: &World,
    via: &testkit::world::Via,
    command: &C,
    status: OrderStatus,
) {
    let answer = world.expect_answer(via, command).await;
    assert_eq!(answer.status, status, "{} over {via:?}", C::NAME);
}

#[tokio::test]
async fn an_oversized_detail_is_refused_at_the_command_and_the_relay_goes_on() {
    let w = World::new("orders").await;
    let (base, shutdown) = w.spawn_orders(OrdersSpec::default()).await;
    let placed = post_command(&base, &place_order(), None).await;
    let order = order_id(&placed);
    // Just under NATS's 1 MB message: it would fit the command, not the event's envelope.
    let oversized = RejectOrder {
        order_id: order,
        reason: RejectionReason::Failed,
        detail: "x".repeat(1_000_000 - 200),
        skus: vec![],
    };
    let refused = w.nats_send("big-detail", &oversized).await;
    assert_eq!(refused.reason(), Some("invalid_body"), "{refused:?}");
    let Reply::Rejected { message, .. } = &refused else {
        unreachable!()
    };
    assert!(message.contains("/detail"), "{message}");
    // Nothing was written, and the next events still reach the stream.
    let next = post_command(&base, &place_order(), None).await;
    assert_eq!(next.status, 202);
    let published = w.published(BoundedContext::Orders, 2).await;
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.iter().all(|e| e.name() == "OrderPlaced"));
    shutdown.cancel();
}

/// The orders service, built in this process from `env` and served on a free port.
async fn serve_orders(
    env: Vec<(&'static str, String)>,
) -> (String, tokio_util::sync::CancellationToken) {
    let settings =
        command_kit::settings::<orders::OrdersSpec>(&service_kit::env::Env::from_pairs(env))
            .unwrap();
    let app =
        command_kit::CommandApp::build(&settings, orders::OrdersSpec::default(), |resources| {
            Ok(orders::parts(resources, testkit::data_keys_master()))
        })
        .await
        .unwrap();
    testkit::world::serve(app)
}
