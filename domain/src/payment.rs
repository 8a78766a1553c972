//! The Payment aggregate (one per order) and the payment-provider boundary.
//!
//! Authorise, capture, void and refund each ask a [`PaymentProvider`]; a decline is an outcome
//! (recorded as an event), an unreachable provider an error the caller may retry, and a
//! provider's refusal an error it may not. Capture never exceeds what was authorised, refund
//! never exceeds what was captured. Every call carries a key that is the same for every
//! retry of one command, so a provider that keeps idempotency keys never acts twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Money;

/// A boxed future, so providers can sit behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the provider is asked to authorise.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorisationRequest {
    pub order_id: Uuid,
    pub amount: Money,
    pub payment_token: String,
    /// The same for every retry of one command: the provider's idempotency key.
    pub key: String,
}

/// What the provider is asked to capture, void or refund of an authorisation it made.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderCall {
    pub order_id: Uuid,
    /// The provider's reference of the authorisation (a PaymentIntent's id).
    pub reference: String,
    pub amount: Money,
    /// The same for every retry of one command: the provider's idempotency key.
    pub key: String,
}

/// The provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderDecision {
    Authorised { reference: String },
    Declined { reason: String },
}

/// The provider could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// It could not answer (down, overloaded, a network fault): worth retrying.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// It did not answer in time: worth retrying.
    #[error("payment provider did not answer in time")]
    Timeout,
    /// It answered no for good (a capture of a cancelled authorisation, say).
    #[error("payment provider refused: {0}")]
    Refused(String),
}

impl ProviderError {
    /// A fault of the provider (not of the request): what a circuit counts.
    pub fn is_fault(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// A payment provider (a card processor): the port its adapters implement.
pub trait PaymentProvider: Send + Sync {
    fn authorise<'a>(
        &'a self,
        request: &'a AuthorisationRequest,
    ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>>;
    /// Captures `amount` of the authorisation.
    fn capture<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Releases the whole authorisation (`amount` is what it held).
    fn void<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Gives back `amount` of what was captured.
    fn refund<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// What a Payment needs from outside: the provider, and the opener of sealed payment tokens
/// (a token is stored in the log only sealed, and opened right before the provider needs it).
#[derive(Clone)]
pub struct PaymentServices {
    pub provider: Arc<dyn PaymentProvider>,
    pub opener: Arc<dyn crate::sealing::TokenOpener>,
}

/// Commands a payment accepts. `key` is the request's idempotency key (the saga step's
/// command id), from which the provider's keys are made; without one, a key made from the
/// payment's state, which stays the same until the command's events are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Authorise {
        order_id: Uuid,
        amount: Money,
        payment_token: String,
        key: Option<String>,
    },
    Capture {
        amount: Money,
        key: Option<String>,
    },
    Void {
        key: Option<String>,
    },
    Refund {
        amount: Money,
        key: Option<String>,
    },
    /// Brings the payment in line with what the provider reports of it (a signed webhook):
    /// what happened there out of band, or whose answer was lost, becomes the same events
    /// as if the service had asked. Calls no provider.
    Reconcile {
        observed: Observed,
    },
}

/// What the provider reports of an order's payment (a PaymentIntent), in the domain's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub order_id: Uuid,
    /// The provider's reference of the authorisation.
    pub reference: String,
    /// What the authorisation is for.
    pub amount: Money,
    /// The provider holds the amount for capture.
    pub held: bool,
    /// The provider declined it, and why.
    pub declined: Option<String>,
    /// It was cancelled before anything was captured.
    pub cancelled: bool,
    /// Minor units captured so far, and refunded of that.
    pub captured: i64,
    pub refunded: i64,
}

impl PaymentCommand {
    /// Sets the request's idempotency key.
    pub fn set_key(&mut self, new: String) {
        match self {
            Self::Authorise { key, .. }
            | Self::Capture { key, .. }
            | Self::Void { key }
            | Self::Refund { key, .. } => *key = Some(new),
            Self::Reconcile { .. } => {}
        }
    }
}

