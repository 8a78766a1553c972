//! `GET /api/orders/{id}/events`: an order's status changes and its saga's steps as
//! Server-Sent Events, read from JetStream (the order's and the saga's subjects, each through
//! an ordered consumer), resumable from `Last-Event-ID`, ending after the order's terminal
//! event (and its saga's last).
//!
//! An event's id is `<order sequence>.<saga sequence>`: the last event of each aggregate the
//! client has been sent. Both aggregates' events are in order within their own subjects, so
//! resuming skips exactly what was sent, whatever the interleaving of the two.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use axum::response::sse::Event;
use contracts::events::decode;
use domain::order::{OrderEvent, OrderStatus};
use domain::saga::SagaEvent;
use futures::{Stream, StreamExt};
use messaging::{BoundedContext, Envelope, Namespace};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiError;
use crate::streams::Slot;

/// How far a client has read: the last sequence of the order and of its saga.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub order: u64,
    pub saga: u64,
}

impl Position {
    /// Reads a `Last-Event-ID`; `None` when it is not one this stream sent.
    pub fn parse(id: &str) -> Option<Self> {
        let (order, saga) = id.trim().split_once('.')?;
        Some(Self {
            order: order.parse().ok()?,
            saga: saga.parse().ok()?,
        })
    }

    pub fn id(self) -> String {
        format!("{}.{}", self.order, self.saga)
    }
}

/// Which aggregate an event is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Order,
    Saga,
}

/// After the order's terminal event, how long its saga may take to finish (its last steps
/// and `SagaCompleted` come after the order's confirmation) before the stream ends anyway.
const SAGA_GRACE: Duration = Duration::from_secs(5);

/// The order's events after `from`, live, as SSE events. The stream ends once the order has
/// ended and its saga has too (or [`SAGA_GRACE`] after the order ended), on a JetStream error
/// (the client resumes from its last id), when the client goes away, or at `stop`.
pub async fn order_events(
    js: &async_nats::jetstream::Context,
    ns: &Namespace,
    order: Uuid,
    from: Position,
    slot: Slot,
    stop: CancellationToken,
) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
    let (stored_order, orders) =
        follow(js, ns, BoundedContext::Orders, order, Source::Order).await?;
    let (stored_saga, sagas) = follow(js, ns, BoundedContext::Sagas, order, Source::Saga).await?;
    // Each aggregate's sequences run 1, 2, …: a resume point past what is stored was never
    // sent by this stream, and waiting for it would hold the stream open for ever.
    if from.order > stored_order || from.saga > stored_saga {
        return Err(ApiError::BadRequest(format!(
            "Last-Event-ID {} is past this order's events ({}.{})",
            from.id(),
            stored_order,
            stored_saga
        )));
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        forward(futures::stream::select(orders, sagas), from, tx, stop).await;
        // The caller's place is freed once the stream is over.
        drop(slot);
    });
    Ok(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    }))
}

/// Sends each event not yet seen to `tx` until the stream is over (see [`order_events`]).
async fn forward(
    mut merged: impl Stream<Item = Result<(Source, Envelope), String>> + Unpin,
    from: Position,
    tx: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let mut position = from;
    let mut order_over = false;
    let mut saga_over = false;
    let mut deadline: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            // The client went away: end now, not at the next event, which may never come.
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => return,
            next = merged.next() => next,
        };
        let (source, envelope) = match next {
            Some(Ok(item)) => item,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "an order's live stream broke off; the client resumes");
                return;
            }
            None => return,
        };
        let seen = match source {
            Source::Order => &mut position.order,
            Source::Saga => &mut position.saga,
        };
        let (payload, ends) = describe(source, &envelope);
        // Replayed from the start: what the client already has is not sent again, but an end
        // among it still ends the stream (a resume after the last event ends at once).
        if envelope.sequence > *seen {
            *seen = envelope.sequence;
            let event = Event::default()
                .id(position.id())
                .event(match source {
                    Source::Order => "order",
                    Source::Saga => "saga",
                })
                .json_data(payload)
                .unwrap_or_default();
            if tx.send(event).await.is_err() {
                // The client went away.
                return;
            }
        }
        match source {
            Source::Order if ends => {
                order_over = true;
                deadline = Some(Instant::now() + SAGA_GRACE);
            }
            Source::Saga if ends => saga_over = true,
            _ => {}
        }
        if order_over && saga_over {
            return;
        }
    }
}

