//! A channel delivers one message to one destination and says how it went: webhooks
//! (here) and email (`crate::email`); SMS and push would be channels beside them, each with
//! its own destination, recorded by the same consumer and retried with the same backoff.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::guard::Guard;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken: the receiver answered 2xx.
    Delivered { status: u16 },
    /// Not taken: the receiver's answer, or why there was none.
    Failed { status: Option<u16>, error: String },
}

/// A way to reach someone.
pub trait Channel: Send + Sync + 'static {
    /// Where one message of this channel goes (a URL and its secrets, an address).
    type Destination: Send + Sync;

    /// Its name in metrics and logs.
    fn name(&self) -> &'static str;

    /// Sends `payload` as message `id` (the same for every attempt, so a receiver drops what
    /// it already has).
    fn deliver<'a>(
        &'a self,
        destination: &'a Self::Destination,
        id: Uuid,
        payload: &'a Value,
    ) -> impl Future<Output = Outcome> + Send + 'a;
}

/// A webhook endpoint as a destination: its URL and the secrets that sign (the current one,
/// and the previous one during a rotation's grace).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub secrets: Vec<String>,
}

/// Signed HTTP POSTs of CloudEvents (Standard Webhooks).
#[derive(Debug, Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    guard: Guard,
}

impl Webhooks {
    /// A client that resolves names through `guard` (so a name that turned private since
    /// registration is refused), follows no redirect to another host, and gives up on an
    /// attempt after `timeout`.
    pub fn new(guard: Guard, timeout: Duration) -> anyhow::Result<Self> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if same_host && attempt.previous().len() < 5 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(guard))
            .redirect(policy)
            .timeout(timeout)
            .user_agent(concat!("streamshop-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, guard })
    }
}

impl Channel for Webhooks {
    type Destination = Endpoint;

    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, endpoint: &Endpoint, id: Uuid, payload: &Value) -> Outcome {
        // A literal address never reaches the resolver: the URL itself is checked here, and a
        // name by the resolver, once per attempt.
        if let Err(refusal) = self.guard.check_before_sending(&endpoint.url) {
            return Outcome::Failed {
                status: None,
                error: format!("refused: {refusal}"),
            };
        }
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let id = id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let secrets: Vec<&str> = endpoint.secrets.iter().map(String::as_str).collect();
        let signature = crate::signing::header(&secrets, &id, timestamp, &body);
        let started = Instant::now();
        let answer = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        metrics::histogram!("webhook_attempt_seconds").record(started.elapsed().as_secs_f64());
        match answer {
            Ok(response) if response.status().is_success() => Outcome::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) => Outcome::Failed {
                status: Some(response.status().as_u16()),
                error: format!("answered {}", response.status()),
            },
            Err(e) => Outcome::Failed {
                status: None,
                error: describe(&e),
            },
        }
    }
}

/// What went wrong with a request, with its causes (a refused address says so).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_redirect() {
        "redirected to another host".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