/// Everything that can happen to a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PaymentEvent {
    PaymentAuthorised {
        order_id: Uuid,
        amount: Money,
        provider_reference: String,
    },
    PaymentDeclined {
        order_id: Uuid,
        amount: Money,
        reason: String,
    },
    PaymentCaptured {
        order_id: Uuid,
        amount: Money,
        captured_total: Money,
    },
    PaymentVoided {
        order_id: Uuid,
        amount: Money,
    },
    PaymentRefunded {
        order_id: Uuid,
        amount: Money,
        refunded_total: Money,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaymentAuthorised { .. } => "PaymentAuthorised",
            Self::PaymentDeclined { .. } => "PaymentDeclined",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
            Self::PaymentVoided { .. } => "PaymentVoided",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Why a payment command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("an amount must be positive, not {0}")]
    InvalidAmount(Money),
    #[error("the payment token must be 1 to 64 of A-Z, a-z, 0-9, _ and -")]
    InvalidToken,
    #[error("this payment was already authorised for {0}")]
    AmountMismatch(Money),
    #[error("the amount is in another currency than the payment")]
    CurrencyMismatch,
    #[error("the payment is not authorised")]
    NotAuthorised,
    #[error("{requested} exceeds what remains: {remaining}")]
    ExceedsRemaining { requested: Money, remaining: Money },
    #[error("the payment was captured: refund it instead")]
    AlreadyCaptured,
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl PaymentError {
    /// A stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidAmount(_) => "invalid_amount",
            Self::InvalidToken => "invalid_token",
            Self::AmountMismatch(_) => "amount_mismatch",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::NotAuthorised => "not_authorised",
            Self::ExceedsRemaining { .. } => "exceeds_remaining",
            Self::AlreadyCaptured => "already_captured",
            Self::Provider(ProviderError::Timeout) => "provider_timeout",
            Self::Provider(ProviderError::Unavailable(_)) => "provider_unavailable",
            Self::Provider(ProviderError::Refused(_)) => "provider_refused",
        }
    }

    /// Whether the same command may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Provider(e) if e.is_fault())
    }
}

/// Where a payment is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    New,
    Authorised,
    Declined,
    Voided,
}

/// The Payment aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub order_id: Option<Uuid>,
    pub status: PaymentStatus,
    pub authorised: Option<Money>,
    pub captured: Option<Money>,
    pub refunded: Option<Money>,
    pub decline_reason: Option<String>,
    /// The provider's reference of the authorisation (what capture, void and refund name).
    #[serde(default)]
    pub reference: Option<String>,
}

fn valid_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn positive(amount: Money) -> Result<(), PaymentError> {
    if amount.amount_minor > 0 {
        Ok(())
    } else {
        Err(PaymentError::InvalidAmount(amount))
    }
}

impl Payment {
    fn authorised_amount(&self) -> Result<Money, PaymentError> {
        match (self.status, self.authorised) {
            (PaymentStatus::Authorised, Some(a)) => Ok(a),
            _ => Err(PaymentError::NotAuthorised),
        }
    }

    fn captured_or_zero(&self, currency: crate::Currency) -> Money {
        self.captured.unwrap_or(Money::zero(currency))
    }

    /// A call on this payment's authorisation, keyed by the command's key or else by `what`
    /// (which names the state the call changes, so a retry before its events are stored
    /// makes the same key).
    fn call(&self, amount: Money, key: Option<String>, what: String) -> ProviderCall {
        let order_id = self.order_id.unwrap_or_default();
        ProviderCall {
            order_id,
            reference: self.reference.clone().unwrap_or_default(),
            amount,
            key: key.unwrap_or_else(|| format!("payment:{order_id}:{what}")),
        }
    }

