//! Runs one command from any transport: parse, execute through the command bus (idempotency,
//! conflict retries), answer with a [`Reply`].

use chrono::Utc;
use event_store::{BusError, CommandBus, CommandMetadata, Executed};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::Instrument;
use uuid::Uuid;

use contracts::{reasons, Reply};
use std::collections::HashMap;

use crate::spec::{by_name, Binding, CommandSpec, Parsed};

/// A command as a transport received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    /// The JSON object of the command's fields.
    pub body: Value,
    /// Scoped by the transport (`http:` or `nats:`), so the two cannot collide.
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
}

/// Executes the commands of one context.
pub struct Dispatcher<S: CommandSpec> {
    spec: S,
    commands: HashMap<&'static str, Binding<S>>,
    bus: CommandBus<S::Aggregate>,
}

/// SHA-256 of the command name and its canonical JSON body (serde_json sorts object keys).
pub fn request_hash(name: &str, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl<S> Dispatcher<S>
where
    S: CommandSpec,
{
    pub fn new(spec: S, bus: CommandBus<S::Aggregate>) -> Self {
        Self {
            spec,
            commands: by_name::<S>(),
            bus,
        }
    }

    pub fn spec(&self) -> &S {
        &self.spec
    }

    /// Runs one command and answers it; never fails: every outcome is a [`Reply`].
    pub async fn dispatch(&self, request: Request) -> Reply {
        let started = std::time::Instant::now();
        let name = request.name.clone();
        // A child of the transport's span (HTTP request or NATS message), which has already
        // joined the caller's trace; `join` covers a transport without a span of its own.
        let span = tracing::info_span!(
            "command",
            context = S::CONTEXT.token(),
            command = %name,
            aggregate_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if !service_kit::trace::in_trace() {
            service_kit::trace::join(&span, request.traceparent.as_deref());
        }
        let reply = self.dispatch_inner(request).instrument(span.clone()).await;
        span.record("outcome", reply.reason().unwrap_or("accepted"));
        let known = self.commands.contains_key(name.as_str());
        let labels = [
            ("context", S::CONTEXT.token().to_owned()),
            ("command", if known { name } else { "unknown".into() }),
            ("outcome", reply.reason().unwrap_or("accepted").to_owned()),
        ];
        metrics::counter!("commands_total", &labels).increment(1);
        metrics::histogram!("command_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        reply
    }

    async fn dispatch_inner(&self, request: Request) -> Reply {
        let name = request.name.as_str();
        let Some(binding) = self.commands.get(name) else {
            return Reply::rejected(
                reasons::UNKNOWN_COMMAND,
                format!("{name} is not a command of {}", S::CONTEXT),
                false,
            );
        };
        if !request.body.is_object() {
            return Reply::rejected(
                reasons::INVALID_BODY,
                "the body must be a JSON object",
                false,
            );
        }
        let hash = request_hash(name, &request.body);
        let mut parsed = match binding.parse(request.body, Utc::now()) {
            Ok(parsed) => parsed,
            Err(reason) => return Reply::rejected(reasons::INVALID_BODY, reason, false),
        };
        if let Some(key) = &request.idempotency_key {
            S::keyed(&mut parsed.command, key);
        }
        self.execute(
            name,
            parsed,
            request.idempotency_key.map(|k| (k, hash)),
            request.traceparent,
        )
        .await
    }

    /// Runs a command the context gives itself, outside its contract (payments' reconciling
    /// of a provider's webhook): through the same bus, idempotent by `key` (the same key
    /// with another `hash` is refused), answered and counted as any command.
    pub async fn dispatch_own(
        &self,
        name: &'static str,
        parsed: Parsed<S::Aggregate>,
        key: String,
        hash: String,
    ) -> Reply {
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "command",
            context = S::CONTEXT.token(),
            command = name,
            aggregate_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let reply = self
            .execute(name, parsed, Some((key, hash)), None)
            .instrument(span.clone())
            .await;
        span.record("outcome", reply.reason().unwrap_or("accepted"));
        let labels = [
            ("context", S::CONTEXT.token().to_owned()),
            ("command", name.to_owned()),
            ("outcome", reply.reason().unwrap_or("accepted").to_owned()),
        ];
        metrics::counter!("commands_total", &labels).increment(1);
        metrics::histogram!("command_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        reply
    }

    async fn execute(
        &self,
        name: &str,
        parsed: Parsed<S::Aggregate>,
        idempotency: Option<(String, String)>,
        traceparent: Option<String>,
    ) -> Reply {
        let span = tracing::Span::current();
        span.record("aggregate_id", parsed.aggregate_id.as_str());
        span.record("correlation_id", parsed.correlation_id.as_str());
        let metadata = CommandMetadata {
            command_id: Uuid::now_v7(),
            correlation_id: parsed.correlation_id,
            // The command span's own context, so the outbox publish and every consumer join
            // this trace as its descendants.
            traceparent: service_kit::trace::outgoing(traceparent.as_deref()),
            idempotency,
        };
        let command = parsed.command.clone();
        let outcome = if parsed.new_aggregate {
            self.bus
                .execute_new(&parsed.aggregate_id, parsed.command, &metadata)
                .await
        } else {
            self.bus
                .execute(&parsed.aggregate_id, parsed.command, &metadata)
                .await
        };
        match outcome {
            Ok(Executed::Accepted {
                aggregate_id,
                version,
                events,
                state,
                replayed,
            }) => {
                tracing::info!(command = name, %aggregate_id, aggregate_version = version, replayed, "command accepted");
                Reply::Accepted {
                    data: answer_data(&self.spec.answer(&command, &state, &events)),
                    aggregate_id,
                    version,
                    replayed,
                }
            }
            Ok(Executed::Rejected {
                reason,
                message,
                retryable,
                not_found,
                ..
            }) => {
                tracing::info!(command = name, reason, "command rejected");
                let reason = if not_found {
                    reasons::NOT_FOUND.to_owned()
                } else {
                    reason
                };
                Reply::Rejected {
                    reason,
                    message,
                    retryable,
                }
            }
            Err(BusError::KeyReused) => Reply::rejected(
                reasons::KEY_REUSED,
                "this idempotency key was used with a different request",
                false,
            ),
            Err(e @ BusError::TooLarge { .. }) => {
                Reply::rejected(reasons::TOO_LARGE, e.to_string(), false)
            }
            Err(BusError::Conflict) => Reply::rejected(
                reasons::CONFLICT,
                "concurrent changes kept conflicting; retry",
                true,
            ),
            Err(BusError::Unavailable(e)) => {
                tracing::warn!(command = name, error = %service_kit::problem::ErrorChain(&*e), "database unavailable");
                Reply::rejected(
                    reasons::UNAVAILABLE,
                    "the database is unavailable; retry",
                    true,
                )
            }
            Err(BusError::Internal(e)) => {
                tracing::error!(command = name, error = %service_kit::problem::ErrorChain(&*e), "command failed");
                Reply::rejected(reasons::INTERNAL, "internal error", true)
            }
        }
    }
}

/// The answer as the reply's JSON object.
fn answer_data<T: serde::Serialize>(answer: &T) -> serde_json::Map<String, Value> {
    match serde_json::to_value(answer) {
        Ok(Value::Object(map)) => map,
        // Answers are structs (a contracts test checks each); anything else is a bug.
        other => {
            tracing::error!(answer = ?other, "a command answer is not a JSON object");
            serde_json::Map::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hashes_ignore_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":1,"b":3}"#).unwrap();
        assert_eq!(request_hash("X", &a), request_hash("X", &b));
        assert_ne!(request_hash("X", &a), request_hash("X", &c));
        assert_ne!(request_hash("X", &a), request_hash("Y", &a));
    }
}
