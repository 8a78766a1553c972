//! `GET /api/orders/{id}/events`: an order's status changes and its saga's steps as
//! Server-Sent Events, read from JetStream (the order's and the saga's subjects, each through
//! an ordered consumer), resumable from `Last-Event-ID`, ending after the order's terminal
//! event.
//!
//! An event's id is `<order sequence>.<saga sequence>`: the last event of each aggregate the
//! client has been sent. Both aggregates' events are in order within their own subjects, so
//! resuming skips exactly what was sent, whatever the interleaving of the two.

use std::convert::Infallible;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use axum::response::sse::Event;
use contracts::events::decode;
use domain::order::{OrderEvent, OrderStatus};
use futures::{Stream, StreamExt};
use messaging::{BoundedContext, Envelope, Namespace};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiError;

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

/// The order's events after `from`, live, as SSE events; ends after the order's terminal
/// event, on a JetStream error (the client resumes from its last id) or at `stop`.
pub async fn order_events(
    js: &async_nats::jetstream::Context,
    ns: &Namespace,
    order: Uuid,
    from: Position,
    stop: CancellationToken,
) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
    let orders = follow(js, ns, BoundedContext::Orders, order, Source::Order).await?;
    let sagas = follow(js, ns, BoundedContext::Sagas, order, Source::Saga).await?;
    let merged = futures::stream::select(orders, sagas);
    let mut position = from;
    let events = merged
        .filter_map(move |item| {
            let out = match item {
                Err(e) => {
                    tracing::warn!(error = %e, "an order's live stream broke off; the client resumes");
                    Some(None)
                }
                Ok((source, envelope)) => {
                    let seen = match source {
                        Source::Order => &mut position.order,
                        Source::Saga => &mut position.saga,
                    };
                    if envelope.sequence <= *seen {
                        None
                    } else {
                        *seen = envelope.sequence;
                        let (payload, terminal) = describe(source, &envelope);
                        Some(Some((position, source, payload, terminal)))
                    }
                }
            };
            async move { out }
        })
        // `None` marks a broken stream: end there.
        .take_while(|item| {
            let go_on = item.is_some();
            async move { go_on }
        })
        .filter_map(|item| async move { item })
        .scan(false, |done, (position, source, payload, terminal)| {
            if *done {
                return futures::future::ready(None);
            }
            *done = terminal;
            let event = Event::default()
                .id(position.id())
                .event(match source {
                    Source::Order => "order",
                    Source::Saga => "saga",
                })
                .json_data(payload)
                .unwrap_or_default();
            futures::future::ready(Some(Ok(event)))
        })
        .take_until(stop.cancelled_owned());
    Ok(events)
}

/// The events of one aggregate, from its first, then live.
async fn follow(
    js: &async_nats::jetstream::Context,
    ns: &Namespace,
    context: BoundedContext,
    order: Uuid,
    source: Source,
) -> Result<impl Stream<Item = Result<(Source, Envelope), String>>, ApiError> {
    let unavailable = |e: String| ApiError::Unavailable {
        upstream: "nats",
        why: e,
        retry_after_secs: 1,
    };
    let stream = js
        .get_stream_no_info(ns.stream(context))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: ns.aggregate_events_filter(context, &order.to_string()),
            deliver_policy: DeliverPolicy::All,
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(messages.map(move |message| {
        let message = message.map_err(|e| e.to_string())?;
        let envelope = Envelope::from_slice(&message.payload).map_err(|e| e.to_string())?;
        Ok((source, envelope))
    }))
}

/// What a frontend is told of an event, and whether it ends the order. Payment tokens are
/// removed wherever they appear.
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
