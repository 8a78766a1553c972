//! The payments service over HTTP and NATS against real Postgres and JetStream, with the
//! deterministic test provider.

use crate::common;

use common::{authorise, capture, refund};
use contracts::payments::{AuthorisePayment, PaymentAnswer, VoidPayment};
use contracts::{Command, Reply};
use domain::payment::PaymentStatus;
use messaging::BoundedContext;
use serde_json::{json, Value};
use testkit::world::{path_of, post, post_command, Via, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn start(world: &World) -> (String, CancellationToken) {
    let mut env = world.env();
    env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "300".into()));
    env.extend(testkit::TEST_PAYMENT_PROVIDER.map(|(k, v)| (k, v.into())));
    let settings = payments::settings(&service_kit::env::Env::from_pairs(env)).unwrap();
    testkit::world::serve(payments::app(&settings).await.unwrap())
}

#[tokio::test]
async fn every_payment_command_works_over_http_and_nats() {
    let world = World::new("payments").await;
    let (base, shutdown) = start(&world).await;
    let paid = Uuid::now_v7();

    let authorised = post_command(&base, &authorise(paid, "tok_ok", 2500), None).await;
    assert_eq!(authorised.status, 202, "{:?}", authorised.body);
    let answer = authorised.answer::<PaymentAnswer>();
    assert_eq!(
        (answer.payment_status, answer.authorised),
        (PaymentStatus::Authorised, 2500)
    );
    let capture_all = capture(paid, 2500);
    let captured = world.nats_send("cap-1", &capture_all).await;
    let (captured_version, data) = captured
        .accepted()
        .unwrap_or_else(|| panic!("{captured:?}"));
    assert_eq!(data.captured, 2500);
    // The saga repeating its capture (same command id) does not capture twice.
    let repeated = world.nats_send("cap-1", &capture_all).await;
    assert!(repeated.is_replayed(), "{repeated:?}");
    assert_eq!(repeated.accepted().map(|(v, _)| v), Some(captured_version));
    let over = post_command(&base, &capture(paid, 1), None).await;
    assert_eq!(
        (over.status, over.body["reason"].as_str()),
        (422, Some("exceeds_remaining"))
    );

    let refunded = post_command(&base, &refund(paid, 1000), None).await;
    assert_eq!(refunded.status, 202, "{refunded:?}");
    assert_eq!(refunded.answer::<PaymentAnswer>().refunded, 1000);
    let too_much = world.nats_send("ref-2", &refund(paid, 1501)).await;
    assert_eq!(too_much.reason(), Some("exceeds_remaining"));

    // Declined is an answer, recorded as an event.
    let declined_order = Uuid::now_v7();
    let declined = world
        .nats_send("auth-d", &authorise(declined_order, "tok_decline", 900))
        .await;
    let (_, data) = declined
        .accepted()
        .unwrap_or_else(|| panic!("{declined:?}"));
    assert_eq!(
        (data.payment_status, data.decline_reason.as_deref()),
        (PaymentStatus::Declined, Some("card_declined"))
    );

    // Void an authorisation that was never captured; voiding again changes nothing.
    let voided_order = Uuid::now_v7();
    assert_eq!(
        post_command(&base, &authorise(voided_order, "tok_ok", 700), None)
            .await
            .status,
        202
    );
    let void = VoidPayment {
        order_id: voided_order,
    };
    let voided = world.nats_send("void-1", &void).await;
    let (voided_version, data) = voided.accepted().unwrap_or_else(|| panic!("{voided:?}"));
    assert_eq!(data.payment_status, PaymentStatus::Voided, "{voided:?}");
    let again = post_command(&base, &void, None).await;
    assert_eq!(
        (again.status, again.body["version"].as_u64()),
        (202, Some(voided_version))
    );

    // A provider that never answers is a retryable failure, and nothing is stored.
    let silent = Uuid::now_v7();
    let timeout = authorise(silent, "tok_timeout", 100);
    let timed_out = post_command(&base, &timeout, None).await;
    assert_eq!(
        (timed_out.status, timed_out.body["reason"].as_str()),
        (503, Some("provider_timeout"))
    );
    let timed_out = world.nats_send("auth-t", &timeout).await;
    assert!(
        matches!(
            &timed_out,
            Reply::Rejected { reason, retryable: true, .. } if reason == "provider_timeout"
        ),
        "{timed_out:?}"
    );

    // tok_flaky: two retryable failures, then authorised, under one command id.
    let flaky = authorise(Uuid::now_v7(), "tok_flaky", 300);
    let answers = [
        world.nats_send("auth-f", &flaky).await,
        world.nats_send("auth-f", &flaky).await,
        world.nats_send("auth-f", &flaky).await,
    ];
    for answer in &answers[..2] {
        assert!(
            matches!(
                answer,
                Reply::Rejected {
                    retryable: true,
                    ..
                }
            ),
            "{answer:?}"
        );
    }
    let Reply::Accepted { data, .. } = &answers[2] else {
        panic!("{:?}", answers[2]);
    };
    assert_eq!(
        data.payment_status,
        PaymentStatus::Authorised,
        "{:?}",
        answers[2]
    );

    // Malformed on purpose: a fractional amount.
    let bad = post(
        &base,
        AuthorisePayment::PATH,
        json!({"order_id": paid, "amount": 1.5, "currency": "EUR", "payment_token": "tok_ok"}),
        None,
    )
    .await;
    assert_eq!(bad.status, 422);
    let nothing = post_command(&base, &capture(Uuid::now_v7(), 1), None).await;
    assert_eq!(
        (nothing.status, nothing.body["reason"].as_str()),
        (422, Some("not_authorised"))
    );

    assert_eq!(
        world.published_types(BoundedContext::Payments, 7).await,
        [
            "PaymentAuthorised",
            "PaymentCaptured",
            "PaymentDeclined",
            "PaymentRefunded",
            "PaymentVoided"
        ]
    );
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM events WHERE aggregate_id = '{silent}'"
            ))
            .await,
        0
    );
    shutdown.cancel();
}

