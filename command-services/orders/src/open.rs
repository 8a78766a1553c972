//! Opens a sealed value for the one context that needs it: the payment token for payments
//! (NATS request/reply on `keys.orders.open`), the email address for notifications (on
//! `keys.orders.email`). Only that context may send to its subject and only orders may take
//! it (the NATS permissions); a value sealed as the other field does not open. The answer
//! goes back on the asker's own reply subject, which nobody else may read.

use std::sync::Arc;

use contracts::keys::{OpenAnswer, OpenRequest};
use domain::sealing::Field;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::keys::CustomerKeys;

/// Requests opened at once, at most.
const CONCURRENCY: usize = 64;

/// Serves `subject`, opening `field` (a queue group shared by the replicas) until `shutdown`;
/// requests in hand are answered.
pub async fn serve(
    keys: CustomerKeys,
    nats: async_nats::Client,
    subject: String,
    field: Field,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut requests = nats
        .queue_subscribe(subject.clone(), "orders".into())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {subject}: {e}"))?;
    let places = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut in_hand = tokio::task::JoinSet::new();
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let place = places.clone().acquire_owned().await?;
        let (keys, nats) = (keys.clone(), nats.clone());
        in_hand.spawn(async move {
            let answer = match serde_json::from_slice::<OpenRequest>(&message.payload) {
                Err(_) => OpenAnswer::Invalid,
                Ok(request) => match keys.open(request.order_id, field, &request.token).await {
                    Ok(token) => OpenAnswer::Token(token),
                    Err(domain::sealing::SealingError::Erased) => OpenAnswer::Erased,
                    Err(domain::sealing::SealingError::Invalid) => OpenAnswer::Invalid,
                    Err(domain::sealing::SealingError::Unavailable(why)) => {
                        tracing::warn!(%why, field = field.name(), "a sealed value could not be opened");
                        OpenAnswer::Unavailable
                    }
                },
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = nats.publish(reply, body.into()).await {
                tracing::warn!(error = %e, "answering an open request failed");
            }
            drop(place);
        });
        while in_hand.try_join_next().is_some() {}
    }
    while in_hand.join_next().await.is_some() {}
    Ok(())
}
