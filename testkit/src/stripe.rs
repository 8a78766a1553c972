//! A real Stripe-compatible server for a test: localstripe
//! (`command-services/payments/local-stripe/run.py`) in a child process on a free port, and the
//! payments settings that point the Stripe adapter at it. Its own API lists what it recorded,
//! so a test compares that with the read model.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

/// A running server.
pub struct LocalStripe {
    _child: Child,
    pub url: String,
    /// Any `sk_test_` key is accepted; this one is the test's.
    pub key: String,
    http: reqwest::Client,
}

/// Where `cargo xtask test` installed localstripe.
fn python_path() -> String {
    crate::infra().stripe_python_path.clone().expect(
        "STREAMSHOP_TEST_STRIPE_PYTHONPATH names where localstripe is installed: run the tests with `cargo xtask test`",
    )
}

impl LocalStripe {
    /// Starts a server and waits until it answers.
    pub async fn start() -> Self {
        let port = crate::free_port();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../command-services/payments/local-stripe/run.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .env("PYTHONPATH", python_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start python3 run.py (localstripe)");
        let stripe = Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            key: format!("sk_test_{}", uuid::Uuid::new_v4().simple()),
            http: reqwest::Client::new(),
        };
        crate::eventually(Duration::from_secs(30), "localstripe to start", || async {
            stripe.get("/v1/payment_intents").await.ok().map(|_| ())
        })
        .await;
        stripe
    }

    /// The payments settings that make the service speak to this server.
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("PAYMENT_PROVIDER", "stripe".into()),
            ("STRIPE_API_BASE", self.url.clone()),
            ("STRIPE_SECRET_KEY", self.key.clone()),
        ]
    }

    /// `GET path` of the API, its JSON; `Err` on a failure status.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    /// `POST path` with a form, its JSON.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .form(form)
            .send()
            .await
            .expect("localstripe answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "POST {path}: {status}: {body}");
        body
    }

    /// Every PaymentIntent the server holds whose `metadata[order_id]` is `order_id`.
    pub async fn intents_of(&self, order_id: uuid::Uuid) -> Vec<Value> {
        let list = self
            .get("/v1/payment_intents?limit=100")
            .await
            .expect("list PaymentIntents");
        list["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|pi| pi["metadata"]["order_id"].as_str() == Some(&order_id.to_string()))
            .collect()
    }

    /// The refunds of an intent.
    pub async fn refunds_of(&self, intent: &str) -> Vec<Value> {
        self.get(&format!("/v1/refunds?payment_intent={intent}"))
            .await
            .expect("list refunds")["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
