//! What stands around any payment provider: a deadline, so one that does not answer in time is
//! a retryable timeout instead of holding the command (and its caller) forever; and, for a
//! real provider, a circuit that counts the provider's own faults (timeouts, network faults,
//! 5xx, 429) and, while open, answers at once that it is unavailable. A decline or a refusal is
//! an answer, never a fault, so no customer can open the circuit by choosing how they fail.

use std::future::Future;
use std::time::Duration;

use domain::payment::{
    AuthorisationRequest, BoxFuture, PaymentProvider, ProviderCall, ProviderDecision, ProviderError,
};
use service_kit::breaker::Breaker;

/// `payment_provider_circuit` (0 closed, 1 open, 2 probing) and
/// `payment_provider_rejected_total`, labelled by provider.
const METRICS: service_kit::breaker::Metrics = service_kit::breaker::Metrics {
    state: "payment_provider_circuit",
    rejected: "payment_provider_rejected_total",
    label: "provider",
};

/// A provider with a deadline on every call and, optionally, a circuit.
#[derive(Debug)]
pub struct Guarded<P> {
    inner: P,
    timeout: Duration,
    circuit: Option<Breaker>,
}

impl<P> Guarded<P> {
    /// `inner` with a `timeout` on every call and no circuit.
    pub fn new(inner: P, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            circuit: None,
        }
    }

    /// Opens a circuit named `name` after `failures` faults in a row, for `open_for`.
    pub fn with_circuit(mut self, name: &'static str, failures: u32, open_for: Duration) -> Self {
        self.circuit = Some(Breaker::new(name, failures, open_for, METRICS));
        self
    }

    async fn guard<T>(
        &self,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        if let Some(circuit) = &self.circuit {
            if let Err(secs) = circuit.admit() {
                return Err(ProviderError::Unavailable(format!(
                    "the provider's circuit is open after repeated faults (probed again in {secs} s)"
                )));
            }
        }
        // Dropped before the answer (its caller went away), the call gives a probe it holds
        // back; otherwise a half-open circuit would wait for an answer that never comes.
        let mut admitted = Admitted(self.circuit.as_ref());
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(ProviderError::Timeout));
        admitted.0 = None;
        if let Some(circuit) = &self.circuit {
            match &answer {
                Err(e) if e.is_fault() => circuit.failed(),
                _ => circuit.succeeded(),
            }
        }
        answer
    }
}

/// An admitted call in flight: if it is dropped unanswered, its circuit hears it was abandoned.
struct Admitted<'a>(Option<&'a Breaker>);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(circuit) = self.0 {
            circuit.abandoned();
        }
    }
}

impl<P: PaymentProvider> PaymentProvider for Guarded<P> {
    fn authorise<'a>(
        &'a self,
        request: &'a AuthorisationRequest,
    ) -> BoxFuture<'a, Result<ProviderDecision, ProviderError>> {
        Box::pin(self.guard(self.inner.authorise(request)))
    }

    fn capture<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.guard(self.inner.capture(call)))
    }

    fn void<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.guard(self.inner.void(call)))
    }

    fn refund<'a>(&'a self, call: &'a ProviderCall) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.guard(self.inner.refund(call)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_provider::TestProvider;
    use domain::{Currency, Money};
    use uuid::Uuid;

    fn request(token: &str) -> AuthorisationRequest {
        AuthorisationRequest {
            order_id: Uuid::from_u128(1),
            amount: Money::new(100, Currency::parse("EUR").unwrap()),
            payment_token: token.into(),
            key: "k".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_provider_times_out_at_the_deadline() {
        let provider = Guarded::new(TestProvider::default(), Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let answer = provider.authorise(&request("tok_timeout")).await;
        assert_eq!(answer, Err(ProviderError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_provider_is_passed_through() {
        let provider = Guarded::new(TestProvider::default(), Duration::from_secs(2));
        assert!(matches!(
            provider.authorise(&request("tok_ok")).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_open_the_circuit_and_declines_never_do() {
        let provider = Guarded::new(TestProvider::default(), Duration::from_secs(2)).with_circuit(
            "test",
            3,
            Duration::from_secs(30),
        );
        // Declines are answers: any number of them leaves the circuit closed.
        for _ in 0..10 {
            assert!(matches!(
                provider.authorise(&request("tok_decline")).await,
                Ok(ProviderDecision::Declined { .. })
            ));
        }
        for _ in 0..3 {
            assert_eq!(
                provider.authorise(&request("tok_timeout")).await,
                Err(ProviderError::Timeout)
            );
        }
        // Open: answered at once, without asking the provider.
        let started = tokio::time::Instant::now();
        assert!(matches!(
            provider.authorise(&request("tok_ok")).await,
            Err(ProviderError::Unavailable(why)) if why.contains("circuit is open")
        ));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // After the pause one probe goes through, and its answer closes the circuit.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(matches!(
            provider.authorise(&request("tok_ok")).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
        assert!(matches!(
            provider.authorise(&request("tok_ok")).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_by_its_caller_does_not_keep_the_circuit_half_open() {
        let provider = Guarded::new(TestProvider::default(), Duration::from_secs(2)).with_circuit(
            "test",
            1,
            Duration::from_secs(30),
        );
        assert_eq!(
            provider.authorise(&request("tok_timeout")).await,
            Err(ProviderError::Timeout)
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        // The probe's caller goes away before the provider answers.
        let dropped = tokio::time::timeout(
            Duration::from_millis(10),
            provider.authorise(&request("tok_timeout")),
        )
        .await;
        assert!(dropped.is_err());
        // The next call is the probe, not refused behind one that will never answer.
        assert!(matches!(
            provider.authorise(&request("tok_ok")).await,
            Ok(ProviderDecision::Authorised { .. })
        ));
    }
}
