//! One order is one trace: the spans exported over OTLP by every hop (the orders service's
//! HTTP request and command, the outbox publishes, the orchestrator's inputs and steps, the
//! inventory and payments handlers and the projections) share the trace id of the request's
//! `traceparent`. A test binary of its own, because the tracing subscriber is one per process.

use contracts::inventory::ReserveStock;
use contracts::orders::{ConfirmOrder, PlaceOrder};
use contracts::payments::{AuthorisePayment, CapturePayment};
use contracts::Command;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use service_kit::telemetry::LogFormat;
use testkit::otlp::{ReceivedSpan, Receiver};
use testkit::stack::Stack;
use uuid::Uuid;

fn has(spans: &[ReceivedSpan], name: &str, attribute: (&str, &str)) -> bool {
    spans.iter().any(|s| {
        s.name == name && s.attributes.get(attribute.0).map(String::as_str) == Some(attribute.1)
    })
}

/// What the trace lacks: a hop's span, or a span whose parent is neither in the trace nor the
/// caller's span named by the request's `traceparent`.
fn missing_hops(spans: &[ReceivedSpan], traceparent: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            missing.push(what.to_owned());
        }
    };
    expect(
        has(spans, "http.request", ("http.route", "/orders")),
        "POST /orders",
    );
    for command in [
        PlaceOrder::NAME,
        ReserveStock::NAME,
        AuthorisePayment::NAME,
        CapturePayment::NAME,
        ConfirmOrder::NAME,
    ] {
        expect(has(spans, "command", ("command", command)), command);
    }
    for stream in ["ORDERS", "INVENTORY", "PAYMENTS", "SAGAS"] {
        expect(has(spans, "outbox.publish", ("stream", stream)), stream);
    }
    expect(spans.iter().any(|s| s.name == "saga.input"), "saga.input");
    for step in ["reserve", "authorise", "capture", "confirm"] {
        let found = spans.iter().any(|s| {
            s.name == "saga.step"
                && s.attributes
                    .get("step")
                    .is_some_and(|v| v.starts_with(step))
        });
        expect(found, step);
    }
    for projection in projections::NAMES {
        expect(
            has(spans, "projection.event", ("projection", projection)),
            projection,
        );
    }
    let caller = traceparent.split('-').nth(2).unwrap();
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in spans {
        if s.parent_span_id != caller && !ids.contains(s.parent_span_id.as_str()) {
            missing.push(format!("the parent of {} {:?}", s.name, s.attributes));
        }
    }
    missing
}

// Several worker threads: the exporter's thread posts to the receiver on this runtime while a
// flush waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_across_every_service() {
    let receiver = Receiver::start().await;
    let telemetry = Arc::new(service_kit::telemetry::init(
        "streamshop-test",
        &receiver.log_settings("warn", LogFormat::Pretty),
    ));
    let s = Stack::start_all(30).await;
    s.product("TR-1", 10).await;

    let traceparent = service_kit::trace::new_traceparent();
    let trace_id = service_kit::trace::trace_id_of(&traceparent)
        .unwrap()
        .to_owned();
    // Another order at the same time, in a trace of its own: none of its work may join ours.
    let ours = testkit::http()
        .post(format!("{}/orders", s.urls[0]))
        .header("traceparent", &traceparent)
        .json(&PlaceOrder {
            customer_id: Uuid::now_v7(),
            lines: vec![testkit::fixtures::line("TR-1", 2)],
            payment_token: "tok_ok".into(),
            email: None,
        })
        .send();
    let (r, other) = tokio::join!(ours, s.place(&[("TR-1", 1)], "tok_ok"));
    let r = r.unwrap();
    assert_eq!(r.status(), 202);
    // The answer carries the request span's context: same trace, the server's own span id.
    let answered = r.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(
        service_kit::trace::trace_id_of(&answered),
        Some(trace_id.as_str())
    );
    assert_ne!(answered, traceparent);
    let body: serde_json::Value = r.json().await.unwrap();
    let order = Uuid::parse_str(body["order_id"].as_str().unwrap()).unwrap();
    assert_eq!(s.finished(order).await["outcome"], "confirmed");
    assert_eq!(s.finished(other).await["outcome"], "confirmed");
    // The read side has the confirmed order, so the projections have handled its events.
    testkit::eventually(Duration::from_secs(10), "the order view", || async {
        let view: serde_json::Value = testkit::http()
            .get(format!("{}/orders/{order}", s.reads[1]))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (view["status"] == "confirmed").then_some(())
    })
    .await;

    // Spans are exported when they end; a parent still open is exported later: look again.
    let mut spans = Vec::new();
    let mut missing = Vec::new();
    for _ in 0..40 {
        let flushing = telemetry.clone();
        tokio::task::spawn_blocking(move || flushing.flush())
            .await
            .unwrap();
        spans = receiver.trace(&trace_id);
        missing = missing_hops(&spans, &traceparent);
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let names: Vec<(&str, &BTreeMap<String, String>)> = spans
        .iter()
        .map(|s| (s.name.as_str(), &s.attributes))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from trace {trace_id}: {missing:#?}\nspans of the trace: {names:#?}\nall span names: {:?}",
        receiver.spans().iter().map(|s| s.name.clone()).collect::<HashSet<_>>()
    );

    assert!(spans.iter().all(|s| s.service == "streamshop-test"));
    // Nothing of the other order leaked in: every id on the trace's spans is our order's.
    let other = other.to_string();
    for span in &spans {
        assert!(
            !span.attributes.values().any(|v| v.contains(&other)),
            "the other order in our trace: {span:?}"
        );
    }
    for span in spans.iter().filter(|s| s.name == "command") {
        assert_eq!(
            span.attributes.get("correlation_id"),
            Some(&order.to_string()),
            "{span:?}"
        );
    }
    // And the other order's work is a trace of its own, with the same hops.
    let other_trace = receiver
        .spans()
        .into_iter()
        .find(|s| s.name == "command" && s.attributes.get("correlation_id") == Some(&other))
        .map(|s| s.trace_id)
        .unwrap();
    assert_ne!(other_trace, trace_id);
    assert!(has(
        &receiver.trace(&other_trace),
        "command",
        ("command", ConfirmOrder::NAME)
    ));
}