#[tokio::test]
async fn every_payment_command_succeeds_over_each_transport() {
    let world = World::new("payments").await;
    let (base, shutdown) = start(&world).await;
    for via in [Via::Http(base.clone()), Via::Nats] {
        let (kept, voided) = (Uuid::now_v7(), Uuid::now_v7());
        let authorised = PaymentStatus::Authorised;
        step(&world, &via, &authorise(kept, "tok_ok", 1000), authorised).await;
        step(&world, &via, &capture(kept, 1000), authorised).await;
        step(&world, &via, &refund(kept, 400), authorised).await;
        step(&world, &via, &authorise(voided, "tok_ok", 500), authorised).await;
        let void = VoidPayment { order_id: voided };
        step(&world, &via, &void, PaymentStatus::Voided).await;
    }
    shutdown.cancel();
}

#[tokio::test]
async fn json_logs_parse_and_never_contain_a_payment_token() {
    let world = World::new("payments").await;
    let log = std::env::temp_dir().join(format!("streamshop-payments-{}.log", Uuid::now_v7()));
    let mut env = world.env();
    env.extend([
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
        ("PAYMENT_PROVIDER_TIMEOUT_MS", "200".to_owned()),
    ]);
    env.extend(testkit::TEST_PAYMENT_PROVIDER.map(|(k, v)| (k, v.to_owned())));
    let process = testkit::process::ServiceProcess::start_logging_to(
        std::path::Path::new(env!("CARGO_BIN_EXE_payments")),
        testkit::free_port(),
        &env,
        Some(&log),
    )
    .await;
    // Every token, accepted, declined, failed and timed out, over HTTP and NATS.
    for token in ["tok_ok", "tok_decline", "tok_flaky", "tok_timeout"] {
        let order = Uuid::now_v7();
        post_command(&process.base_url, &authorise(order, token, 100), None).await;
        world
            .nats_send(
                &format!("log-{token}"),
                &authorise(Uuid::now_v7(), token, 100),
            )
            .await;
    }
    // Malformed on purpose: an order id that is no UUID, and no amount or currency.
    let bad = post(
        &process.base_url,
        AuthorisePayment::PATH,
        json!({"order_id": "x", "payment_token": "tok_ok"}),
        None,
    )
    .await;
    assert_eq!(bad.status, 422);
    // One request in a known trace: its log lines carry that trace id.
    let traceparent = service_kit::trace::new_traceparent();
    let trace_id = service_kit::trace::trace_id_of(&traceparent)
        .unwrap()
        .to_owned();
    let traced_order = Uuid::now_v7();
    let traced = authorise(traced_order, "tok_ok", 100);
    let r = testkit::http()
        .post(format!("{}{}", process.base_url, path_of(&traced)))
        .header("traceparent", &traceparent)
        .json(&traced)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(process.terminate().await);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() > 10,
        "the service logged ({} lines)",
        lines.len()
    );
    for line in &lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(
            parsed.get("level").is_some() && parsed.get("timestamp").is_some(),
            "{line}"
        );
        assert!(
            !line.contains("tok_"),
            "a payment token reached the log: {line}"
        );
        assert_eq!(parsed["service"], "payments", "{line}");
        assert_eq!(parsed["version"], env!("CARGO_PKG_VERSION"), "{line}");
        // Inside a span, the line names its trace and span.
        if parsed.get("spans").is_some() {
            let hex = |key: &str, len: usize| {
                parsed[key]
                    .as_str()
                    .is_some_and(|v| v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit()))
            };
            assert!(hex("trace_id", 32) && hex("span_id", 16), "{line}");
        }
    }
    // Every accepted command's line carries the command's span fields, the order among them.
    let accepted: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["message"] == "command accepted")
        .collect();
    assert!(accepted.len() >= 3, "{accepted:?}");
    for line in &accepted {
        assert_eq!(line["command"], AuthorisePayment::NAME, "{line}");
        assert!(line["correlation_id"].is_string(), "{line}");
    }
    let traced: Vec<&Value> = accepted
        .iter()
        .filter(|l| l["correlation_id"] == traced_order.to_string())
        .collect();
    assert_eq!(traced.len(), 1, "{accepted:?}");
    assert_eq!(traced[0]["trace_id"], trace_id.as_str());
    let _ = std::fs::remove_file(&log);
}