/// How many events of one aggregate are stored now, and its events from its first, then live.
async fn follow(
    js: &async_nats::jetstream::Context,
    ns: &Namespace,
    context: BoundedContext,
    order: Uuid,
    source: Source,
) -> Result<(u64, impl Stream<Item = Result<(Source, Envelope), String>>), ApiError> {
    let unavailable = |e: String| ApiError::Unavailable {
        upstream: "nats",
        why: e,
        retry_after_secs: 1,
    };
    let stream = js
        .get_stream_no_info(ns.stream(context))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let consumer = messaging::streams::ordered_consumer(
        &stream,
        messaging::Identity::GATEWAY.name(),
        OrderedConfig {
            filter_subject: ns.aggregate_events_filter(context, &order.to_string()),
            deliver_policy: DeliverPolicy::All,
            ..OrderedConfig::default()
        },
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    let stored = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok((
        stored,
        messages.map(move |message| {
            let message = message.map_err(|e| e.to_string())?;
            let envelope = Envelope::from_slice(&message.payload).map_err(|e| e.to_string())?;
            Ok((source, envelope))
        }),
    ))
}

/// What a frontend is told of an event, and whether it ends its aggregate (the order's
/// terminal status, or the saga's completion or parking). Payment tokens are removed
/// wherever they appear.
fn describe(source: Source, envelope: &Envelope) -> (Value, bool) {
    let mut data = envelope.data.clone();
    scrub(&mut data);
    let mut payload = json!({
        "type": envelope.name(),
        "version": envelope.version(),
        "sequence": envelope.sequence,
        "time": envelope.time,
        "data": data,
    });
    let mut terminal = false;
    if source == Source::Order {
        if let Ok(event) = decode::<OrderEvent>(envelope) {
            let status = status_after(&event);
            terminal = matches!(
                status,
                OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::Cancelled
            );
            payload["status"] = json!(status);
        }
    } else {
        terminal = matches!(
            decode::<SagaEvent>(envelope),
            Ok(SagaEvent::SagaCompleted { .. } | SagaEvent::SagaNeedsAttention { .. })
        );
    }
    (payload, terminal)
}

/// The order's status once `event` has happened.
fn status_after(event: &OrderEvent) -> OrderStatus {
    match event {
        OrderEvent::OrderPlaced(_) => OrderStatus::Placed,
        OrderEvent::OrderPriced { .. } => OrderStatus::Priced,
        OrderEvent::OrderConfirmed { .. } => OrderStatus::Confirmed,
        OrderEvent::OrderRejected { .. } => OrderStatus::Rejected,
        OrderEvent::OrderCancelled { .. } => OrderStatus::Cancelled,
    }
}

/// Removes every `payment_token` field: it never leaves the write side.
pub fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("payment_token");
            map.values_mut().for_each(scrub);
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_garbage_is_refused() {
        let p = Position { order: 4, saga: 11 };
        assert_eq!(Position::parse(&p.id()), Some(p));
        assert_eq!(Position::parse("4"), None);
        assert_eq!(Position::parse("a.b"), None);
        assert_eq!(Position::parse("-1.2"), None);
    }

    #[test]
    fn tokens_are_scrubbed_at_any_depth() {
        let mut v =
            json!({"payment_token": "tok_ok", "lines": [{"payment_token": "x", "sku": "A"}]});
        scrub(&mut v);
        assert_eq!(v, json!({"lines": [{"sku": "A"}]}));
    }
}
