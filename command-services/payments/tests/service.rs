//! The payments service over HTTP and NATS against real Postgres and JetStream, with the
//! deterministic test provider.

use contracts::payments::{AuthorisePayment, CapturePayment, RefundPayment, VoidPayment};
use contracts::Command;
use messaging::BoundedContext;
use serde_json::{json, Value};
use testkit::world::{post, Via, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn start(world: &World) -> (String, CancellationToken) {
    let mut env = world.env();
    env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "300".into()));
    let settings = payments::settings(&runtime::env::Env::from_pairs(env)).unwrap();
    testkit::world::serve(payments::app(&settings).await.unwrap())
}

fn authorise(order: Uuid, token: &str, amount: i64) -> Value {
    json!({"order_id": order, "amount": amount, "currency": "EUR", "payment_token": token})
}

#[tokio::test]
async fn every_payment_command_works_over_http_and_nats() {
    let world = World::new("payments").await;
    let (base, shutdown) = start(&world).await;
    let nats = |command: &'static str, body: Value| {
        let world = &world;
        async move {
            world
                .nats_command(BoundedContext::Payments, command, body)
                .await
        }
    };
    let paid = Uuid::now_v7();

    let authorised = post(&base, "/payments", authorise(paid, "tok_ok", 2500), None).await;
    assert_eq!(authorised.status, 202, "{:?}", authorised.body);
    assert_eq!(
        (
            authorised.body["payment_status"].as_str(),
            authorised.body["authorised"].as_i64()
        ),
        (Some("authorised"), Some(2500))
    );
    let captured = nats(
        CapturePayment::NAME,
        json!({"command_id": "cap-1", "order_id": paid, "amount": 2500, "currency": "EUR"}),
    )
    .await;
    assert_eq!(
        (
            captured["status"].as_str(),
            captured["data"]["captured"].as_i64()
        ),
        (Some("accepted"), Some(2500))
    );
    // The saga repeating its capture (same command id) does not capture twice.
    let repeated = nats(
        CapturePayment::NAME,
        json!({"command_id": "cap-1", "order_id": paid, "amount": 2500, "currency": "EUR"}),
    )
    .await;
    assert_eq!(
        (repeated["replayed"].as_bool(), repeated["version"].clone()),
        (Some(true), captured["version"].clone())
    );
    let over = post(
        &base,
        &format!("/payments/{paid}/capture"),
        json!({"amount": 1, "currency": "EUR"}),
        None,
    )
    .await;
    assert_eq!(
        (over.status, over.body["reason"].as_str()),
        (422, Some("exceeds_remaining"))
    );

    let refunded = post(
        &base,
        &format!("/payments/{paid}/refund"),
        json!({"amount": 1000, "currency": "EUR"}),
        None,
    )
    .await;
    assert_eq!(
        (refunded.status, refunded.body["refunded"].as_i64()),
        (202, Some(1000))
    );
    let too_much = nats(
        RefundPayment::NAME,
        json!({"command_id": "ref-2", "order_id": paid, "amount": 1501, "currency": "EUR"}),
    )
    .await;
    assert_eq!(too_much["reason"], "exceeds_remaining");

    // Declined is an answer, recorded as an event.
    let declined_order = Uuid::now_v7();
    let mut body = authorise(declined_order, "tok_decline", 900);
    body["command_id"] = json!("auth-d");
    let declined = nats(AuthorisePayment::NAME, body).await;
    assert_eq!(
        (
            declined["status"].as_str(),
            declined["data"]["payment_status"].as_str(),
            declined["data"]["decline_reason"].as_str()
        ),
        (Some("accepted"), Some("declined"), Some("card_declined"))
    );

    // Void an authorisation that was never captured; voiding again changes nothing.
    let voided_order = Uuid::now_v7();
    assert_eq!(
        post(
            &base,
            "/payments",
            authorise(voided_order, "tok_ok", 700),
            None
        )
        .await
        .status,
        202
    );
    let voided = nats(
        VoidPayment::NAME,
        json!({"command_id": "void-1", "order_id": voided_order}),
    )
    .await;
    assert_eq!(voided["data"]["payment_status"], "voided", "{voided}");
    let again = post(
        &base,
        &format!("/payments/{voided_order}/void"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(
        (again.status, again.body["version"].as_u64()),
        (202, voided["version"].as_u64())
    );

    // A provider that never answers is a retryable failure, and nothing is stored.
    let silent = Uuid::now_v7();
    let timed_out = post(
        &base,
        "/payments",
        authorise(silent, "tok_timeout", 100),
        None,
    )
    .await;
    assert_eq!(
        (timed_out.status, timed_out.body["reason"].as_str()),
        (503, Some("provider_timeout"))
    );
    let mut body = authorise(silent, "tok_timeout", 100);
    body["command_id"] = json!("auth-t");
    let timed_out = nats(AuthorisePayment::NAME, body).await;
    assert_eq!(
        (
            timed_out["reason"].as_str(),
            timed_out["retryable"].as_bool()
        ),
        (Some("provider_timeout"), Some(true))
    );

    // tok_flaky: two retryable failures, then authorised, under one command id.
    let flaky = Uuid::now_v7();
    let mut body = authorise(flaky, "tok_flaky", 300);
    body["command_id"] = json!("auth-f");
    let answers = [
        nats(AuthorisePayment::NAME, body.clone()).await,
        nats(AuthorisePayment::NAME, body.clone()).await,
        nats(AuthorisePayment::NAME, body).await,
    ];
    assert_eq!(answers[0]["retryable"], true);
    assert_eq!(answers[1]["retryable"], true);
    assert_eq!(
        answers[2]["data"]["payment_status"], "authorised",
        "{}",
        answers[2]
    );

    let bad = post(
        &base,
        "/payments",
        json!({"order_id": paid, "amount": 1.5, "currency": "EUR", "payment_token": "tok_ok"}),
        None,
    )
    .await;
    assert_eq!(bad.status, 422);
    let nothing = post(
        &base,
        &format!("/payments/{}/capture", Uuid::now_v7()),
        json!({"amount": 1, "currency": "EUR"}),
        None,
    )
    .await;
    assert_eq!(
        (nothing.status, nothing.body["reason"].as_str()),
        (422, Some("not_authorised"))
    );

    let envelopes = world.published(BoundedContext::Payments, 7).await;
    let mut types: Vec<&str> = envelopes.iter().map(|e| e.name()).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        [
            "PaymentAuthorised",
            "PaymentCaptured",
            "PaymentDeclined",
            "PaymentRefunded",
            "PaymentVoided"
        ]
    );
    for e in &envelopes {
        testkit::schemas::assert_valid(e);
    }
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
        let steps: [(&str, String, Value, &str); 5] = [
            (
                AuthorisePayment::NAME,
                "/payments".into(),
                authorise(kept, "tok_ok", 1000),
                "authorised",
            ),
            (
                CapturePayment::NAME,
                format!("/payments/{kept}/capture"),
                json!({"order_id": kept, "amount": 1000, "currency": "EUR"}),
                "authorised",
            ),
            (
                RefundPayment::NAME,
                format!("/payments/{kept}/refund"),
                json!({"order_id": kept, "amount": 400, "currency": "EUR"}),
                "authorised",
            ),
            (
                AuthorisePayment::NAME,
                "/payments".into(),
                authorise(voided, "tok_ok", 500),
                "authorised",
            ),
            (
                VoidPayment::NAME,
                format!("/payments/{voided}/void"),
                json!({"order_id": voided}),
                "voided",
            ),
        ];
        for (command, path, body, status) in steps {
            let answer = world
                .send(&via, BoundedContext::Payments, command, &path, body)
                .await;
            assert!(
                answer.accepted,
                "{command} over {via:?}: {:?}",
                answer.fields
            );
            assert_eq!(
                answer.fields["payment_status"], status,
                "{command} over {via:?}"
            );
        }
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
        post(
            &process.base_url,
            "/payments",
            authorise(order, token, 100),
            None,
        )
        .await;
        let mut body = authorise(Uuid::now_v7(), token, 100);
        body["command_id"] = json!(format!("log-{token}"));
        world
            .nats_command(BoundedContext::Payments, AuthorisePayment::NAME, body)
            .await;
    }
    let bad = post(
        &process.base_url,
        "/payments",
        json!({"order_id": "x", "payment_token": "tok_ok"}),
        None,
    )
    .await;
    assert_eq!(bad.status, 422);
    // One request in a known trace: its log lines carry that trace id.
    let traceparent = runtime::trace::new_traceparent();
    let trace_id = runtime::trace::trace_id_of(&traceparent)
        .unwrap()
        .to_owned();
    let traced_order = Uuid::now_v7();
    let r = reqwest::Client::new()
        .post(format!("{}/payments", process.base_url))
        .header("traceparent", &traceparent)
        .json(&authorise(traced_order, "tok_ok", 100))
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