    async fn decide(
        &self,
        command: PaymentCommand,
        services: &PaymentServices,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        match command {
            PaymentCommand::Reconcile { observed } => Ok(self.reconcile(&observed)),
            PaymentCommand::Authorise {
                order_id,
                amount,
                payment_token,
                key,
            } => {
                positive(amount)?;
                if self.status != PaymentStatus::New {
                    // One authorisation per order: a repeat answers from the state, and its
                    // token is not opened again.
                    let first = self.authorised.unwrap_or(amount);
                    return if first == amount {
                        Ok(vec![])
                    } else {
                        Err(PaymentError::AmountMismatch(first))
                    };
                }
                let payment_token = match services.opener.open(order_id, &payment_token).await {
                    Ok(token) => token,
                    // Erased: the customer's key is gone, so nobody will ever pay with it.
                    Err(crate::sealing::SealingError::Erased) => {
                        return Ok(vec![PaymentEvent::PaymentDeclined {
                            order_id,
                            amount,
                            reason: "payment_token_erased".into(),
                        }])
                    }
                    Err(crate::sealing::SealingError::Invalid) => {
                        return Err(PaymentError::InvalidToken)
                    }
                    Err(crate::sealing::SealingError::Unavailable(why)) => {
                        return Err(PaymentError::Provider(ProviderError::Unavailable(format!(
                            "the payment token could not be opened: {why}"
                        ))))
                    }
                };
                if !valid_token(&payment_token) {
                    return Err(PaymentError::InvalidToken);
                }
                let request = AuthorisationRequest {
                    order_id,
                    amount,
                    payment_token,
                    key: key.unwrap_or_else(|| format!("payment:{order_id}:authorise")),
                };
                Ok(vec![match services.provider.authorise(&request).await? {
                    ProviderDecision::Authorised { reference } => PaymentEvent::PaymentAuthorised {
                        order_id,
                        amount,
                        provider_reference: reference,
                    },
                    ProviderDecision::Declined { reason } => PaymentEvent::PaymentDeclined {
                        order_id,
                        amount,
                        reason,
                    },
                }])
            }
            PaymentCommand::Capture { amount, key } => {
                positive(amount)?;
                let authorised = self.authorised_amount()?;
                if amount.currency != authorised.currency {
                    return Err(PaymentError::CurrencyMismatch);
                }
                let captured = self.captured_or_zero(authorised.currency);
                let remaining = authorised
                    .checked_sub(captured)
                    .map_err(|_| PaymentError::CurrencyMismatch)?;
                if amount.amount_minor > remaining.amount_minor {
                    return Err(PaymentError::ExceedsRemaining {
                        requested: amount,
                        remaining,
                    });
                }
                let captured_total =
                    Money::new(captured.amount_minor + amount.amount_minor, amount.currency);
                let call = self.call(
                    amount,
                    key,
                    format!("capture:{}", captured_total.amount_minor),
                );
                services.provider.capture(&call).await?;
                Ok(vec![PaymentEvent::PaymentCaptured {
                    order_id: self.order_id.unwrap_or_default(),
                    amount,
                    captured_total,
                }])
            }
            PaymentCommand::Void { key } => match self.status {
                // Nothing went through, or it is already voided: nothing to undo.
                PaymentStatus::New | PaymentStatus::Declined | PaymentStatus::Voided => Ok(vec![]),
                PaymentStatus::Authorised => {
                    if self.captured.is_some() {
                        return Err(PaymentError::AlreadyCaptured);
                    }
                    let amount = self.authorised_amount()?;
                    services
                        .provider
                        .void(&self.call(amount, key, "void".into()))
                        .await?;
                    Ok(vec![PaymentEvent::PaymentVoided {
                        order_id: self.order_id.unwrap_or_default(),
                        amount,
                    }])
                }
            },
            PaymentCommand::Refund { amount, key } => {
                positive(amount)?;
                let captured = self.captured.ok_or(PaymentError::NotAuthorised)?;
                if amount.currency != captured.currency {
                    return Err(PaymentError::CurrencyMismatch);
                }
                let refunded = self.refunded.unwrap_or(Money::zero(captured.currency));
                let remaining = Money::new(
                    captured.amount_minor - refunded.amount_minor,
                    captured.currency,
                );
                if amount.amount_minor > remaining.amount_minor {
                    return Err(PaymentError::ExceedsRemaining {
                        requested: amount,
                        remaining,
                    });
                }
                let refunded_total =
                    Money::new(refunded.amount_minor + amount.amount_minor, amount.currency);
                let call = self.call(
                    amount,
                    key,
                    format!("refund:{}", refunded_total.amount_minor),
                );
                services.provider.refund(&call).await?;
                Ok(vec![PaymentEvent::PaymentRefunded {
                    order_id: self.order_id.unwrap_or_default(),
                    amount,
                    refunded_total,
                }])
            }
        }
    }
}

