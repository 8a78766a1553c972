//! The NATS face of a context's commands: a queue-group subscription on
//! `cmd.<context>.*` (replicas share the load), request/reply, never captured by a stream.
//!
//! The request body is the command's JSON object plus a required `command_id`, which is the
//! idempotency key: a repeated command id gets the first answer.

use std::sync::Arc;

use async_nats::{Client, Message};
use futures::StreamExt;
use messaging::Namespace;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dispatch::{Dispatcher, Request};
use crate::spec::CommandSpec;
use contracts::{reasons, Reply};

/// Commands that may wait for a handler, per handler.
const WAITING_PER_PERMIT: usize = 16;

/// Serves commands until `shutdown`, then finishes the ones in hand.
pub async fn serve<S>(
    client: Client,
    namespace: Namespace,
    dispatcher: Arc<Dispatcher<S>>,
    concurrency: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: CommandSpec,
{
    let subject = namespace.command_subject(S::CONTEXT, "*");
    let queue = format!("{}-commands", S::CONTEXT.token());
    let mut subscription = client.queue_subscribe(subject.clone(), queue).await?;
    tracing::info!(%subject, "serving commands over NATS");
    // `concurrency` commands run at once, and a bounded number more wait for a turn in
    // tasks of their own; past that a command is answered "unavailable, retry" at once. The
    // loop never waits, so the subscription never fills with commands (of up to 1 MB each)
    // while the handlers are busy.
    let permits = Arc::new(Semaphore::new(concurrency));
    let held = (WAITING_PER_PERMIT + 1) * concurrency;
    let in_hand = Arc::new(Semaphore::new(held));
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = subscription.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let Ok(slot) = in_hand.clone().try_acquire_owned() else {
            metrics::counter!("commands_shed_total", "context" => S::CONTEXT.token()).increment(1);
            if let Some(reply_to) = message.reply {
                let busy: Reply =
                    Reply::rejected(reasons::UNAVAILABLE, "the service is busy; retry", true);
                let body = serde_json::to_vec(&busy).expect("replies serialise");
                let _ = client.publish(reply_to, body.into()).await;
            }
            continue;
        };
        let (client, dispatcher, permits) = (client.clone(), dispatcher.clone(), permits.clone());
        tokio::spawn(async move {
            let Ok(_turn) = permits.acquire_owned().await else {
                return;
            };
            let reply_to = message.reply.clone();
            let command = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .map(str::to_owned);
            let span = tracing::info_span!(
                "nats.command",
                otel.kind = "server",
                subject = %message.subject,
            );
            service_kit::trace::join_message(&span, message.headers.as_ref());
            let reply = handle(&dispatcher, message).instrument(span).await;
            // A test loses a command's reply here (`nats.before_reply.<Command>@N:hang`): the
            // command took effect, and its answer never leaves.
            if service_kit::failpoint::armed() {
                let point = format!("nats.before_reply.{}", command.unwrap_or_default());
                service_kit::failpoint::reached(&point).await;
            }
            if let Some(reply_to) = reply_to {
                let body = serde_json::to_vec(&reply).expect("replies serialise");
                if let Err(e) = client.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "could not send a command reply");
                }
            }
            drop(slot);
        });
    }
    let _ = subscription.unsubscribe().await;
    // Every slot back means every command in hand has been answered.
    let _ = in_hand.acquire_many(held as u32).await;
    let _ = client.flush().await;
    Ok(())
}

async fn handle<S>(dispatcher: &Dispatcher<S>, message: Message) -> Reply
where
    S: CommandSpec,
{
    let name = message
        .subject
        .as_str()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut body: Value = match serde_json::from_slice(&message.payload) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return Reply::rejected(
                reasons::INVALID_BODY,
                "the body must be a JSON object",
                false,
            )
        }
        Err(e) => return Reply::rejected(reasons::INVALID_BODY, format!("not JSON: {e}"), false),
    };
    let command_id = match body
        .as_object_mut()
        .and_then(|m| m.remove(contracts::reply::COMMAND_ID))
    {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 255 => id,
        _ => {
            return Reply::rejected(
                reasons::INVALID_BODY,
                "command_id (a non-empty string) is required",
                false,
            )
        }
    };
    // A test forces a refusal for good here (`nats.refuse.<Command>@N:refuse`): the command is
    // not run, and the caller is told not to retry it.
    if service_kit::failpoint::armed()
        && service_kit::failpoint::refuses(&format!("nats.refuse.{name}"))
    {
        return Reply::rejected(
            reasons::REFUSED,
            format!("{name} refused for good by a failpoint"),
            false,
        );
    }
    let traceparent = service_kit::trace::of_message(message.headers.as_ref()).map(str::to_owned);
    dispatcher
        .dispatch(Request {
            name,
            body,
            idempotency_key: Some(format!("nats:{command_id}")),
            traceparent,
        })
        .await
}
