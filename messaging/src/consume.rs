//! The durable-consumer loop every JetStream reader shares (the projection workers and the
//! orchestrator's inputs): fetch a batch without spinning when idle, count redeliveries, and
//! settle each message (ack, nak with delay, or terminate) after the work is done.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;

/// A pull request that failed: the consumer may be gone, or the server unreachable.
#[derive(Debug, thiserror::Error)]
#[error("fetching from JetStream failed: {0}")]
pub struct FetchError(String);

impl FetchError {
    pub fn new(why: String) -> Self {
        Self(why)
    }
}

/// Up to `size` messages. What is there is taken at once; when nothing is, the request waits
/// (up to `wait`) for the next message and then takes what else arrived, instead of asking
/// again at once: `fetch` alone never waits, and an idle reader would spin on the server.
pub async fn fetch(
    consumer: &PullConsumer,
    size: usize,
    wait: Duration,
) -> Result<Vec<Message>, FetchError> {
    let mut messages = collect(
        consumer
            .fetch()
            .max_messages(size)
            .expires(wait)
            .messages()
            .await,
    )
    .await?;
    if messages.is_empty() {
        messages = collect(
            consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await,
        )
        .await?;
        if !messages.is_empty() && size > 1 {
            let more = consumer
                .fetch()
                .max_messages(size - 1)
                .expires(wait)
                .messages()
                .await;
            add_more(&mut messages, more).await;
        }
    }
    Ok(messages)
}

/// As [`fetch`], and then, when the batch is not full, waits `linger` once and takes what
/// else arrived meanwhile: for a reader off the critical path, a few milliseconds that let
/// the events of a light load share one transaction (and one pull request) instead of
/// costing one each. A `linger` of zero is [`fetch`].
pub async fn fetch_lingering(
    consumer: &PullConsumer,
    size: usize,
    wait: Duration,
    linger: Duration,
) -> Result<Vec<Message>, FetchError> {
    let mut messages = fetch(consumer, size, wait).await?;
    if messages.is_empty() || messages.len() >= size || linger.is_zero() {
        return Ok(messages);
    }
    tokio::time::sleep(linger).await;
    let more = consumer
        .fetch()
        .max_messages(size - messages.len())
        .messages()
        .await;
    add_more(&mut messages, more).await;
    Ok(messages)
}

/// Adds a further pull request's messages to `messages`: what already arrived is handled even
/// if that request fails.
async fn add_more(messages: &mut Vec<Message>, more: Result<pull::Batch, pull::BatchError>) {
    match collect(more).await {
        Ok(more) => messages.extend(more),
        Err(e) => tracing::warn!(error = %e, kept = messages.len(), "a pull request failed"),
    }
}

/// Reads a pull request's messages to the end. An error after some messages keeps those (they
/// are handled and settled now, not left to wait out the ack wait); an error before any is
/// the fetch's error.
async fn collect(batch: Result<pull::Batch, pull::BatchError>) -> Result<Vec<Message>, FetchError> {
    let mut batch = batch.map_err(|e| FetchError(e.to_string()))?;
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => messages.push(message),
            Err(e) if messages.is_empty() => return Err(FetchError(e.to_string())),
            Err(e) => {
                tracing::warn!(error = %e, kept = messages.len(), "a pull request ended early");
                break;
            }
        }
    }
    Ok(messages)
}

/// Counts the message in `consumer_redeliveries_total` when this is not its first delivery.
pub fn note_delivery(message: &Message, consumer: &str) {
    if message.info().is_ok_and(|info| info.delivered > 1) {
        metrics::counter!("consumer_redeliveries_total", "consumer" => consumer.to_owned())
            .increment(1);
    }
}

/// Acks, naks or terminates `message`; a terminated one is counted in
/// `consumer_dead_letters_total`. A failed settle is only logged: the server redelivers
/// after the ack wait, and every reader is idempotent by (aggregate, sequence).
pub async fn settle(message: &Message, kind: AckKind, consumer: &str) {
    if matches!(kind, AckKind::Term) {
        metrics::counter!("consumer_dead_letters_total", "consumer" => consumer.to_owned())
            .increment(1);
    }
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(consumer, error = %service_kit::problem::ErrorChain(&*e), "ack failed");
    }
}
