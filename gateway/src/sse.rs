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
///
/// The saga's completion follows the order's end in the log, but the two come through
/// different relays and may arrive here in either order; a completion that comes first is
/// held until the order's end has been sent (or [`SAGA_GRACE`] has passed), so the client
/// sees them as they happened.
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
    let mut held: Option<(u64, Value)> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            // The client went away: end now, not at the next event, which may never come.
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some((sequence, payload)) = held.take() {
                    send(&tx, &mut position, Source::Saga, sequence, payload).await;
                }
                return;
            }
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
        let (payload, end) = describe(source, &envelope);
        let unseen = envelope.sequence
            > match source {
                Source::Order => position.order,
                Source::Saga => position.saga,
            };
        if end == End::AfterOrder && !order_over && unseen {
            held = Some((envelope.sequence, payload));
            deadline.get_or_insert_with(|| Instant::now() + SAGA_GRACE);
            continue;
        }
        // Replayed from the start: what the client already has is not sent again, but an end
        // among it still ends the stream (a resume after the last event ends at once).
        if unseen && !send(&tx, &mut position, source, envelope.sequence, payload).await {
            return;
        }
        match end {
            End::Order => {
                order_over = true;
                deadline = Some(Instant::now() + SAGA_GRACE);
                if let Some((sequence, payload)) = held.take() {
                    if !send(&tx, &mut position, Source::Saga, sequence, payload).await {
                        return;
                    }
                    saga_over = true;
                }
            }
            End::AfterOrder | End::Saga => saga_over = true,
            End::No => {}
        }
        if order_over && saga_over {
            return;
        }
    }
}

/// Sends one event as the next of its aggregate; false when the client went away.
async fn send(
    tx: &mpsc::Sender<Event>,
    position: &mut Position,
    source: Source,
    sequence: u64,
    payload: Value,
) -> bool {
    match source {
        Source::Order => position.order = sequence,
        Source::Saga => position.saga = sequence,
    }
    let event = Event::default()
        .id(position.id())
        .event(match source {
            Source::Order => "order",
            Source::Saga => "saga",
        })
        .json_data(payload)
        .unwrap_or_default();
    tx.send(event).await.is_ok()
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

/// Whether an event ends its aggregate's part of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    No,
    /// The order's terminal status.
    Order,
    /// The saga's completion, which always follows the order's end.
    AfterOrder,
    /// The saga parked, which the order's end need not precede.
    Saga,
}

/// What a frontend is told of an event, and whether it ends its aggregate. Payment tokens are
/// removed wherever they appear.
fn describe(source: Source, envelope: &Envelope) -> (Value, End) {
    let mut data = envelope.data.clone();
    scrub(&mut data);
    let mut payload = json!({
        "type": envelope.name(),
        "version": envelope.version(),
        "sequence": envelope.sequence,
        "time": envelope.time,
        "data": data,
    });
    let mut end = End::No;
    if source == Source::Order {
        if let Ok(event) = decode::<OrderEvent>(envelope) {
            let status = status_after(&event);
            if matches!(
                status,
                OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::Cancelled
            ) {
                end = End::Order;
            }
            payload["status"] = json!(status);
        }
    } else {
        end = match decode::<SagaEvent>(envelope) {
            Ok(SagaEvent::SagaCompleted { .. }) => End::AfterOrder,
            Ok(SagaEvent::SagaNeedsAttention { .. }) => End::Saga,
            _ => End::No,
        };
    }
    (payload, end)
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

    fn envelope(context: BoundedContext, sequence: u64, payload: Value) -> (Source, Envelope) {
        let (source, aggregate_type) = match context {
            BoundedContext::Orders => (Source::Order, "Order"),
            _ => (Source::Saga, "OrderSaga"),
        };
        let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
        let stored = messaging::envelope::StoredEvent {
            context,
            aggregate_type: aggregate_type.into(),
            aggregate_id: Uuid::nil().to_string(),
            sequence,
            event_type,
            event_version: "1".into(),
            payload,
            correlation_id: None,
            causation_id: None,
            recorded_at: serde_json::from_value(json!("2026-12-07T00:00:00Z")).unwrap(),
        };
        (source, Envelope::from_stored(&stored))
    }

    fn confirmed(sequence: u64) -> (Source, Envelope) {
        let event = OrderEvent::OrderConfirmed {
            order_id: Uuid::nil(),
            total: serde_json::from_value(json!({"amount_minor": 300, "currency": "EUR"})).unwrap(),
        };
        envelope(
            BoundedContext::Orders,
            sequence,
            serde_json::to_value(event).unwrap(),
        )
    }

    fn completed(sequence: u64) -> (Source, Envelope) {
        let event = SagaEvent::SagaCompleted {
            outcome: domain::saga::SagaOutcome::Confirmed,
            at: serde_json::from_value(json!("2026-12-07T00:00:01Z")).unwrap(),
        };
        envelope(
            BoundedContext::Sagas,
            sequence,
            serde_json::to_value(event).unwrap(),
        )
    }

    /// Runs [`forward`] over `items` (then nothing more, as a live stream that waits), and
    /// gives the `id` and `event` lines of what it sent.
    async fn forwarded(items: Vec<(Source, Envelope)>) -> Vec<String> {
        let merged =
            futures::stream::iter(items.into_iter().map(Ok)).chain(futures::stream::pending());
        let (tx, mut rx) = mpsc::channel(16);
        forward(
            Box::pin(merged),
            Position::default(),
            tx,
            CancellationToken::new(),
        )
        .await;
        let mut sent = vec![];
        while let Some(event) = rx.recv().await {
            // The event's bytes as written to the wire, escaped: `id: 3.0\nevent: order\n…`.
            let wire = format!("{event:?}");
            let start = wire.find("id: ").expect("an id");
            sent.push(wire[start..].split("\\ndata").next().unwrap().to_owned());
        }
        sent
    }

    #[tokio::test(start_paused = true)]
    async fn a_saga_completion_that_arrives_first_is_sent_after_the_order_s_end() {
        let sent = forwarded(vec![completed(9), confirmed(3)]).await;
        assert_eq!(
            sent,
            ["id: 3.0\\nevent: order", "id: 3.9\\nevent: saga"],
            "{sent:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_completion_is_sent_when_the_order_s_end_never_comes() {
        let started = Instant::now();
        let sent = forwarded(vec![completed(9)]).await;
        assert_eq!(sent, ["id: 0.9\\nevent: saga"], "{sent:?}");
        assert!(started.elapsed() >= SAGA_GRACE);
    }

    #[test]
    fn tokens_are_scrubbed_at_any_depth() {
        let mut v =
            json!({"payment_token": "tok_ok", "lines": [{"payment_token": "x", "sku": "A"}]});
        scrub(&mut v);
        assert_eq!(v, json!({"lines": [{"sku": "A"}]}));
    }
}
