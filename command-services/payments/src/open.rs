//! Opens a sealed payment token by asking the orders context, which keeps the customers'
//! data keys (`contracts::keys`): right before the provider needs the token, and nowhere
//! else. A token that was never sealed (an event from before sealing) is used as it is.

use std::time::Duration;

use contracts::keys::{OpenAnswer, OpenRequest};
use domain::payment::BoxFuture;
use domain::sealing::{SealingError, TokenOpener};
use uuid::Uuid;

/// Asks orders over NATS.
pub struct NatsOpener {
    nats: async_nats::Client,
    subject: String,
    timeout: Duration,
}

impl NatsOpener {
    pub fn new(nats: async_nats::Client, subject: String, timeout: Duration) -> Self {
        Self {
            nats,
            subject,
            timeout,
        }
    }

    async fn ask(&self, order_id: Uuid, token: &str) -> Result<String, SealingError> {
        if !service_kit::sealing::is_sealed(token) {
            return Ok(token.to_owned());
        }
        let request = serde_json::to_vec(&OpenRequest {
            order_id,
            token: token.to_owned(),
        })
        .map_err(|e| SealingError::Unavailable(e.to_string()))?;
        let reply = tokio::time::timeout(
            self.timeout,
            self.nats.request(self.subject.clone(), request.into()),
        )
        .await
        .map_err(|_| SealingError::Unavailable("orders did not answer in time".into()))?
        .map_err(|e| SealingError::Unavailable(e.to_string()))?;
        serde_json::from_slice::<OpenAnswer>(&reply.payload)
            .map_err(|e| SealingError::Unavailable(format!("an answer that does not read: {e}")))?
            .opened()
    }
}

impl TokenOpener for NatsOpener {
    fn open<'a>(
        &'a self,
        order_id: Uuid,
        token: &'a str,
    ) -> BoxFuture<'a, Result<String, SealingError>> {
        Box::pin(self.ask(order_id, token))
    }
}
