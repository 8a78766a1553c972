//! Who placed an order, read from the order's `OrderPlaced` event in JetStream: the log is
//! the truth, and it answers as soon as the relay has published, without waiting for a
//! projection.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use contracts::events::decode;
use domain::order::OrderEvent;
use messaging::{BoundedContext, Envelope, Namespace};
use uuid::Uuid;

use crate::error::ApiError;

/// Owners looked up so far are kept: an order's customer never changes.
const CACHED: usize = 100_000;

pub struct Owners {
    js: async_nats::jetstream::Context,
    ns: Namespace,
    known: Mutex<HashMap<Uuid, Uuid>>,
}

impl Owners {
    pub fn new(js: async_nats::jetstream::Context, ns: Namespace) -> Self {
        Self {
            js,
            ns,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The customer who placed `order`, or `None` when no such order is in the log.
    pub async fn owner_of(&self, order: Uuid) -> Result<Option<Uuid>, ApiError> {
        if let Some(owner) = self.lock().get(&order) {
            return Ok(Some(*owner));
        }
        let stream = self
            .js
            .get_stream_no_info(self.ns.stream(BoundedContext::Orders))
            .await
            .map_err(|e| anyhow::anyhow!(e).context("opening the orders stream"))?;
        let subject =
            self.ns
                .event_subject(BoundedContext::Orders, &order.to_string(), "OrderPlaced");
        let message = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => {
                return Err(ApiError::Unavailable {
                    upstream: "nats",
                    why: e.to_string(),
                    retry_after_secs: 1,
                })
            }
        };
        let envelope = Envelope::from_slice(&message.payload)
            .map_err(|e| anyhow::anyhow!(e).context("reading an OrderPlaced envelope"))?;
        let OrderEvent::OrderPlaced(placed) = decode::<OrderEvent>(&envelope)
            .map_err(|e| anyhow::anyhow!(e).context("decoding an OrderPlaced event"))?
        else {
            return Err(anyhow::anyhow!("{subject} holds another event type").into());
        };
        let mut known = self.lock();
        if known.len() >= CACHED {
            known.clear();
        }
        known.insert(order, placed.customer_id);
        Ok(Some(placed.customer_id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Uuid>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
