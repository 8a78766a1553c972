//! The Payment aggregate (one per order) and the payment-provider boundary.
//!
//! Authorise asks a [`PaymentProvider`]; a decline is an outcome (recorded as an event), while
//! an unreachable provider is an error the caller may retry. Capture never exceeds what was
//! authorised, refund never exceeds what was captured.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

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
}

/// The provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderDecision {
    Authorised { reference: String },
    Declined { reason: String },
}

/// The provider could not answer: worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    #[error("payment provider did not answer in time")]
    Timeout,
}

/// A payment provider. A real one (a card processor) plugs in here.
pub trait PaymentProvider: Send + Sync {
    fn authorise<'a>(
        &'a self,
        request: &'a AuthorisationRequest,
    ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>>;
}

/// The built-in provider, deterministic by token: `tok_ok` (and any `tok_ok_<card>`, a card
/// of its own that a test can search for) authorises, `tok_decline` declines, `tok_timeout`
/// never answers, `tok_flaky` fails its first two attempts (per order, in this process) and
/// then authorises. Any other token is declined as unknown.
#[derive(Debug, Default)]
pub struct TestProvider {
    flaky_attempts: Mutex<HashMap<Uuid, u32>>,
}

impl PaymentProvider for TestProvider {
    fn authorise<'a>(
        &'a self,
        request: &'a AuthorisationRequest,
    ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
        let authorised = || {
            Ok(ProviderDecision::Authorised {
                reference: format!("test-{}", request.order_id),
            })
        };
        let decision = match request.payment_token.as_str() {
            "tok_ok" => authorised(),
            card if card.starts_with("tok_ok_") => authorised(),
            "tok_decline" => Ok(ProviderDecision::Declined {
                reason: "card_declined".into(),
            }),
            "tok_timeout" => return Box::pin(std::future::pending()),
            "tok_flaky" => {
                let mut attempts = self
                    .flaky_attempts
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let n = attempts.entry(request.order_id).or_insert(0);
                *n += 1;
                if *n <= 2 {
                    Err(ProviderError::Unavailable(format!(
                        "flaky provider failed attempt {n}"
                    )))
                } else {
                    authorised()
                }
            }
            _ => Ok(ProviderDecision::Declined {
                reason: "unknown_token".into(),
            }),
        };
        Box::pin(std::future::ready(decision))
    }
}

/// What a Payment needs from outside: the provider, and the opener of sealed payment tokens
/// (a token is stored in the log only sealed, and opened right before the provider needs it).
#[derive(Clone)]
pub struct PaymentServices {
    pub provider: Arc<dyn PaymentProvider>,
    pub opener: Arc<dyn crate::sealing::TokenOpener>,
}

