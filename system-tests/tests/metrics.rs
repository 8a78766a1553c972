//! `/metrics` after one saga: the counters of every hop carry the right values. A test binary
//! of its own, because the metrics recorder is one per process.

use contracts::inventory::ReserveStock;
use contracts::orders::{ConfirmOrder, PlaceOrder};
use contracts::payments::{AuthorisePayment, CapturePayment};
use contracts::Command;
use messaging::BoundedContext;
use testkit::stack::Stack;

/// The value of the sample whose line starts with `name{` and contains every label.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_one_saga_at_every_hop() {
    // A step deadline no busy machine reaches: a step retried after its deadline sends its
    // command again, and this test counts each command once.
    let s = Stack::start_with(testkit::stack::Options {
        business_deadline_secs: 60,
        reads: true,
        orchestrator_env: vec![("SAGA_STEP_DEADLINE_MS", "30000".into())],
        ..testkit::stack::Options::default()
    })
    .await;
    s.product("M1", 10).await;
    let order = s.place(&[("M1", 2)], "tok_ok").await;
    assert_eq!(s.finished(order).await["outcome"], "confirmed");

    // Every service answers /metrics; in this process they share one registry.
    let mut texts = Vec::new();
    for base in &s.all_urls() {
        let r = testkit::get(format!("{base}/metrics")).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        texts.push(r.text().await.unwrap());
    }
    let text = texts.last().unwrap();
    let expect = |name: &str, labels: &[&str], value: f64| {
        assert_eq!(
            sample(text, name, labels),
            Some(value),
            "{name} {labels:?} in:\n{text}"
        );
    };
    let command = |name: &str| format!("command=\"{name}\"");
    for name in [
        PlaceOrder::NAME,
        ReserveStock::NAME,
        AuthorisePayment::NAME,
        CapturePayment::NAME,
        ConfirmOrder::NAME,
    ] {
        expect(
            "commands_total",
            &[&command(name), "outcome=\"accepted\""],
            1.0,
        );
    }
    expect("sagas_started_total", &[], 1.0);
    expect("sagas_completed_total", &["outcome=\"confirmed\""], 1.0);
    expect(
        "http_requests_total",
        &["route=\"/orders\"", "method=\"POST\"", "status=\"202\""],
        1.0,
    );
    // Placed, priced, confirmed.
    expect("outbox_published_total", &["stream=\"ORDERS\""], 3.0);
    expect(
        "command_duration_seconds_count",
        &[&command(PlaceOrder::NAME)],
        1.0,
    );
    expect(
        "saga_duration_seconds_count",
        &["outcome=\"confirmed\""],
        1.0,
    );

    // What each relay published is what its stream holds, and nothing waits in an outbox.
    for context in BoundedContext::ALL {
        let stream = context.stream_base();
        let held = s.stored(context).await;
        let label = format!("stream=\"{stream}\"");
        expect("outbox_published_total", &[&label], held as f64);
        expect("outbox_backlog", &[&label], 0.0);
    }

    // The projections took every event once and are caught up; no consumer saw a
    // redelivery or a dead letter.
    for projection in projections::NAMES {
        let label = format!("projection=\"{projection}\"");
        expect("projection_lag", &[&label], 0.0);
        assert!(
            sample(
                text,
                "projection_events_total",
                &[&label, "verdict=\"applied\""]
            )
            .is_some_and(|n| n >= 1.0),
            "{projection} applied nothing:\n{text}"
        );
    }
    for name in ["consumer_redeliveries_total", "consumer_dead_letters_total"] {
        assert_eq!(sample(text, name, &[]), None, "{name} in:\n{text}");
    }

    // Each database pool reports its size; the orders service's pool is at most its maximum.
    let orders_db = s.orders.db_url.rsplit('/').next().unwrap().to_owned();
    let database = format!("database=\"{orders_db}\"");
    let max = sample(text, "db_pool_connections", &[&database, "state=\"max\""]).unwrap();
    let in_use = sample(
        text,
        "db_pool_connections",
        &[&database, "state=\"in_use\""],
    )
    .unwrap();
    let idle = sample(text, "db_pool_connections", &[&database, "state=\"idle\""]).unwrap();
    assert!(
        max >= 1.0 && in_use + idle <= max,
        "{in_use} + {idle} > {max}"
    );
}
