//! The payment provider port spoken as Stripe's PaymentIntents API: authorise creates a
//! PaymentIntent with `capture_method=manual` for the order's total (the payment token is the
//! customer's PaymentMethod id) and confirms it; capture, cancel (void) and refunds act on it.
//!
//! Every call carries an `Idempotency-Key` made from the command's key, so Stripe answers a
//! retried call as it answered the first. Beside that, nothing is guessed: the intent's id is
//! stored (`payment_intents`) before it is confirmed, and a retried step reads the intent back
//! and acts on its state (a confirm whose answer was lost is found `requires_capture`, a lost
//! capture `succeeded`, a lost refund by its key in the intent's refunds). That holds even
//! against a server that ignores idempotency keys (the local one tests and `cargo xtask up`
//! run).
//!
//! Outcomes: a card error (402) is a decline; 429, 5xx, 401/403 and network faults are the
//! provider's faults (retryable, counted by the circuit around the adapter); another 4xx on
//! capture, void or refund is a refusal, after the intent was read back to tell it from a
//! retry of a call that already went through.

use std::time::Duration;

use domain::payment::{
    AuthorisationRequest, BoxFuture, PaymentProvider, ProviderCall, ProviderDecision, ProviderError,
};
use serde::Deserialize;
use serde_json::Value;
use service_kit::env::{Env, EnvError};
use service_kit::secret::Secret;
use sqlx::PgPool;
use uuid::Uuid;

/// The API version every request asks for, so an account's default cannot change answers.
pub const API_VERSION: &str = "2024-06-20";

/// `STRIPE_API_BASE` and `STRIPE_SECRET_KEY` (or `_FILE`).
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `https://api.stripe.com`, or a Stripe-compatible server; plain `http` only on loopback.
    pub api_base: String,
    pub secret_key: Secret<String>,
}

impl StripeSettings {
    /// From the environment; the key is required.
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let api_base = env
            .string_or("STRIPE_API_BASE", "https://api.stripe.com")
            .trim_end_matches('/')
            .to_owned();
        if !api_base.starts_with("https://") && !local_http(&api_base) {
            return Err(EnvError {
                name: "STRIPE_API_BASE".into(),
                reason: format!(
                    "{api_base:?} must be https:// (plain http only to this machine or to a \
                     host of the local network named without dots, as a compose service is)"
                ),
            });
        }
        let secret_key = env.secret("STRIPE_SECRET_KEY")?.ok_or_else(|| EnvError {
            name: "STRIPE_SECRET_KEY".into(),
            reason: "unset: the Stripe provider needs a secret key (sk_test_… or sk_live_…) in \
                     STRIPE_SECRET_KEY or STRIPE_SECRET_KEY_FILE"
                .into(),
        })?;
        if !secret_key.expose().starts_with("sk_") && !secret_key.expose().starts_with("rk_") {
            return Err(EnvError {
                name: "STRIPE_SECRET_KEY".into(),
                reason: "not a Stripe secret or restricted key (sk_… or rk_…)".into(),
            });
        }
        Ok(Self {
            api_base,
            secret_key,
        })
    }
}

/// Plain http that never leaves the machine or its private network: loopback, or a host
/// name without dots (a compose or Kubernetes service of the same network), which no public
/// resolver answers. The secret key travels in every request.
fn local_http(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => host,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        || (!host.is_empty() && !host.contains('.') && !host.contains(':'))
}

/// A PaymentIntent, as far as the adapter reads one.
#[derive(Debug, Clone, Deserialize)]
struct Intent {
    id: String,
    status: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    amount_received: Option<i64>,
    #[serde(default)]
    last_payment_error: Option<ApiError>,
}

impl Intent {
    /// What was captured: `amount_received`, or, from a server that leaves it out, the whole
    /// amount of a succeeded intent.
    fn captured(&self) -> i64 {
        self.amount_received
            .unwrap_or(if self.status == "succeeded" {
                self.amount
            } else {
                0
            })
    }
}

