//! The payment provider for tests and local development: deterministic by token, so a test
//! can ask for a decline, a timeout or a flaky provider. It runs only where the settings allow
//! it (`ALLOW_TEST_PAYMENT_PROVIDER`); the domain knows only the `PaymentProvider` port.

use std::collections::HashMap;
use std::sync::Mutex;

use domain::payment::{
    AuthorisationRequest, BoxFuture, PaymentProvider, ProviderCall, ProviderDecision, ProviderError,
};
use uuid::Uuid;

/// The provider for tests, deterministic by token: `tok_ok` (and any `tok_ok_<card>`, a card
/// of its own that a test can search for) authorises, `tok_decline` declines, `tok_timeout`
/// never answers, `tok_flaky` fails its first two attempts (per order, in this process) and
/// then authorises. Any other token is declined as unknown. Capture, void and refund always
/// succeed. A deployment runs it only when told it is a development one.
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

    fn capture<'a>(&'a self, _call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn void<'a>(&'a self, _call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn refund<'a>(&'a self, _call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Currency, Money};

    fn order() -> Uuid {
        Uuid::from_u128(7)
    }

    #[tokio::test]
    async fn flaky_fails_twice_then_authorises() {
        let provider = TestProvider::default();
        let request = AuthorisationRequest {
            order_id: order(),
            amount: Money::new(1, Currency::parse("EUR").unwrap()),
            payment_token: "tok_flaky".into(),
            key: "k".into(),
        };
        assert!(provider.authorise(&request).await.is_err());
        assert!(provider.authorise(&request).await.is_err());
        assert!(matches!(
            provider.authorise(&request).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
    }

    #[tokio::test]
    async fn timeout_never_answers() {
        let provider = TestProvider::default();
        let request = AuthorisationRequest {
            order_id: order(),
            amount: Money::new(1, Currency::parse("EUR").unwrap()),
            payment_token: "tok_timeout".into(),
            key: "k".into(),
        };
        let answer = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            provider.authorise(&request),
        )
        .await;
        assert!(answer.is_err(), "tok_timeout must not answer");
    }
}
