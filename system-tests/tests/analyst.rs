//! The analysts' tool (`events`) on real streams made by real sagas: exports that read back
//! identical in every format (and resume after a break), a Python script with only nats-py
//! and pyarrow that agrees with the stream and the Parquet file, time travel to before a
//! cancel, and `verify` finding nothing until a read-model row is altered by hand.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use events_cli::export::{self, ExportOptions};
use events_cli::fold::{self, AsOf};
use events_cli::formats::{self, Format};
use events_cli::progress::Progress;
use events_cli::read::Selection;
use events_cli::record::Record;
use messaging::{BoundedContext, Envelope};
use serde_json::{json, Value};
use testkit::stack::Stack;

fn quiet() -> Arc<Progress> {
    Arc::new(Progress::new("test", true))
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamshop-events-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The streams as JetStream holds them, read without the tool: the expected export.
async fn stored(s: &Stack, contexts: &[BoundedContext]) -> Vec<Record> {
    let mut records = Vec::new();
    for &context in contexts {
        for m in testkit::read_stream(&s.orders.js, &s.orders.ns.stream(context)).await {
            records.push(Record {
                stream: context.stream_base().to_owned(),
                stream_sequence: m.sequence,
                envelope: Envelope::from_slice(&m.payload).unwrap(),
            });
        }
    }
    records
}

fn read_back(format: Format, path: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    formats::read_file(format, path, |r| {
        records.push(r);
        Ok(())
    })
    .unwrap();
    records
}

/// Three sagas (confirmed, declined, one line out of stock), settled everywhere.
async fn stack_with_history() -> Stack {
    let s = Stack::start_all(30).await;
    s.product("EX-1", 10).await;
    s.product("EX-2", 1).await;
    let orders = [
        s.place(&[("EX-1", 2)], "tok_ok").await,
        s.place(&[("EX-1", 1)], "tok_decline").await,
        s.place(&[("EX-1", 1), ("EX-2", 5)], "tok_ok").await,
    ];
    for order in orders {
        s.finished(order).await;
    }
    s.assert_consistent().await;
    s
}

#[tokio::test]
async fn exports_read_back_identical_in_every_format_and_resume_after_a_break() {
    let s = stack_with_history().await;
    let source = s.source();
    let selection = Selection::everything(BoundedContext::ALL.to_vec());
    let expected = stored(&s, &BoundedContext::ALL).await;
    assert!(expected.len() > 40, "{} events", expected.len());
    let dir = scratch_dir();

    for format in [Format::Jsonl, Format::Csv, Format::Parquet] {
        let output = dir.join(format!("all.{}", format.extension()));
        let options = ExportOptions {
            // Several parts, so joining them is exercised too.
            part_events: 7,
            ..ExportOptions::new(format, output.clone())
        };
        let report = export::export(&source, &selection, &options, quiet())
            .await
            .unwrap();
        assert!(report.complete);
        assert_eq!(report.events, expected.len() as u64);
        assert!(!Path::new(&format!("{}.partial", output.display())).exists());
        let got = read_back(format, &output);
        assert_eq!(got.len(), expected.len(), "{format:?}");
        assert_eq!(got, expected, "{format:?}: same events in the same order");
    }

    // A run broken after two parts leaves no output, only parts; the next run resumes them.
    for format in [Format::Jsonl, Format::Csv, Format::Parquet] {
        let output = dir.join(format!("resumed.{}", format.extension()));
        let mut options = ExportOptions {
            part_events: 5,
            stop_after_parts: Some(2),
            ..ExportOptions::new(format, output.clone())
        };
        let broken = export::export(&source, &selection, &options, quiet())
            .await
            .unwrap();
        assert!(!broken.complete);
        assert_eq!(broken.events, 10);
        assert!(!output.exists(), "no half-written output");
        // Another selection does not mix into the broken run's parts.
        let other = Selection::everything(vec![BoundedContext::Orders]);
        options.stop_after_parts = None;
        let refused = export::export(&source, &other, &options, quiet()).await;
        assert!(refused.unwrap_err().to_string().contains("--restart"));

        // A process killed mid-part leaves that part half-written: it is written again.
        let partial = PathBuf::from(format!("{}.partial", output.display()));
        std::fs::write(partial.join("part-000003.tmp"), b"half a part").unwrap();
        let resumed = export::export(&source, &selection, &options, quiet())
            .await
            .unwrap();
        assert!(resumed.complete);
        assert_eq!(resumed.resumed, 10, "{format:?}");
        assert_eq!(read_back(format, &output), expected, "{format:?} resumed");
    }

    // Filters: one order's events, by correlation id, from every stream.
    let order = expected
        .iter()
        .find(|r| r.envelope.name() == "OrderConfirmed")
        .map(|r| r.envelope.subject.clone())
        .unwrap();
    let selection = Selection {
        correlation: Some(order.clone()),
        ..Selection::everything(BoundedContext::ALL.to_vec())
    };
    let output = dir.join("one-order.jsonl");
    let options = ExportOptions {
        part_events: 100,
        ..ExportOptions::new(Format::Jsonl, output.clone())
    };
    export::export(&source, &selection, &options, quiet())
        .await
        .unwrap();
    let wanted: Vec<Record> = expected
        .iter()
        .filter(|r| r.envelope.correlationid.as_deref() == Some(order.as_str()))
        .cloned()
        .collect();
    assert!(wanted.len() > 10);
    assert_eq!(read_back(Format::Jsonl, &output), wanted);
    let _ = std::fs::remove_dir_all(dir);
}

/// What `replay` would print for `selection`.
async fn select(s: &Stack, selection: Selection) -> Vec<Record> {
    let mut reading = events_cli::read::spawn(&s.source(), &selection, BTreeMap::new(), quiet());
    let mut records = Vec::new();
    while let Some(r) = reading.events.recv().await {
        records.push(r);
    }
    reading.finish().await.unwrap();
    records
}

#[tokio::test]
async fn start_and_end_points_by_sequence_and_time_select_what_they_say() {
    use events_cli::read::{End, Start};
    let s = stack_with_history().await;
    let orders = stored(&s, &[BoundedContext::Orders]).await;
    let all = Selection::everything(vec![BoundedContext::Orders]);
    assert_eq!(select(&s, all.clone()).await, orders);

    let middle = Selection {
        start: Start::Sequence(3),
        end: End::Sequence(6),
        ..all.clone()
    };
    assert_eq!(select(&s, middle).await, orders[2..6].to_vec());

    // JetStream's store times: everything is stored before now, nothing before an hour ago.
    let now = chrono::Utc::now();
    let until_now = Selection {
        end: End::Time(now),
        ..all.clone()
    };
    assert_eq!(select(&s, until_now).await, orders);
    let hour_ago = now - chrono::Duration::hours(1);
    let until_an_hour_ago = Selection {
        end: End::Time(hour_ago),
        ..all.clone()
    };
    assert!(select(&s, until_an_hour_ago).await.is_empty());
    let from_an_hour_ago = Selection {
        start: Start::Time(hour_ago),
        ..all.clone()
    };
    assert_eq!(select(&s, from_an_hour_ago).await, orders);
    let from_later = Selection {
        start: Start::Time(now + chrono::Duration::hours(1)),
        ..all.clone()
    };
    assert!(select(&s, from_later).await.is_empty());

    // Filters: a type by name, and one aggregate (filtered by the server).
    let placed = Selection {
        types: vec!["OrderPlaced".into()],
        ..all.clone()
    };
    let got = select(&s, placed).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.envelope.name() == "OrderPlaced"));
    let id = got[1].envelope.subject.clone();
    let one = Selection {
        aggregate: Some(id.clone()),
        ..all
    };
    let expected: Vec<Record> = orders
        .into_iter()
        .filter(|r| r.envelope.subject == id)
        .collect();
    assert_eq!(select(&s, one).await, expected);
}

