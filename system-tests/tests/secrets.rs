//! A payment token reaches the payment provider and nothing a person reads: not the read
//! database, not an API answer, not a log line, not a trace attribute, not an export (unless
//! the export asks for it by name). One test binary: it installs the process's subscriber,
//! which every service of the stack logs and traces through.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events_cli::export::{self, ExportOptions};
use events_cli::formats::Format;
use events_cli::progress::Progress;
use events_cli::read::Selection;
use messaging::BoundedContext;
use service_kit::telemetry::LogFormat;
use testkit::otlp::Receiver;
use testkit::stack::Stack;
use uuid::Uuid;

/// Every log line the process writes, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `text` must not hold `token`; `what` says where it was looked for.
fn clean(what: &str, text: &str, token: &str) {
    if let Some(at) = text.find(token) {
        let from = at.saturating_sub(300);
        panic!(
            "the payment token reached {what}: …{}…",
            &text[from..(at + token.len() + 100).min(text.len())]
        );
    }
}

async fn get(url: String) -> String {
    testkit::text(testkit::http().get(&url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_token_reaches_no_reader_log_trace_or_export() {
    let receiver = Receiver::start().await;
    let lines = Lines::default();
    let writer = lines.clone();
    let telemetry = Arc::new(service_kit::telemetry::init_writing_to(
        "streamshop-test",
        &receiver.log_settings(
            "debug,hyper=info,h2=info,rustls=info,hyper_util=info",
            LogFormat::Json,
        ),
        move || writer.clone(),
    ));
    // A card of its own, so any copy of it can be found.
    let token = format!("tok_ok_{}", Uuid::new_v4().simple());
    let s = Stack::start_all(30).await;
    s.product("SECRET-1", 10).await;
    let customer = Uuid::now_v7();
    let placed = s.post_order(customer, &[("SECRET-1", 2)], &token).await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    clean("the answer to PlaceOrder", &placed.body.to_string(), &token);
    let order = Uuid::parse_str(placed.body["order_id"].as_str().unwrap()).unwrap();
    let saga = s.finished(order).await;
    assert_eq!(saga["outcome"], "confirmed", "{saga}");
    let query = &s.reads[1];
    testkit::eventually(
        Duration::from_secs(20),
        "the confirmed order view",
        || async {
            get(format!("{query}/orders/{order}"))
                .await
                .contains("\"confirmed\"")
                .then_some(())
        },
    )
    .await;

    // Every read API answer about the order.
    for url in [
        format!("{}/sagas/{order}", s.urls[3]),
        format!("{query}/orders/{order}"),
        format!("{query}/customers/{customer}/orders"),
        format!("{query}/payments/{order}"),
        format!("{query}/products/SECRET-1"),
    ] {
        clean(&url, &get(url.clone()).await, &token);
    }

    // Every row of every table of the read database.
    let read = sqlx::PgPool::connect(s.read_db.as_ref().unwrap())
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&read)
    .await
    .unwrap();
    assert!(tables.len() > 5, "{tables:?}");
    for table in tables {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM public.{table} t"
        ))
        .fetch_one(&read)
        .await
        .unwrap();
        clean(&format!("the read table {table}"), &rows, &token);
    }

    // An export as an analyst runs it, and one that asks for the sensitive fields by name:
    // even that one finds only the token sealed under the customer's data key, because the
    // log never held it in clear (the saga confirmed, so payments did open it).
    let dir = std::env::temp_dir().join(format!("streamshop-secrets-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut exported = Vec::new();
    for redact in [true, false] {
        let mut source = s.source();
        source.redact = redact;
        let output = dir.join(format!("export-{redact}.jsonl"));
        let options = ExportOptions::new(Format::Jsonl, output.clone());
        let selection = Selection::everything(BoundedContext::ALL.to_vec());
        export::export(
            &source,
            &selection,
            &options,
            Arc::new(Progress::new("t", true)),
        )
        .await
        .unwrap();
        exported.push(std::fs::read_to_string(&output).unwrap());
    }
    clean("an export", &exported[0], &token);
    assert!(exported[0].contains(contracts::sensitive::REDACTED));
    clean("an export with the sensitive fields", &exported[1], &token);
    assert!(
        exported[1].contains(&format!(
            "\"payment_token\":\"{}",
            service_kit::sealing::SCHEME
        )),
        "an export that asks for sensitive fields has the sealed token"
    );

    // Every log line and every exported span of the run.
    let flushing = telemetry.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
    let logged = lines.text();
    assert!(
        logged.contains(&order.to_string()),
        "the saga's log lines were captured"
    );
    clean("a log line", &logged, &token);
    let spans = receiver.spans();
    assert!(spans.len() > 20, "the saga's spans were exported");
    for span in spans {
        for (key, value) in &span.attributes {
            clean(
                &format!("the attribute {key} of span {}", span.name),
                value,
                &token,
            );
        }
    }
}