/// Stripe's error object.
#[derive(Debug, Clone, Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl ApiError {
    /// The most specific reason Stripe gave.
    fn reason(&self, fallback: &str) -> String {
        self.decline_code
            .clone()
            .or_else(|| self.code.clone())
            .unwrap_or_else(|| fallback.to_owned())
    }
}

/// What a call came to, before it is read as a domain outcome.
#[derive(Debug)]
enum Failure {
    /// 402: the card was declined.
    Declined(ApiError),
    /// Another 4xx (but 401, 403, 429): the request was refused as it stands.
    Refused(ApiError),
    /// The provider's fault: retryable.
    Fault(ProviderError),
}

/// The Stripe adapter.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    settings: StripeSettings,
    pool: PgPool,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("api_base", &self.settings.api_base)
            .finish_non_exhaustive()
    }
}

impl Stripe {
    /// An adapter whose every request gives up after `timeout`; intents are recorded in the
    /// payments database (`pool`).
    pub fn new(settings: StripeSettings, timeout: Duration, pool: PgPool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("streamshop-payments/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            settings,
            pool,
        })
    }

    /// One request; `form` makes it a POST. Answers the JSON object, or what went wrong.
    async fn call(
        &self,
        path: &str,
        form: Option<&[(String, String)]>,
        key: Option<&str>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.settings.api_base);
        let request = match form {
            Some(form) => self.http.post(&url).form(form),
            None => self.http.get(&url),
        };
        let mut request = request
            .bearer_auth(self.settings.secret_key.expose())
            .header("Stripe-Version", API_VERSION);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| {
            Failure::Fault(if e.is_timeout() {
                ProviderError::Timeout
            } else {
                ProviderError::Unavailable(format!("Stripe could not be reached: {e}"))
            })
        })?;
        let status = response.status().as_u16();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(e) if e.is_timeout() => return Err(Failure::Fault(ProviderError::Timeout)),
            Err(e) => {
                return Err(Failure::Fault(ProviderError::Unavailable(format!(
                    "Stripe answered {status} without JSON: {e}"
                ))))
            }
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error: ApiError = serde_json::from_value(body["error"].clone()).unwrap_or_default();
        Err(match status {
            402 => Failure::Declined(error),
            401 | 403 => Failure::Fault(ProviderError::Unavailable(format!(
                "Stripe refused the secret key ({status}); check STRIPE_SECRET_KEY"
            ))),
            429 => Failure::Fault(ProviderError::Unavailable(
                "Stripe's rate limit (429)".into(),
            )),
            400..=499 => Failure::Refused(error),
            _ => Failure::Fault(ProviderError::Unavailable(format!(
                "Stripe answered {status}: {}",
                error.message.unwrap_or_default()
            ))),
        })
    }

    /// A call whose answer a test may lose on cue (`stripe.lose.<what>@N:refuse`): the call
    /// went through, its caller sees a timeout, as when a connection drops after the provider
    /// acted.
    async fn call_losable(
        &self,
        what: &str,
        path: &str,
        form: Option<&[(String, String)]>,
        key: Option<&str>,
    ) -> Result<Value, Failure> {
        let answer = self.call(path, form, key).await;
        if service_kit::failpoint::armed()
            && service_kit::failpoint::refuses(&format!("stripe.lose.{what}"))
        {
            tracing::warn!(what, "failpoint: the provider's answer is dropped");
            return Err(Failure::Fault(ProviderError::Timeout));
        }
        answer
    }

    async fn intent(&self, id: &str) -> Result<Intent, ProviderError> {
        let body = self
            .call(&format!("/v1/payment_intents/{id}"), None, None)
            .await
            .map_err(|f| fault(f, "reading the PaymentIntent"))?;
        parse_intent(body)
    }

    /// The intent recorded for the order, if any.
    async fn recorded(&self, order_id: Uuid) -> Result<Option<String>, ProviderError> {
        sqlx::query_scalar("SELECT intent_id FROM payment_intents WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)
    }

    /// Records `intent` as the order's; answers the order's intent (an earlier one when a
    /// concurrent attempt recorded first).
    async fn record(&self, order_id: Uuid, intent: &str) -> Result<String, ProviderError> {
        sqlx::query(
            "INSERT INTO payment_intents (order_id, intent_id) VALUES ($1, $2) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(intent)
        .execute(&self.pool)
        .await
        .map_err(database)?;
        Ok(self
            .recorded(order_id)
            .await?
            .unwrap_or_else(|| intent.to_owned()))
    }

    async fn authorise_inner(
        &self,
        request: &AuthorisationRequest,
    ) -> Result<ProviderDecision, ProviderError> {
        let intent = match self.recorded(request.order_id).await? {
            // A retry: what became of the first attempt is the intent's state.
            Some(id) => self.intent(&id).await?,
            None => {
                let form = vec![
                    ("amount".to_owned(), request.amount.amount_minor.to_string()),
                    (
                        "currency".to_owned(),
                        request.amount.currency.to_string().to_ascii_lowercase(),
                    ),
                    ("payment_method".to_owned(), request.payment_token.clone()),
                    ("capture_method".to_owned(), "manual".to_owned()),
                    (
                        "metadata[order_id]".to_owned(),
                        request.order_id.to_string(),
                    ),
                ];
                let created = match self
                    .call_losable(
                        "create",
                        "/v1/payment_intents",
                        Some(&form),
                        Some(&format!("{}:create", request.key)),
                    )
                    .await
                {
                    Ok(body) => parse_intent(body)?,
                    // The token names no PaymentMethod we may charge: the customer's to fix.
                    Err(Failure::Declined(e) | Failure::Refused(e)) => {
                        return Ok(ProviderDecision::Declined {
                            reason: e.reason("invalid_payment_method"),
                        })
                    }
                    Err(Failure::Fault(e)) => return Err(e),
                };
                let id = self.record(request.order_id, &created.id).await?;
                if id != created.id {
                    // Another attempt recorded first: ours was never confirmed, so it holds
                    // nothing; cancelling it is tidiness, not safety.
                    let _ = self
                        .call(
                            &format!("/v1/payment_intents/{}/cancel", created.id),
                            Some(&[]),
                            None,
                        )
                        .await;
                    self.intent(&id).await?
                } else {
                    created
                }
            }
        };
        let intent = if intent.status == "requires_confirmation" {
            match self
                .call_losable(
                    "confirm",
                    &format!("/v1/payment_intents/{}/confirm", intent.id),
                    Some(&[]),
                    Some(&format!("{}:confirm", request.key)),
                )
                .await
            {
                Ok(body) => parse_intent(body)?,
                Err(Failure::Declined(e)) => {
                    return Ok(ProviderDecision::Declined {
                        reason: e.reason("card_declined"),
                    })
                }
                // Refused as it stands: what the intent became says why.
                Err(Failure::Refused(_)) => self.intent(&intent.id).await?,
                Err(Failure::Fault(e)) => return Err(e),
            }
        } else {
            intent
        };
        decision(intent)
    }

    async fn capture_inner(&self, call: &ProviderCall) -> Result<(), ProviderError> {
        // Only a held intent is captured: a retry finds its capture done, and an intent
        // cancelled behind the service's back is refused, whatever a lenient server would do.
        let intent = self.intent(&call.reference).await?;
        match intent.status.as_str() {
            "requires_capture" => {}
            "succeeded" if intent.captured() == call.amount.amount_minor => return Ok(()),
            other => {
                return Err(ProviderError::Refused(format!(
                    "the PaymentIntent is {other} and cannot be captured"
                )))
            }
        }
        let form = [(
            "amount_to_capture".to_owned(),
            call.amount.amount_minor.to_string(),
        )];
        let path = format!("/v1/payment_intents/{}/capture", call.reference);
        match self
            .call_losable("capture", &path, Some(&form), Some(&call.key))
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Fault(e)) => Err(e),
            Err(Failure::Declined(e) | Failure::Refused(e)) => {
                // Already captured by an attempt whose answer was lost, or not capturable.
                let intent = self.intent(&call.reference).await?;
                if intent.status == "succeeded" && intent.captured() == call.amount.amount_minor {
                    Ok(())
                } else {
                    Err(ProviderError::Refused(format!(
                        "the PaymentIntent is {} and cannot be captured: {}",
                        intent.status,
                        e.reason("capture_refused")
                    )))
                }
            }
        }
    }

    async fn void_inner(&self, call: &ProviderCall) -> Result<(), ProviderError> {
        let path = format!("/v1/payment_intents/{}/cancel", call.reference);
        match self
            .call_losable("cancel", &path, Some(&[]), Some(&call.key))
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Fault(e)) => Err(e),
            Err(Failure::Declined(e) | Failure::Refused(e)) => {
                let intent = self.intent(&call.reference).await?;
                if intent.status == "canceled" {
                    Ok(())
                } else {
                    Err(ProviderError::Refused(format!(
                        "the PaymentIntent is {} and cannot be cancelled: {}",
                        intent.status,
                        e.reason("cancel_refused")
                    )))
                }
            }
        }
    }

    async fn refund_inner(&self, call: &ProviderCall) -> Result<(), ProviderError> {
        // A refund made by an attempt whose answer was lost carries this key.
        if self.refunded_with(call).await? {
            return Ok(());
        }
        let form = [
            ("payment_intent".to_owned(), call.reference.clone()),
            ("amount".to_owned(), call.amount.amount_minor.to_string()),
            ("metadata[streamshop_key]".to_owned(), call.key.clone()),
        ];
        match self
            .call_losable("refund", "/v1/refunds", Some(&form), Some(&call.key))
            .await
        {
            Ok(_) => Ok(()),
            Err(Failure::Fault(e)) => Err(e),
            Err(Failure::Declined(e) | Failure::Refused(e)) => Err(ProviderError::Refused(
                format!("the refund was refused: {}", e.reason("refund_refused")),
            )),
        }
    }

    /// Whether a refund of this intent carries the call's key.
    async fn refunded_with(&self, call: &ProviderCall) -> Result<bool, ProviderError> {
        let body = self
            .call(
                &format!("/v1/refunds?payment_intent={}&limit=100", call.reference),
                None,
                None,
            )
            .await
            .map_err(|f| fault(f, "listing the refunds"))?;
        Ok(body["data"].as_array().is_some_and(|refunds| {
            refunds
                .iter()
                .any(|r| r["metadata"]["streamshop_key"].as_str() == Some(call.key.as_str()))
        }))
    }
}