/// Commands a payment accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Authorise {
        order_id: Uuid,
        amount: Money,
        payment_token: String,
    },
    Capture {
        amount: Money,
    },
    Void,
    Refund {
        amount: Money,
    },
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
        }
    }

    /// Whether the same command may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Provider(_))
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

    async fn decide(
        &self,
        command: PaymentCommand,
        services: &PaymentServices,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        match command {
            PaymentCommand::Authorise {
                order_id,
                amount,
                payment_token,
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
            PaymentCommand::Capture { amount } => {
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
                Ok(vec![PaymentEvent::PaymentCaptured {
                    order_id: self.order_id.unwrap_or_default(),
                    amount,
                    captured_total: Money::new(
                        captured.amount_minor + amount.amount_minor,
                        amount.currency,
                    ),
                }])
            }
            PaymentCommand::Void => match self.status {
                // Nothing went through, or it is already voided: nothing to undo.
                PaymentStatus::New | PaymentStatus::Declined | PaymentStatus::Voided => Ok(vec![]),
                PaymentStatus::Authorised => {
                    if self.captured.is_some() {
                        return Err(PaymentError::AlreadyCaptured);
                    }
                    Ok(vec![PaymentEvent::PaymentVoided {
                        order_id: self.order_id.unwrap_or_default(),
                        amount: self.authorised_amount()?,
                    }])
                }
            },
            PaymentCommand::Refund { amount } => {
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
                Ok(vec![PaymentEvent::PaymentRefunded {
                    order_id: self.order_id.unwrap_or_default(),
                    amount,
                    refunded_total: Money::new(
                        refunded.amount_minor + amount.amount_minor,
                        amount.currency,
                    ),
                }])
            }
        }
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
                order_id, amount, ..
            } => {
                self.order_id = Some(order_id);
                self.status = PaymentStatus::Authorised;
                self.authorised = Some(amount);
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

    fn services() -> PaymentServices {
        PaymentServices {
            provider: Arc::new(TestProvider::default()),
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
        TestFramework::<Payment>::with(services())
            .given(given)
            .when_async(when)
            .await
            .then_expect_events(then);
    }

    async fn refuse(given: Vec<PaymentEvent>, when: PaymentCommand, error: PaymentError) {
        TestFramework::<Payment>::with(services())
            .given(given)
            .when_async(when)
            .await
            .then_expect_error(error);
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
    async fn flaky_fails_twice_then_authorises() {
        let provider = TestProvider::default();
        let request = AuthorisationRequest {
            order_id: order(),
            amount: eur(1),
            payment_token: "tok_flaky".into(),
        };
        assert!(provider.authorise(&request).await.is_err());
        assert!(provider.authorise(&request).await.is_err());
        assert!(matches!(
            provider.authorise(&request).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
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
    async fn timeout_never_answers() {
        let provider = TestProvider::default();
        let request = AuthorisationRequest {
            order_id: order(),
            amount: eur(1),
            payment_token: "tok_timeout".into(),
        };
        let answer = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            provider.authorise(&request),
        )
        .await;
        assert!(answer.is_err(), "tok_timeout must not answer");
    }

    #[tokio::test]
    async fn capture_never_exceeds_the_authorisation() {
        expect(
            vec![authorised(eur(500))],
            PaymentCommand::Capture { amount: eur(300) },
            vec![captured(300, 300)],
        )
        .await;
        refuse(
            vec![authorised(eur(500)), captured(300, 300)],
            PaymentCommand::Capture { amount: eur(201) },
            PaymentError::ExceedsRemaining {
                requested: eur(201),
                remaining: eur(200),
            },
        )
        .await;
        refuse(
            vec![],
            PaymentCommand::Capture { amount: eur(1) },
            PaymentError::NotAuthorised,
        )
        .await;
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        refuse(
            vec![authorised(eur(500))],
            PaymentCommand::Capture { amount: usd },
            PaymentError::CurrencyMismatch,
        )
        .await;
        refuse(
            vec![authorised(eur(500))],
            PaymentCommand::Capture { amount: eur(-5) },
            PaymentError::InvalidAmount(eur(-5)),
        )
        .await;
    }

    #[tokio::test]
    async fn void_undoes_an_uncaptured_authorisation_once() {
        let voided = PaymentEvent::PaymentVoided {
            order_id: order(),
            amount: eur(500),
        };
        expect(
            vec![authorised(eur(500))],
            PaymentCommand::Void,
            vec![voided.clone()],
        )
        .await;
        expect(
            vec![authorised(eur(500)), voided],
            PaymentCommand::Void,
            vec![],
        )
        .await;
        expect(vec![], PaymentCommand::Void, vec![]).await;
        refuse(
            vec![authorised(eur(500)), captured(500, 500)],
            PaymentCommand::Void,
            PaymentError::AlreadyCaptured,
        )
        .await;
    }

    #[tokio::test]
    async fn refund_never_exceeds_the_capture() {
        expect(
            vec![authorised(eur(500)), captured(500, 500)],
            PaymentCommand::Refund { amount: eur(200) },
            vec![PaymentEvent::PaymentRefunded {
                order_id: order(),
                amount: eur(200),
                refunded_total: eur(200),
            }],
        )
        .await;
        refuse(
            vec![authorised(eur(500)), captured(100, 100)],
            PaymentCommand::Refund { amount: eur(101) },
            PaymentError::ExceedsRemaining {
                requested: eur(101),
                remaining: eur(100),
            },
        )
        .await;
        refuse(
            vec![authorised(eur(500))],
            PaymentCommand::Refund { amount: eur(1) },
            PaymentError::NotAuthorised,
        )
        .await;
    }
}