impl Payment {
    /// The next event that brings the payment closer to `observed`, if any.
    fn next_toward(&self, o: &Observed) -> Option<PaymentEvent> {
        let currency = o.amount.currency;
        match self.status {
            PaymentStatus::New if o.held || o.captured > 0 => {
                Some(PaymentEvent::PaymentAuthorised {
                    order_id: o.order_id,
                    amount: o.amount,
                    provider_reference: o.reference.clone(),
                })
            }
            PaymentStatus::New => o
                .declined
                .clone()
                .map(|reason| PaymentEvent::PaymentDeclined {
                    order_id: o.order_id,
                    amount: o.amount,
                    reason,
                }),
            PaymentStatus::Authorised => {
                let captured = self.captured_or_zero(currency).amount_minor;
                let refunded = self.refunded.map_or(0, |r| r.amount_minor);
                if o.captured > captured {
                    Some(PaymentEvent::PaymentCaptured {
                        order_id: o.order_id,
                        amount: Money::new(o.captured - captured, currency),
                        captured_total: Money::new(o.captured, currency),
                    })
                } else if o.cancelled && captured == 0 {
                    Some(PaymentEvent::PaymentVoided {
                        order_id: o.order_id,
                        amount: self.authorised.unwrap_or(o.amount),
                    })
                } else if o.refunded > refunded && captured > 0 {
                    Some(PaymentEvent::PaymentRefunded {
                        order_id: o.order_id,
                        amount: Money::new(o.refunded - refunded, currency),
                        refunded_total: Money::new(o.refunded, currency),
                    })
                } else {
                    None
                }
            }
            PaymentStatus::Declined | PaymentStatus::Voided => None,
        }
    }

