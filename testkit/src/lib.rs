//! Test harness on real infrastructure: every test gets fresh Postgres databases and its own
//! NATS namespace (stream names and subjects), so tests run in parallel without sharing state.
//!
//! The infrastructure is the test Postgres cluster and NATS server that `cargo xtask test`
//! starts; their addresses come from `STREAMSHOP_TEST_PG_URL` and `STREAMSHOP_TEST_NATS_URL`.
#![forbid(unsafe_code)]

pub mod fixtures;
pub mod front;
pub mod gate;
pub mod oidc;
pub mod otlp;
pub mod process;
pub mod schemas;
pub mod stack;
pub mod world;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use messaging::Namespace;
use sqlx::{Connection, PgConnection};

/// Where the test infrastructure listens unless the environment says otherwise; these are the
/// ports `cargo xtask test` uses.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:25433/postgres";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:24223";

/// Addresses of the shared test infrastructure.
#[derive(Debug, Clone)]
pub struct Infra {
    pub pg_admin_url: String,
    pub nats_url: String,
    /// Where the test command installed the analysts' Python packages (nats-py, pyarrow).
    pub python_path: Option<String>,
}

/// The test infrastructure, read once from the environment.
pub fn infra() -> &'static Infra {
    static INFRA: OnceLock<Infra> = OnceLock::new();
    INFRA.get_or_init(|| {
        let env = runtime::env::Env::from_process();
        Infra {
            pg_admin_url: env.string_or("STREAMSHOP_TEST_PG_URL", DEFAULT_PG_URL),
            nats_url: env.string_or("STREAMSHOP_TEST_NATS_URL", DEFAULT_NATS_URL),
            python_path: env.get("STREAMSHOP_TEST_PYTHONPATH").map(str::to_owned),
        }
    })
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Creates an empty database named after `label` and returns its URL.
pub async fn fresh_database(label: &str) -> String {
    let infra = infra();
    let name = format!("t_{label}_{}", unique_suffix());
    let mut admin = PgConnection::connect(&infra.pg_admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the test Postgres at {} is not reachable ({e}); run the tests with `cargo xtask test`",
                runtime::secret::redact_url(&infra.pg_admin_url)
            )
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = infra
        .pg_admin_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .expect("the admin URL names a database");
    format!("{base}/{name}")
}

/// A namespace no other test uses.
pub fn unique_namespace() -> Namespace {
    Namespace::new(&format!("t{}", unique_suffix())).expect("valid namespace")
}

/// A connection to the test NATS server.
pub async fn nats() -> async_nats::Client {
    let url = &infra().nats_url;
    async_nats::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "the test NATS at {url} is not reachable ({e}); run the tests with `cargo xtask test`"
        )
    })
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for child processes.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl StoredMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every message of a stream, in stream order (empty when the stream does not exist).
pub async fn read_stream(js: &async_nats::jetstream::Context, stream: &str) -> Vec<StoredMessage> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return vec![];
    };
    let info = s.info().await.expect("stream info");
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first..=last {
        if last == 0 {
            break;
        }
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        let headers = m
            .headers
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_owned()))
            })
            .collect();
        out.push(StoredMessage {
            sequence: m.sequence,
            subject: m.subject.to_string(),
            headers,
            payload: m.payload.to_vec(),
        });
    }
    out
}

/// `GET url` and its JSON body (`Null` when there is none).
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or(serde_json::Value::Null)
}
