//! W3C trace context across process boundaries: a span joins the trace named by an incoming
//! `traceparent` (an HTTP header, a NATS header, or one stored with an event in the outbox),
//! and the current span's own `traceparent` goes out with whatever it causes.
//!
//! Invariant: every hop that receives work (HTTP request, command, outbox publish, consumed
//! message, saga step) opens its span with `join`, so one order's work is one trace.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rand::Rng;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (HTTP and NATS) and event-metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A new `traceparent` with random trace and span ids, sampled: the fallback where no span
/// context exists (a process without the OpenTelemetry layer, such as a unit test).
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>().max(1);
    let span: u64 = rng.random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

/// Whether `value` is a well-formed version-00 `traceparent`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2)
}

/// The trace id (32 hex digits) of a `traceparent`.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}

/// Makes `span` a child of the remote span that `traceparent` names, in place of any local
/// parent. Call it before the span is entered, asked for its context or given children: a
/// started span keeps its parent. An absent or malformed value leaves the span as it is.
pub fn join(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent.filter(|t| is_valid_traceparent(t)) else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    let remote = TraceContextPropagator::new().extract(&carrier);
    if remote.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started; it then stays where it is.
        let _ = span.set_parent(remote);
    }
}

/// Links `span` to the remote span that `traceparent` names, without making it its parent:
/// for work that arrives from outside the system, whose caller may not choose the trace (or
/// its sampling) of what the system does. An absent or malformed value adds nothing.
pub fn link(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent.filter(|t| is_valid_traceparent(t)) else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    let remote = TraceContextPropagator::new().extract(&carrier);
    let context = remote.span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}

/// The `traceparent` header of a NATS message, if it has one.
pub fn of_message(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers.and_then(|h| h.get(TRACEPARENT)).map(|v| v.as_str())
}

/// `join` with the `traceparent` header of a NATS message, if it has one.
pub fn join_message(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    join(span, of_message(headers));
}

/// Whether the current span belongs to a trace (the OpenTelemetry layer is installed and the
/// span is enabled for it).
pub fn in_trace() -> bool {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .is_valid()
}

/// The `traceparent` of `span`, or `None` when it has no span context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` to send with work the current span causes: its own context, else
/// `incoming` (passed through unchanged when there is no layer), else a new trace.
pub fn outgoing(incoming: Option<&str>) -> String {
    traceparent_of(&tracing::Span::current())
        .or_else(|| {
            incoming
                .filter(|t| is_valid_traceparent(t))
                .map(str::to_owned)
        })
        .unwrap_or_else(new_traceparent)
}

/// Axum middleware: each request runs in an `http.request` span that joins the caller's
/// `traceparent`, and the response carries the span's own `traceparent` back.
pub async fn http_span(request: Request, next: Next) -> Response {
    traced(request, next, Caller::Inside).await
}

/// [`http_span`] for a public side (the gateway's): each request starts a trace of its own,
/// linked to the client's `traceparent` rather than joining it, and the client's header goes
/// no further; the response carries the new trace's `traceparent`.
pub async fn http_span_public(request: Request, next: Next) -> Response {
    traced(request, next, Caller::Outside).await
}

/// Whose `traceparent` a request carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// Another process of the system: its trace is continued.
    Inside,
    /// A client outside it: its trace is only linked.
    Outside,
}

async fn traced(mut request: Request, next: Next, caller: Caller) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.method = %request.method(),
        http.route = %route,
        http.status = tracing::field::Empty,
    );
    let incoming = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    match caller {
        Caller::Inside => join(&span, incoming),
        Caller::Outside => {
            link(&span, incoming);
            request.headers_mut().remove(TRACEPARENT);
        }
    }
    let outgoing = traceparent_of(&span);
    let mut response = next.run(request).instrument(span.clone()).await;
    span.record("http.status", response.status().as_u16());
    if let Some(value) = outgoing.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_are_valid() {
        let t = new_traceparent();
        assert!(is_valid_traceparent(&t), "{t}");
        assert_eq!(trace_id_of(&t).unwrap().len(), 32);
        assert!(!is_valid_traceparent("00-abc-def-01"));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-0000000000000001-01"
        ));
    }

    #[test]
    fn without_a_layer_the_incoming_value_passes_through() {
        let incoming = new_traceparent();
        assert_eq!(outgoing(Some(&incoming)), incoming);
        assert!(is_valid_traceparent(&outgoing(Some("garbage"))));
        assert!(!in_trace());
    }
}
