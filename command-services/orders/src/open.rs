//! Opens a sealed payment token for the payments context, which needs it for the provider:
//! NATS request/reply on `keys.orders.open`, which only payments may send to and only orders
//! may take (the NATS permissions). The answer goes back on payments' own reply subject,
//! which nobody else may read.

use std::sync::Arc;

use contracts::keys::{OpenAnswer, OpenRequest};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::keys::CustomerKeys;

/// Requests opened at once, at most.
const CONCURRENCY: usize = 64;

/// Serves `subject` (a queue group shared by the replicas) until `shutdown`; requests in hand
/// are answered.
pub async fn serve(
    keys: CustomerKeys,
    nats: async_nats::Client,
    subject: String,
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
                Ok(request) => match keys.open_token(request.order_id, &request.token).await {
                    Ok(token) => OpenAnswer::Token(token),
                    Err(domain::sealing::SealingError::Erased) => OpenAnswer::Erased,
                    Err(domain::sealing::SealingError::Invalid) => OpenAnswer::Invalid,
                    Err(domain::sealing::SealingError::Unavailable(why)) => {
                        tracing::warn!(%why, "a sealed token could not be opened");
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
