//! `POST /webhooks/stripe`: Stripe's signed events about payments
//! (`payment_intent.succeeded`, `payment_intent.payment_failed`, `payment_intent.canceled`,
//! `payment_intent.amount_capturable_updated`, `charge.refunded`), so a payment that completes,
//! fails or is refunded out of band (or whose answer the service lost) is never missed.
//!
//! Each event is verified (`Stripe-Signature`: an HMAC-SHA256 of `<t>.<body>` with the
//! endpoint's secret, and `t` within the tolerance of now, so a captured request cannot be
//! replayed later), read as what the provider reports of the order's payment, and run as the
//! Payment's `Reconcile` command under the key `stripe:<event id>`: a replayed or re-delivered
//! event is answered from the first run and changes nothing, and the command itself only
//! brings the payment in line, so even a new event that repeats known facts adds no event.
//! The gateway forwards it to anyone (`POST /api/webhooks/stripe`): the signature is the
//! authentication.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use command_kit::dispatch::Dispatcher;
use contracts::Reply;
use domain::payment::{Observed, PaymentCommand};
use domain::{Currency, Money};
use serde_json::{json, Value};
use service_kit::env::{Env, EnvError};
use service_kit::problem::Problem;
use service_kit::secret::Secret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::PaymentsSpec;

/// The route's path.
pub const PATH: &str = "/webhooks/stripe";

/// The largest event accepted; Stripe's are a few kilobytes.
const MAX_BODY: usize = 256 * 1024;

/// `STRIPE_WEBHOOK_SECRET` (or `_FILE`): the endpoint's signing secret (`whsec_…`);
/// `STRIPE_WEBHOOK_TOLERANCE_SECS` (default 300): how far from now a signature's time may be.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub secret: Secret<String>,
    pub tolerance: Duration,
}

impl WebhookSettings {
    /// `None` when no secret is set: then the route answers 404 and no event is taken.
    pub fn from_env(env: &Env) -> Result<Option<Self>, EnvError> {
        let Some(secret) = env.secret("STRIPE_WEBHOOK_SECRET")? else {
            return Ok(None);
        };
        // A blank key would let anyone sign.
        if secret.expose().trim().is_empty() {
            return Err(EnvError {
                name: "STRIPE_WEBHOOK_SECRET".into(),
                reason: "is blank".into(),
            });
        }
        Ok(Some(Self {
            secret,
            tolerance: Duration::from_secs(env.within_or(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                300,
                1..=3600,
            )?),
        }))
    }
}

/// Why a signature is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `t=` and `v1=` in the header.
    Malformed,
    /// No `v1` matches the body.
    Mismatch,
    /// It matches, but `t` is too far from now: a replay.
    Stale,
}

/// Checks `header` (`t=…,v1=…[,v1=…]`) against `body` with `secret`, at `now` (Unix seconds).
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            // Only what can be a SHA-256 tag, and a few of them (Stripe sends one per active
            // secret): an unauthenticated header never buys more than one HMAC of the body.
            Some(("v1", hex)) if hex.len() == 64 && signatures.len() < MAX_SIGNATURES => {
                signatures.extend(decode_hex(hex))
            }
            _ => {}
        }
    }
    let (Some(timestamp), false) = (timestamp, signatures.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = ring::hmac::sign(&key, &signed);
    let matches = signatures
        .iter()
        .any(|tag| same_in_constant_time(expected.as_ref(), tag));
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// The `v1` entries of one header that are checked; more are ignored.
const MAX_SIGNATURES: usize = 8;

/// Equal contents, in a time that does not depend on where they first differ.
fn same_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Clone)]
struct Hook {
    dispatcher: Arc<Dispatcher<PaymentsSpec>>,
    settings: Option<WebhookSettings>,
    pool: PgPool,
}

/// The route, with the secret to verify by (none: every event answers 404).
pub fn router(
    dispatcher: Arc<Dispatcher<PaymentsSpec>>,
    settings: Option<WebhookSettings>,
    pool: PgPool,
) -> Router {
    Router::new()
        .route(
            PATH,
            post(receive).fallback(service_kit::problem::method_not_allowed),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Hook {
            dispatcher,
            settings,
            pool,
        })
}