fn parse_intent(body: Value) -> Result<Intent, ProviderError> {
    serde_json::from_value(body).map_err(|e| {
        ProviderError::Unavailable(format!("Stripe's PaymentIntent did not parse: {e}"))
    })
}

/// A failed read (which changes nothing) as a provider error.
fn fault(failure: Failure, what: &str) -> ProviderError {
    match failure {
        Failure::Fault(e) => e,
        Failure::Declined(e) | Failure::Refused(e) => {
            ProviderError::Refused(format!("{what}: {}", e.reason("refused")))
        }
    }
}

fn database(e: sqlx::Error) -> ProviderError {
    ProviderError::Unavailable(format!("the payments database: {e}"))
}

/// What an intent's state means for the order's authorisation.
fn decision(intent: Intent) -> Result<ProviderDecision, ProviderError> {
    match intent.status.as_str() {
        "requires_capture" => Ok(ProviderDecision::Authorised {
            reference: intent.id,
        }),
        "requires_payment_method" | "canceled" => Ok(ProviderDecision::Declined {
            reason: intent
                .last_payment_error
                .map_or_else(|| intent.status.clone(), |e| e.reason("card_declined")),
        }),
        // 3-D Secure: the customer would have to act. Until the order can wait for them, the
        // authorisation is declined, and the intent cancelled so that it holds nothing.
        "requires_action" => Ok(ProviderDecision::Declined {
            reason: "authentication_required".into(),
        }),
        other => Err(ProviderError::Unavailable(format!(
            "the PaymentIntent {} is {other}",
            intent.id
        ))),
    }
}

