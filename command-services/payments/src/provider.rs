//! A deadline around any payment provider: one that does not answer in time is reported as
//! a retryable timeout instead of holding the command (and its caller) forever.

use std::time::Duration;

use domain::payment::{
    AuthorisationRequest, BoxFuture, PaymentProvider, ProviderDecision, ProviderError,
};

/// Wraps a provider with a timeout.
#[derive(Debug)]
pub struct TimeoutProvider<P> {
    inner: P,
    timeout: Duration,
}

impl<P> TimeoutProvider<P> {
    pub fn new(inner: P, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<P: PaymentProvider> PaymentProvider for TimeoutProvider<P> {
    fn authorise<'a>(
        &'a self,
        request: &'a AuthorisationRequest,
    ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.inner.authorise(request))
                .await
                .unwrap_or(Err(ProviderError::Timeout))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::payment::TestProvider;
    use domain::{Currency, Money};
    use uuid::Uuid;

    fn request(token: &str) -> AuthorisationRequest {
        AuthorisationRequest {
            order_id: Uuid::from_u128(1),
            amount: Money::new(100, Currency::parse("EUR").unwrap()),
            payment_token: token.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_provider_times_out_at_the_deadline() {
        let provider = TimeoutProvider::new(TestProvider::default(), Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let answer = provider.authorise(&request("tok_timeout")).await;
        assert_eq!(answer, Err(ProviderError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_provider_is_passed_through() {
        let provider = TimeoutProvider::new(TestProvider::default(), Duration::from_secs(2));
        assert!(matches!(
            provider.authorise(&request("tok_ok")).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
    }
}