    /// The events that bring the payment in line with `observed`: none when it is another
    /// authorisation than the payment's (an intent a lost answer left behind), in another
    /// currency, or already in line.
    fn reconcile(&self, observed: &Observed) -> Vec<PaymentEvent> {
        let other_intent = self
            .reference
            .as_ref()
            .is_some_and(|r| *r != observed.reference);
        let other_currency = self
            .authorised
            .is_some_and(|a| a.currency != observed.amount.currency);
        if other_intent || other_currency {
            return Vec::new();
        }
        let mut state = self.clone();
        let mut events = Vec::new();
        // Each event moves the state on; a handful at most (authorised, captured, refunded).
        while let Some(event) = state.next_toward(observed) {
            state.apply(event.clone());
            events.push(event);
            if events.len() > 4 {
                break;
            }
        }
        events
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "Payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = PaymentServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, services).await? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::PaymentAuthorised {
                order_id,
                amount,
                provider_reference,
            } => {
                self.order_id = Some(order_id);
                self.status = PaymentStatus::Authorised;
                self.authorised = Some(amount);
                self.reference = Some(provider_reference);
            }
            PaymentEvent::PaymentDeclined {
                order_id, reason, ..
            } => {
                self.order_id = Some(order_id);
                self.status = PaymentStatus::Declined;
                self.decline_reason = Some(reason);
            }
            PaymentEvent::PaymentCaptured { captured_total, .. } => {
                self.captured = Some(captured_total);
            }
            PaymentEvent::PaymentVoided { .. } => self.status = PaymentStatus::Voided,
            PaymentEvent::PaymentRefunded { refunded_total, .. } => {
                self.refunded = Some(refunded_total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::eur;
    use crate::Currency;
    use cqrs_es::test::TestFramework;
    use std::sync::Mutex;

    /// Opens `sealed:<token>` and gives back anything else as it is; `sealed:erased` is a
    /// token of an erased customer.
    struct Unsealing;

    impl crate::sealing::TokenOpener for Unsealing {
        fn open<'a>(
            &'a self,
            _order_id: Uuid,
            token: &'a str,
        ) -> BoxFuture<'a, Result<String, crate::sealing::SealingError>> {
            let opened = match token.strip_prefix("sealed:") {
                Some("erased") => Err(crate::sealing::SealingError::Erased),
                Some(clear) => Ok(clear.to_owned()),
                None => Ok(token.to_owned()),
            };
            Box::pin(std::future::ready(opened))
        }
    }

    /// A provider scripted by token, for the aggregate's rules alone: `tok_ok` (and any
    /// `tok_ok_<card>`) authorises, `tok_flaky` is unavailable, anything else declines; capture,
    /// void and refund succeed.
    /// (The payments service's `TestProvider` is the one a development deployment runs.)
    struct Scripted;

    impl PaymentProvider for Scripted {
        fn authorise<'a>(
            &'a self,
            request: &'a AuthorisationRequest,
        ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
            let decision = match request.payment_token.as_str() {
                ok if ok == "tok_ok" || ok.starts_with("tok_ok_") => {
                    Ok(ProviderDecision::Authorised {
                        reference: format!("test-{}", request.order_id),
                    })
                }
                "tok_flaky" => Err(ProviderError::Unavailable("scripted".into())),
                _ => Ok(ProviderDecision::Declined {
                    reason: "card_declined".into(),
                }),
            };
            Box::pin(std::future::ready(decision))
        }