impl PaymentProvider for Stripe {
    fn authorise<'a>(
        &'a self,
        request: &'a AuthorisationRequest,
    ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
        Box::pin(async move {
            let decision = self.authorise_inner(request).await?;
            if let ProviderDecision::Declined { reason } = &decision {
                if reason == "authentication_required" {
                    if let Some(id) = self.recorded(request.order_id).await? {
                        let _ = self
                            .call(&format!("/v1/payment_intents/{id}/cancel"), Some(&[]), None)
                            .await;
                    }
                }
            }
            Ok(decision)
        })
    }

    fn capture<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.capture_inner(call))
    }

    fn void<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.void_inner(call))
    }

    fn refund<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.refund_inner(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<StripeSettings, EnvError> {
        StripeSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn the_key_is_required_and_plain_http_only_on_loopback() {
        assert_eq!(settings(&[]).unwrap_err().name, "STRIPE_SECRET_KEY");
        assert_eq!(
            settings(&[("STRIPE_SECRET_KEY", "pk_test_public")])
                .unwrap_err()
                .name,
            "STRIPE_SECRET_KEY"
        );
        let real = settings(&[("STRIPE_SECRET_KEY", "sk_test_x")]).unwrap();
        assert_eq!(real.api_base, "https://api.stripe.com");
        assert_eq!(format!("{:?}", real.secret_key), "***");
        let local = settings(&[
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_API_BASE", "http://127.0.0.1:8420/"),
        ])
        .unwrap();
        assert_eq!(local.api_base, "http://127.0.0.1:8420");
        for refused in [
            "http://stripe.example.com",
            "http://10.0.0.7:8420",
            "ftp://stripe",
        ] {
            let err = settings(&[
                ("STRIPE_SECRET_KEY", "sk_test_x"),
                ("STRIPE_API_BASE", refused),
            ])
            .unwrap_err();
            assert_eq!(err.name, "STRIPE_API_BASE", "{refused}");
        }
        for allowed in [
            "http://stripe:8420",
            "http://localhost:8420",
            "http://[::1]:8420",
        ] {
            settings(&[
                ("STRIPE_SECRET_KEY", "sk_test_x"),
                ("STRIPE_API_BASE", allowed),
            ])
            .unwrap_or_else(|e| panic!("{allowed}: {e}"));
        }
    }

    fn intent(status: &str, error: Option<ApiError>) -> Intent {
        Intent {
            id: "pi_1".into(),
            status: status.into(),
            amount: 500,
            amount_received: None,
            last_payment_error: error,
        }
    }

    #[test]
    fn an_intent_s_state_is_the_authorisation_s_outcome() {
        assert_eq!(
            decision(intent("requires_capture", None)),
            Ok(ProviderDecision::Authorised {
                reference: "pi_1".into()
            })
        );
        let declined = ApiError {
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: None,
        };
        assert_eq!(
            decision(intent("requires_payment_method", Some(declined))),
            Ok(ProviderDecision::Declined {
                reason: "insufficient_funds".into()
            })
        );
        assert_eq!(
            decision(intent("requires_action", None)),
            Ok(ProviderDecision::Declined {
                reason: "authentication_required".into()
            })
        );
        assert!(matches!(
            decision(intent("processing", None)),
            Err(ProviderError::Unavailable(_))
        ));
    }
}
