//! A partner's webhook receiver for the notification service's tests: a real HTTP server that records every request and answers as
//! the test tells it (200, a number of 500s first, or never), and the check of its deliveries
//! with the Standard Webhooks reference library.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Ok,
    /// 500 to the first this many requests, then 200.
    FailFirst(usize),
    /// Never: the request hangs until the sender gives up.
    Never,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub id: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Inner {
    answer: Answer,
    got: Vec<Got>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            answer,
            got: Vec::new(),
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    /// Every request so far, in arrival order.
    pub fn got(&self) -> Vec<Got> {
        self.inner.lock().unwrap().got.clone()
    }

    /// The requests answered 2xx, once per `webhook-id` (a resent one is dropped, as a
    /// partner drops it).
    pub fn taken(&self) -> Vec<Got> {
        let inner = self.inner.lock().unwrap();
        let fails = match inner.answer {
            Answer::FailFirst(n) => n,
            Answer::Ok => 0,
            Answer::Never => usize::MAX,
        };
        let mut seen = std::collections::HashSet::new();
        inner
            .got
            .iter()
            .skip(fails.min(inner.got.len()))
            .filter(|g| seen.insert(g.id.clone()))
            .cloned()
            .collect()
    }

    /// Waits for the first request, whatever it was answered.
    pub async fn wait_for_request(&self, within: Duration) -> Got {
        crate::eventually(within, &format!("a request at {}", self.url), || async {
            self.got().first().cloned()
        })
        .await
    }

    /// Waits until `n` deliveries were taken.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        crate::eventually(
            within,
            &format!("{n} deliveries at {}", self.url),
            || async {
                let taken = self.taken();
                (taken.len() >= n).then_some(taken)
            },
        )
        .await
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = {
        let mut inner = inner.lock().unwrap();
        let seen = inner.got.len();
        inner.got.push(Got {
            at: Instant::now(),
            id: headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body,
        });
        match inner.answer {
            Answer::Ok => Some(StatusCode::OK),
            Answer::FailFirst(n) if seen < n => Some(StatusCode::INTERNAL_SERVER_ERROR),
            Answer::FailFirst(_) => Some(StatusCode::OK),
            Answer::Never => None,
        }
    };
    match answer {
        Some(status) => status,
        None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

/// The CloudEvent types delivered for the order `order`, in arrival order.
pub fn types_for(deliveries: &[Got], order: &str) -> Vec<String> {
    deliveries
        .iter()
        .map(Got::json)
        .filter(|e| e["subject"] == order)
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Verifies each delivery with the `standardwebhooks` package from PyPI, signed by `secret`;
/// the webhook-ids it verified, in order.
pub async fn verify_with_the_reference_library(deliveries: &[Got], secret: &str) -> Vec<String> {
    let python_path = crate::infra().python_path.clone().expect(
        "STREAMSHOP_TEST_PYTHONPATH: run the tests with `cargo xtask test`, which installs standardwebhooks",
    );
    let file = std::env::temp_dir().join(format!("webhooks-{}.json", uuid::Uuid::new_v4()));
    let items: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "secret": secret,
                "headers": d.headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
                "body": base64::engine::general_purpose::STANDARD.encode(&d.body),
            })
        })
        .collect();
    std::fs::write(&file, serde_json::to_vec(&items).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../notifications/verify.py");
    let out = crate::stdout_of(
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(&file)
            .env("PYTHONPATH", python_path),
        "verify.py (standardwebhooks)",
    )
    .await;
    let _ = std::fs::remove_file(&file);
    out.lines().map(str::to_owned).collect()
}