/// Sends `command` over `via`; it must be accepted and leave the payment in `status`.
async fn step<C: Command<Answer = PaymentAnswer>>(
    world: &World,
    via: &Via,
    command: &C,
    status: PaymentStatus,
) {
    let answer = world.expect_answer(via, command).await;
    assert_eq!(answer.payment_status, status, "{} over {via:?}", C::NAME);
}

#[tokio::test]
async fn a_busy_service_sheds_commands_over_nats_instead_of_queueing_them() {
    let world = World::new("payments").await;
    // One handler, so 17 commands in hand at most; each waits 300 ms on a silent provider.
    let mut env = world.env();
    env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "300".into()));
    env.extend(testkit::TEST_PAYMENT_PROVIDER.map(|(k, v)| (k, v.into())));
    env.push(("NATS_COMMAND_CONCURRENCY", "1".into()));
    let settings = payments::settings(&service_kit::env::Env::from_pairs(env)).unwrap();
    let (_base, stop) = testkit::world::serve(payments::app(&settings).await.unwrap());
    let subject = world
        .ns
        .command_subject(BoundedContext::Payments, AuthorisePayment::NAME);
    testkit::eventually(
        std::time::Duration::from_secs(10),
        "the command subscription",
        || async { world.nats.request(subject.clone(), "{}".into()).await.ok() },
    )
    .await;
    let replies = futures::future::join_all((0..60).map(|i| {
        let world = &world;
        async move {
            let started = std::time::Instant::now();
            let command = authorise(Uuid::now_v7(), "tok_timeout", 100);
            let reply = world.nats_send(&format!("busy-{i}"), &command).await;
            (reply, started.elapsed())
        }
    }))
    .await;
    let shed: Vec<_> = replies
        .iter()
        .filter(|(r, _)| {
            matches!(r, Reply::Rejected { reason, retryable: true, .. } if reason == "unavailable")
        })
        .collect();
    assert!(shed.len() >= 40, "most of the burst is shed: {replies:?}");
    assert!(
        shed.iter()
            .all(|(_, took)| *took < std::time::Duration::from_secs(1)),
        "a shed command is answered at once, not after the others: {shed:?}"
    );
    stop.cancel();
}
