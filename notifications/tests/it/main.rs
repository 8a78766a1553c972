//! The notification service against real Postgres, real JetStream and real HTTP receivers:
//! webhook deliveries verified with the Standard Webhooks reference library, retries and
//! pauses, the address guard, and the operators' API.

mod api;
mod kill;
mod restore;
mod webhooks;

/// An order's events as the saga makes them, in sequence.
pub const LIFE: [&str; 3] = ["OrderPlaced", "OrderPriced", "OrderConfirmed"];

use std::time::Duration;

use chrono::Utc;
use messaging::envelope::StoredEvent;
use messaging::streams::{ensure_stream, StreamSettings};
use messaging::{BoundedContext, Envelope};
use serde_json::{json, Value};
use service_kit::env::Env;
use testkit::world::World;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A notification service on a fresh database and namespace (with an `ORDERS` stream),
/// ready: its consumer is made, so every event published from now on is read.
pub struct Service {
    pub world: World,
    pub url: String,
    pub stop: CancellationToken,
}

impl Service {
    /// Started with short waits and backoffs, sending to the tests' private receivers unless
    /// `extra` says otherwise.
    pub async fn start(extra: &[(&'static str, &str)]) -> Self {
        let world = world().await;
        let mut env = world.env();
        for (name, value) in [
            ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true"),
            ("WEBHOOK_BACKOFF_BASE_MS", "200"),
            ("WEBHOOK_POLL_INTERVAL_MS", "50"),
            ("NOTIFY_FETCH_WAIT_MS", "200"),
            ("NOTIFY_RETRY_DELAY_MS", "100"),
        ]
        .iter()
        .chain(extra)
        {
            env.retain(|(k, _)| k != name);
            env.push((name, (*value).to_owned()));
        }
        let settings = notifications::Settings::from_env(&Env::from_pairs(env)).unwrap();
        let app = notifications::App::build(&settings).await.unwrap();
        let url = app.url();
        let stop = CancellationToken::new();
        tokio::spawn(app.run(stop.clone()));
        testkit::eventually(Duration::from_secs(30), "the service is ready", || async {
            let ready = testkit::get(format!("{url}/readyz")).await;
            (ready.status() == 200).then_some(())
        })
        .await;
        Self { world, url, stop }
    }

    /// `POST /webhooks`: the endpoint and its secret.
    pub async fn register(&self, url: &str, event_types: &[&str]) -> (Uuid, String) {
        register(&self.url, url, event_types).await
    }

    /// A call to the API: the status and the JSON body (`Null` when there is none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.url, method, path, body).await
    }

    /// The endpoint's delivery of an order's first event.
    pub async fn first_delivery(&self, endpoint: Uuid) -> Value {
        let (status, list) = self
            .call("GET", &format!("/webhooks/{endpoint}/deliveries"), None)
            .await;
        assert_eq!(status, 200, "{list}");
        let items = list["items"].as_array().expect("items");
        let first = items.iter().find(|d| d["sequence"] == 1);
        first
            .cloned()
            .unwrap_or_else(|| panic!("no first delivery: {list}"))
    }

    /// Publishes an order's event where the orders service's relay would.
    pub async fn publish(&self, order: Uuid, sequence: u64, event_type: &str) {
        self.world
            .publish(&order_event(order, sequence, event_type))
            .await;
    }
}

/// A fresh notifications database and a namespace with an `ORDERS` stream.
pub async fn world() -> World {
    let world = World::with_schema("notifications", &notifications::SCHEMA).await;
    ensure_stream(
        &world.js,
        &world.ns,
        BoundedContext::Orders,
        &StreamSettings::default(),
    )
    .await
    .unwrap();
    world
}

/// A call to the API at `base`: the status and the JSON body (`Null` when there is none).
pub async fn call(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = testkit::http().request(method, format!("{base}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /webhooks` at `base`: the endpoint and its secret.
pub async fn register(base: &str, url: &str, event_types: &[&str]) -> (Uuid, String) {
    let body = json!({"url": url, "event_types": event_types});
    let (status, body) = call(base, "POST", "/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().parse().unwrap(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An event of `order`: an `OrderPlaced` (with a payment token and an address, which no
/// partner may see) at sequence 1, else `{"order_id"}` under `event_type`.
pub fn order_event(order: Uuid, sequence: u64, event_type: &str) -> Envelope {
    let (version, payload) = if event_type == "OrderPlaced" {
        let placed = domain::order::OrderPlaced {
            order_id: order,
            customer_id: Uuid::now_v7(),
            lines: vec![testkit::fixtures::line("SKU-1", 2)],
            payment_token: Some("sealed-token-partners-never-see".into()),
            email: Some("sealed-address-partners-never-see".into()),
            placed_at: Utc::now(),
        };
        (
            domain::order::ORDER_PLACED_VERSION,
            serde_json::to_value(placed).unwrap(),
        )
    } else {
        ("1", json!({"order_id": order}))
    };
    Envelope::from_stored(&StoredEvent {
        context: BoundedContext::Orders,
        aggregate_type: "Order".into(),
        aggregate_id: order.to_string(),
        sequence,
        event_type: event_type.into(),
        event_version: version.into(),
        payload,
        correlation_id: Some(order.to_string()),
        causation_id: None,
        recorded_at: Utc::now(),
    })
}