#[tokio::test]
async fn a_python_script_with_only_nats_py_and_pyarrow_agrees_on_counts_per_type() {
    let s = stack_with_history().await;
    let dir = scratch_dir();
    let output = dir.join("orders.parquet");
    let options = ExportOptions::new(Format::Parquet, output.clone());
    let selection = Selection::everything(vec![BoundedContext::Orders]);
    export::export(&s.source(), &selection, &options, quiet())
        .await
        .unwrap();

    let python_path = testkit::infra().python_path.clone().expect(
        "STREAMSHOP_TEST_PYTHONPATH: run the tests with `cargo xtask test`, which installs nats-py and pyarrow",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events-cli/analyst/count_types.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        // The URL holds the analysts' password: through the environment, never argv.
        .env("NATS_URL", testkit::nats_analyst_url())
        .args(
            testkit::infra()
                .tls_dir
                .iter()
                .flat_map(|dir| [std::ffi::OsStr::new("--tls-dir"), dir.as_os_str()]),
        )
        .args(["--stream", &s.orders.ns.stream(BoundedContext::Orders)])
        .arg("--parquet")
        .arg(&output)
        .env("PYTHONPATH", python_path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(counts["agree"], true);
    // And both agree with the stream as this test reads it.
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for r in stored(&s, &[BoundedContext::Orders]).await {
        *expected.entry(r.envelope.event_type).or_default() += 1;
    }
    assert_eq!(counts["stream"], json!(expected));
    assert_eq!(counts["parquet"], json!(expected));
    for name in ["OrderPlaced", "OrderConfirmed", "OrderRejected"] {
        assert!(
            expected.keys().any(|t| t.contains(&format!(".{name}."))),
            "{name} in {expected:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn state_as_of_a_time_before_a_cancel_shows_the_order_as_it_was() {
    let (s, order) = Stack::cancelled_mid_saga("TT-1", 5, 3).await;
    assert_eq!(s.finished(order).await["outcome"], "cancelled");
    s.assert_consistent().await;

    let source = s.source();
    let id = order.to_string();
    let history: Vec<Envelope> = stored(&s, &[BoundedContext::Orders])
        .await
        .into_iter()
        .map(|r| r.envelope)
        .filter(|e| e.subject == id)
        .collect();
    let cancel = history
        .iter()
        .position(|e| e.name() == "OrderCancelled")
        .expect("an OrderCancelled event");
    let before = &history[cancel - 1];

    let state_as_of = |as_of| fold::state(&source, BoundedContext::Orders, &id, as_of, quiet());
    let now = state_as_of(AsOf::Latest).await.unwrap();
    assert_eq!(now["state"]["status"], "cancelled");
    assert_eq!(now["version"], history.len() as u64);

    // As of the last event before the cancel: by its time, and by its version.
    let then = state_as_of(AsOf::Time(before.time)).await.unwrap();
    assert_eq!(then["version"], before.sequence);
    assert_ne!(then["state"]["status"], "cancelled");
    assert_eq!(
        then["state"]["status"],
        if before.name() == "OrderPriced" {
            "priced"
        } else {
            "placed"
        }
    );
    assert_eq!(then["state"]["lines"][0]["quantity"], 3);
    let by_version = state_as_of(AsOf::Version(before.sequence)).await.unwrap();
    assert_eq!(by_version["state"], then["state"]);

    // Before the order existed there is nothing to show.
    let too_early = state_as_of(AsOf::Time(history[0].time - chrono::Duration::seconds(1))).await;
    assert!(too_early.is_err());
}

#[tokio::test]
async fn verify_finds_nothing_after_sagas_and_every_row_altered_by_hand() {
    let s = stack_with_history().await;
    let clean = s.verify().await;
    assert!(clean.differences.is_empty(), "{:#?}", clean.differences);
    assert!(clean.skipped.is_empty(), "{:?}", clean.skipped);
    assert!(clean.aggregates >= 8 && clean.events > 40, "{clean:?}");

    // By hand: an order's status, and a product's units on hand.
    let read = sqlx::PgPool::connect(s.read_db.as_ref().unwrap())
        .await
        .unwrap();
    let order: String = sqlx::query_scalar(
        "UPDATE orders_view SET status = 'placed' \
         WHERE order_id = (SELECT order_id FROM orders_view WHERE status = 'confirmed' LIMIT 1) \
         RETURNING order_id::text",
    )
    .fetch_one(&read)
    .await
    .unwrap();
    sqlx::query("UPDATE products_view SET on_hand = on_hand + 1 WHERE sku = 'EX-2'")
        .execute(&read)
        .await
        .unwrap();

    let report = s.verify().await;
    let found: HashMap<(&str, &str), &str> = report
        .differences
        .iter()
        .map(|d| ((d.place.as_str(), d.aggregate.as_str()), d.detail.as_str()))
        .collect();
    assert_eq!(report.differences.len(), 2, "{:#?}", report.differences);
    assert!(
        found[&("orders_view", order.as_str())].contains("\"placed\""),
        "{found:?}"
    );
    assert!(
        found[&("products_view", "EX-2")].contains("on_hand"),
        "{found:?}"
    );
}