fn refused(title: &str) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-signature", title).into_response()
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(settings) = &hook.settings else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No webhook secret is configured (STRIPE_WEBHOOK_SECRET)",
        )
        .into_response();
    };
    let Some(header) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return refused("The Stripe-Signature header is missing");
    };
    match verify(
        settings.secret.expose(),
        header,
        &body,
        chrono::Utc::now().timestamp(),
        settings.tolerance,
    ) {
        Ok(()) => {}
        Err(SignatureError::Malformed) => {
            return refused("The Stripe-Signature header does not read")
        }
        Err(SignatureError::Mismatch) => return refused("The signature does not match the body"),
        Err(SignatureError::Stale) => {
            return refused("The signature's timestamp is outside the tolerance: a replay")
        }
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "The event is not JSON",
        )
        .into_response();
    };
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "The event has no id or type",
        )
        .into_response();
    };
    let observed = match observed(&hook.pool, kind, &event["data"]["object"]).await {
        Ok(Some(observed)) => observed,
        // Not about an order's payment: acknowledged, so Stripe stops sending it.
        Ok(None) => return axum::Json(json!({"received": true, "applied": false})).into_response(),
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let order_id = observed.order_id;
    let parsed = command_kit::parsed(order_id, order_id, PaymentCommand::Reconcile { observed });
    let hash = command_kit::dispatch::request_hash(kind, &event["data"]["object"]);
    match hook
        .dispatcher
        .dispatch_own("ReconcilePayment", parsed, format!("stripe:{id}"), hash)
        .await
    {
        Reply::Accepted { replayed, .. } => {
            tracing::info!(event = id, kind, %order_id, replayed, "Stripe event applied");
            axum::Json(json!({"received": true, "applied": true, "duplicate": replayed}))
                .into_response()
        }
        // Stripe retries what is not answered 2xx, for days.
        Reply::Rejected {
            reason,
            retryable: true,
            ..
        } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("The event could not be applied now ({reason}); retry"),
        )
        .retry_after(5)
        .into_response(),
        Reply::Rejected {
            reason, message, ..
        } => {
            tracing::warn!(event = id, kind, %order_id, reason, message, "Stripe event refused");
            axum::Json(json!({"received": true, "applied": false, "reason": reason}))
                .into_response()
        }
    }
}

/// What an event's object says of an order's payment; `None` when it is about no order of
/// this service (no `order_id` in its metadata and no intent of ours).
async fn observed(
    pool: &PgPool,
    kind: &str,
    object: &Value,
) -> Result<Option<Observed>, sqlx::Error> {
    let (intent, amount, status) = match kind {
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled"
        | "payment_intent.amount_capturable_updated" => (
            object["id"].as_str(),
            object["amount"].as_i64(),
            object["status"].as_str().unwrap_or_default(),
        ),
        "charge.refunded" => (
            object["payment_intent"].as_str(),
            object["amount"].as_i64(),
            "",
        ),
        _ => return Ok(None),
    };
    let (Some(intent), Some(amount)) = (intent, amount) else {
        return Ok(None);
    };
    let Some(currency) = object["currency"]
        .as_str()
        .and_then(|c| Currency::parse(&c.to_ascii_uppercase()).ok())
    else {
        return Ok(None);
    };
    // The intent's metadata names the order; a charge's does not, the recorded intent does.
    let order_id = match object["metadata"]["order_id"]
        .as_str()
        .and_then(|o| Uuid::parse_str(o).ok())
    {
        Some(order) if kind.starts_with("payment_intent.") => Some(order),
        _ => {
            sqlx::query_scalar("SELECT order_id FROM payment_intents WHERE intent_id = $1")
                .bind(intent)
                .fetch_optional(pool)
                .await?
        }
    };
    let Some(order_id) = order_id else {
        return Ok(None);
    };
    let declined = (status == "requires_payment_method")
        .then(|| {
            let error = &object["last_payment_error"];
            error["decline_code"]
                .as_str()
                .or(error["code"].as_str())
                .map(str::to_owned)
        })
        .flatten();
    // A server that leaves `amount_received` (`amount_captured`) out captured the whole
    // amount of a succeeded intent (a refunded charge).
    let captured = if kind == "charge.refunded" {
        object["amount_captured"].as_i64().unwrap_or(amount)
    } else {
        object["amount_received"]
            .as_i64()
            .unwrap_or(if status == "succeeded" { amount } else { 0 })
    };
    Ok(Some(Observed {
        order_id,
        reference: intent.to_owned(),
        amount: Money::new(amount, currency),
        held: status == "requires_capture",
        declined,
        cancelled: status == "canceled",
        captured,
        refunded: object["amount_refunded"].as_i64().unwrap_or(0),
    }))
}