        fn capture<'a>(&'a self, _: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
            Box::pin(std::future::ready(Ok(())))
        }

        fn void<'a>(&'a self, _: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
            Box::pin(std::future::ready(Ok(())))
        }

        fn refund<'a>(&'a self, _: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn services() -> PaymentServices {
        PaymentServices {
            provider: Arc::new(Scripted),
            opener: Arc::new(Unsealing),
        }
    }

    fn order() -> Uuid {
        Uuid::from_u128(7)
    }

    fn authorise(token: &str, amount: Money) -> PaymentCommand {
        PaymentCommand::Authorise {
            order_id: order(),
            amount,
            payment_token: token.into(),
            key: None,
        }
    }

    fn authorised(amount: Money) -> PaymentEvent {
        PaymentEvent::PaymentAuthorised {
            order_id: order(),
            amount,
            provider_reference: format!("test-{}", order()),
        }
    }

    fn captured(amount: i64, total: i64) -> PaymentEvent {
        PaymentEvent::PaymentCaptured {
            order_id: order(),
            amount: eur(amount),
            captured_total: eur(total),
        }
    }

    async fn expect(given: Vec<PaymentEvent>, when: PaymentCommand, then: Vec<PaymentEvent>) {
        crate::given::expect::<Payment>(services(), given, when, then).await;
    }

    async fn refuse(given: Vec<PaymentEvent>, when: PaymentCommand, error: PaymentError) {
        crate::given::refuse::<Payment>(services(), given, when, error).await;
    }

    #[tokio::test]
    async fn authorise_follows_the_token() {
        expect(
            vec![],
            authorise("tok_ok", eur(500)),
            vec![authorised(eur(500))],
        )
        .await;
        expect(
            vec![],
            authorise("tok_ok_card42", eur(500)),
            vec![authorised(eur(500))],
        )
        .await;
        expect(
            vec![],
            authorise("tok_decline", eur(500)),
            vec![PaymentEvent::PaymentDeclined {
                order_id: order(),
                amount: eur(500),
                reason: "card_declined".into(),
            }],
        )
        .await;
        refuse(
            vec![],
            authorise("tok_ok", eur(0)),
            PaymentError::InvalidAmount(eur(0)),
        )
        .await;
        refuse(
            vec![],
            authorise("bad token!", eur(1)),
            PaymentError::InvalidToken,
        )
        .await;
    }

    #[tokio::test]
    async fn a_sealed_token_is_opened_before_the_provider_and_an_erased_one_declines() {
        expect(
            vec![],
            authorise("sealed:tok_ok", eur(500)),
            vec![authorised(eur(500))],
        )
        .await;
        expect(
            vec![],
            authorise("sealed:erased", eur(500)),
            vec![PaymentEvent::PaymentDeclined {
                order_id: order(),
                amount: eur(500),
                reason: "payment_token_erased".into(),
            }],
        )
        .await;
        refuse(
            vec![],
            authorise("sealed:bad token!", eur(1)),
            PaymentError::InvalidToken,
        )
        .await;
    }

    #[tokio::test]
    async fn authorise_twice_changes_nothing_and_a_new_amount_is_refused() {
        expect(
            vec![authorised(eur(500))],
            authorise("tok_ok", eur(500)),
            vec![],
        )
        .await;
        refuse(
            vec![authorised(eur(500))],
            authorise("tok_ok", eur(600)),
            PaymentError::AmountMismatch(eur(500)),
        )
        .await;
    }

    #[tokio::test]
    async fn an_unavailable_provider_is_an_error_and_nothing_is_recorded() {
        let mut framework_error = TestFramework::<Payment>::with(services())
            .given_no_previous_events()
            .when_async(authorise("tok_flaky", eur(1)))
            .await
            .inspect_result();
        assert!(matches!(
            framework_error.as_mut().err(),
            Some(PaymentError::Provider(ProviderError::Unavailable(_)))
        ));
    }

    #[tokio::test]
    async fn capture_never_exceeds_the_authorisation() {
        expect(
            vec![authorised(eur(500))],
            PaymentCommand::Capture {
                amount: eur(300),
                key: None,
            },
            vec![captured(300, 300)],
        )
        .await;
        refuse(
            vec![authorised(eur(500)), captured(300, 300)],
            PaymentCommand::Capture {
                amount: eur(201),
                key: None,
            },
            PaymentError::ExceedsRemaining {
                requested: eur(201),
                remaining: eur(200),
            },
        )
        .await;
        refuse(
            vec![],
            PaymentCommand::Capture {
                amount: eur(1),
                key: None,
            },
            PaymentError::NotAuthorised,
        )
        .await;
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        refuse(
            vec![authorised(eur(500))],
            PaymentCommand::Capture {
                amount: usd,
                key: None,
            },
            PaymentError::CurrencyMismatch,
        )
        .await;
        refuse(
            vec![authorised(eur(500))],
            PaymentCommand::Capture {
                amount: eur(-5),
                key: None,
            },
            PaymentError::InvalidAmount(eur(-5)),
        )
        .await;
    }

    /// Records every capture, void and refund it is asked for, and answers them `answer`.
    struct Recording {
        calls: Mutex<Vec<(&'static str, ProviderCall)>>,
        answer: Result<(), ProviderError>,
    }

    impl Recording {
        fn answering(answer: Result<(), ProviderError>) -> Arc<Self> {
            Arc::new(Self {
                calls: Mutex::default(),
                answer,
            })
        }

        fn record(
            &self,
            op: &'static str,
            call: &ProviderCall,
        ) -> BoxFuture<'_, Result<(), ProviderError>> {
            self.calls.lock().unwrap().push((op, call.clone()));
            Box::pin(std::future::ready(self.answer.clone()))
        }
    }

    impl PaymentProvider for Recording {
        fn authorise<'a>(
            &'a self,
            request: &'a AuthorisationRequest,
        ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
            Box::pin(std::future::ready(Ok(ProviderDecision::Authorised {
                reference: format!("test-{}", request.order_id),
            })))
        }
        fn capture<'a>(
            &'a self,
            call: &'a ProviderCall,
        ) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.record("capture", call)
        }
        fn void<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.record("void", call)
        }
        fn refund<'a>(
            &'a self,
            call: &'a ProviderCall,
        ) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.record("refund", call)
        }
    }

    fn with_provider(provider: Arc<Recording>) -> PaymentServices {
        PaymentServices {
            provider,
            opener: Arc::new(Unsealing),
        }
    }

    #[tokio::test]
    async fn each_provider_call_names_the_authorisation_and_the_command_s_key() {
        let provider = Recording::answering(Ok(()));
        let given = vec![authorised(eur(500)), captured(200, 200)];
        for (command, op, key) in [
            (
                PaymentCommand::Capture {
                    amount: eur(300),
                    key: Some("nats:c-1".into()),
                },
                "capture",
                "nats:c-1".to_owned(),
            ),
            (
                PaymentCommand::Capture {
                    amount: eur(300),
                    key: None,
                },
                "capture",
                format!("payment:{}:capture:500", order()),
            ),
            (
                PaymentCommand::Refund {
                    amount: eur(50),
                    key: None,
                },
                "refund",
                format!("payment:{}:refund:50", order()),
            ),
        ] {
            TestFramework::<Payment>::with(with_provider(provider.clone()))
                .given(given.clone())
                .when_async(command)
                .await
                .inspect_result()
                .unwrap();
            let (called, call) = provider.calls.lock().unwrap().pop().unwrap();
            assert_eq!((called, call.key.as_str()), (op, key.as_str()));
            assert_eq!(call.reference, format!("test-{}", order()));
        }
        TestFramework::<Payment>::with(with_provider(provider.clone()))
            .given(vec![authorised(eur(500))])
            .when_async(PaymentCommand::Void {
                key: Some("nats:v".into()),
            })
            .await
            .inspect_result()
            .unwrap();
        let (called, call) = provider.calls.lock().unwrap().pop().unwrap();
        assert_eq!(
            (called, call.key.as_str(), call.amount),
            ("void", "nats:v", eur(500))
        );
    }

    #[tokio::test]
    async fn a_provider_s_refusal_is_final_and_its_fault_is_retried_with_nothing_written() {
        for (answer, retryable) in [
            (
                ProviderError::Refused("payment_intent_unexpected_state".into()),
                false,
            ),
            (ProviderError::Unavailable("503".into()), true),
            (ProviderError::Timeout, true),
        ] {
            let provider = Recording::answering(Err(answer.clone()));
            for command in [
                PaymentCommand::Capture {
                    amount: eur(500),
                    key: None,
                },
                PaymentCommand::Void { key: None },
            ] {
                TestFramework::<Payment>::with(with_provider(provider.clone()))
                    .given(vec![authorised(eur(500))])
                    .when_async(command)
                    .await
                    .then_expect_error(PaymentError::Provider(answer.clone()));
            }
            assert_eq!(PaymentError::Provider(answer).is_retryable(), retryable);
        }
    }

    fn observed(held: bool, captured: i64, refunded: i64) -> Observed {
        Observed {
            order_id: order(),
            reference: format!("test-{}", order()),
            amount: eur(500),
            held,
            declined: None,
            cancelled: false,
            captured,
            refunded,
        }
    }

    fn reconcile(observed: Observed) -> PaymentCommand {
        PaymentCommand::Reconcile { observed }
    }

    #[tokio::test]
    async fn what_the_provider_reports_becomes_the_same_events_once() {
        expect(
            vec![],
            reconcile(observed(true, 0, 0)),
            vec![authorised(eur(500))],
        )
        .await;
        // Captured and partly refunded out of band, all at once.
        expect(
            vec![],
            reconcile(observed(false, 500, 200)),
            vec![
                authorised(eur(500)),
                captured(500, 500),
                PaymentEvent::PaymentRefunded {
                    order_id: order(),
                    amount: eur(200),
                    refunded_total: eur(200),
                },
            ],
        )
        .await;
        expect(
            vec![authorised(eur(500)), captured(300, 300)],
            reconcile(observed(false, 500, 0)),
            vec![captured(200, 500)],
        )
        .await;
        // Told again (a replayed webhook): nothing more.
        expect(
            vec![authorised(eur(500)), captured(500, 500)],
            reconcile(observed(false, 500, 0)),
            vec![],
        )
        .await;
        let mut cancelled = observed(false, 0, 0);
        cancelled.cancelled = true;
        expect(
            vec![authorised(eur(500))],
            reconcile(cancelled),
            vec![PaymentEvent::PaymentVoided {
                order_id: order(),
                amount: eur(500),
            }],
        )
        .await;
        let mut declined = observed(false, 0, 0);
        declined.declined = Some("insufficient_funds".into());
        expect(
            vec![],
            reconcile(declined),
            vec![PaymentEvent::PaymentDeclined {
                order_id: order(),
                amount: eur(500),
                reason: "insufficient_funds".into(),
            }],
        )
        .await;
    }

    #[tokio::test]
    async fn another_intent_or_currency_than_the_payment_s_changes_nothing() {
        let mut orphan = observed(true, 500, 0);
        orphan.reference = "pi_left_by_a_lost_answer".into();
        expect(vec![authorised(eur(500))], reconcile(orphan), vec![]).await;
        let mut usd = observed(false, 500, 0);
        usd.amount = Money::new(500, Currency::parse("USD").unwrap());
        expect(vec![authorised(eur(500))], reconcile(usd), vec![]).await;
    }

    #[tokio::test]
    async fn void_undoes_an_uncaptured_authorisation_once() {
        let voided = PaymentEvent::PaymentVoided {
            order_id: order(),
            amount: eur(500),
        };
        expect(
            vec![authorised(eur(500))],
            PaymentCommand::Void { key: None },
            vec![voided.clone()],
        )
        .await;
        expect(
            vec![authorised(eur(500)), voided],
            PaymentCommand::Void { key: None },
            vec![],
        )
        .await;
        expect(vec![], PaymentCommand::Void { key: None }, vec![]).await;
        refuse(
            vec![authorised(eur(500)), captured(500, 500)],
            PaymentCommand::Void { key: None },
            PaymentError::AlreadyCaptured,
        )
        .await;
    }

    #[tokio::test]
    async fn refund_never_exceeds_the_capture() {
        expect(
            vec![authorised(eur(500)), captured(500, 500)],
            PaymentCommand::Refund {
                amount: eur(200),
                key: None,
            },
            vec![PaymentEvent::PaymentRefunded {
                order_id: order(),
                amount: eur(200),
                refunded_total: eur(200),
            }],
        )
        .await;
        refuse(
            vec![authorised(eur(500)), captured(100, 100)],
            PaymentCommand::Refund {
                amount: eur(101),
                key: None,
            },
            PaymentError::ExceedsRemaining {
                requested: eur(101),
                remaining: eur(100),
            },
        )
        .await;
        refuse(
            vec![authorised(eur(500))],
            PaymentCommand::Refund {
                amount: eur(1),
                key: None,
            },
            PaymentError::NotAuthorised,
        )
        .await;
    }
}