/// The route's OpenAPI path item.
pub fn openapi() -> (&'static str, Value) {
    let problem = |description: &str| service_kit::openapi::problem(description);
    (
        PATH,
        json!({"post": {
            "operationId": "ReceiveStripeEvent",
            "summary": "Stripe's signed webhook events about payments (Stripe-Signature), applied once",
            "parameters": [{
                "name": "Stripe-Signature", "in": "header", "required": true,
                "schema": {"type": "string"},
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">"
            }],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["id", "type", "data"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "data": {"type": "object"}
                }
            }}}},
            "responses": {
                "200": {"description": "Received (applied, a duplicate, or about no payment of ours)",
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["received", "applied"],
                            "properties": {
                                "received": {"type": "boolean"},
                                "applied": {"type": "boolean"},
                                "duplicate": {"type": "boolean"},
                                "reason": {"type": "string"}
                            }
                        }}}},
                "400": problem("A missing, malformed, mismatched or stale signature, or an event that does not read"),
                "404": problem("No webhook secret is configured"),
                "413": problem("The event is too large"),
                "500": problem("Internal error"),
                "503": problem("The event could not be applied now; Stripe retries it")
            }
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let tag = ring::hmac::sign(&key, &signed);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("t={t},v1={hex}")
    }

    #[test]
    fn a_blank_webhook_secret_is_refused_at_start() {
        let env = Env::from_pairs([("STRIPE_WEBHOOK_SECRET", "  ")]);
        let error = WebhookSettings::from_env(&env).unwrap_err();
        assert_eq!(error.name, "STRIPE_WEBHOOK_SECRET");
    }

    #[test]
    fn a_signature_is_checked_against_the_body_the_secret_and_the_time() {
        let body = br#"{"id":"evt_1"}"#;
        let tolerance = Duration::from_secs(300);
        let now = 1_800_000_000;
        let good = sign("whsec_a", now - 10, body);
        assert_eq!(verify("whsec_a", &good, body, now, tolerance), Ok(()));
        // One of several v1 (a secret being rolled) is enough.
        let rolled = format!("{},v1=00ff", good);
        assert_eq!(verify("whsec_a", &rolled, body, now, tolerance), Ok(()));
        assert_eq!(
            verify("whsec_b", &good, body, now, tolerance),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_a", &good, br#"{"id":"evt_2"}"#, now, tolerance),
            Err(SignatureError::Mismatch)
        );
        let old = sign("whsec_a", now - 301, body);
        assert_eq!(
            verify("whsec_a", &old, body, now, tolerance),
            Err(SignatureError::Stale)
        );
        // A flood of entries costs at most one HMAC: empty or short tags are not tags, and
        // past the first few the rest are not read.
        let flood = format!("t={},{}", now - 10, "v1=,".repeat(100_000));
        assert_eq!(
            verify("whsec_a", &flood, body, now, tolerance),
            Err(SignatureError::Malformed)
        );
        let junk = format!("v1={},", "0".repeat(64)).repeat(MAX_SIGNATURES);
        assert_eq!(
            verify("whsec_a", &format!("{junk}{good}"), body, now, tolerance),
            Err(SignatureError::Mismatch)
        );
        for malformed in ["", "t=1", "v1=00", "t=x,v1=00"] {
            assert_eq!(
                verify("whsec_a", malformed, body, now, tolerance),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }
}
