//! The payments command service: Payment aggregates (one per order) behind a payment provider,
//! over HTTP and NATS (`cmd.payments.*`), the `payments` database, its outbox to `PAYMENTS`.
#![forbid(unsafe_code)]

pub mod open;
pub mod provider;
pub mod spec;
pub mod stripe;
pub mod test_provider;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use command_kit::{CommandApp, ServiceSettings};
use domain::payment::{PaymentProvider, PaymentServices};
use service_kit::env::{Env, EnvError};
use test_provider::TestProvider;

pub use spec::PaymentsSpec;

/// Which payment provider the service speaks to.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Stripe's PaymentIntents API (or a Stripe-compatible server).
    Stripe(stripe::StripeSettings),
    /// The token-named test provider: development and tests only.
    Test,
}

/// The payments service's settings: the common ones and the provider's.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceSettings,
    /// `PAYMENT_PROVIDER`: `stripe` (the default) or `test`, which the service runs only with
    /// `ALLOW_TEST_PAYMENT_PROVIDER=true` (whoever reaches it could pay with `tok_ok`).
    pub provider: Provider,
    /// `PAYMENT_PROVIDER_TIMEOUT_MS`: longest wait for one provider call, default 2000.
    pub provider_timeout: Duration,
    /// `PAYMENT_PROVIDER_CIRCUIT_FAILURES` (default 5) faults of the provider in a row open its
    /// circuit for `PAYMENT_PROVIDER_CIRCUIT_OPEN_MS` (default 5000). Stripe only: the test
    /// provider fails as its tokens say, which is no fault of a provider.
    pub circuit_failures: u32,
    pub circuit_open_for: Duration,
    /// Stripe's signed webhooks (`STRIPE_WEBHOOK_SECRET`); none: not taken.
    pub webhook: Option<webhook::WebhookSettings>,
}

/// The service's settings from an environment.
pub fn settings(env: &Env) -> Result<Settings, EnvError> {
    let provider = match env.string_or("PAYMENT_PROVIDER", "stripe").as_str() {
        "stripe" => Provider::Stripe(stripe::StripeSettings::from_env(env)?),
        "test" if env.bool_or("ALLOW_TEST_PAYMENT_PROVIDER", false)? => Provider::Test,
        "test" => {
            return Err(EnvError {
                name: "PAYMENT_PROVIDER".into(),
                reason: "\"test\" pays for anything with payment_token tok_ok, so it runs only in \
                         development: set ALLOW_TEST_PAYMENT_PROVIDER=true there, or use \
                         PAYMENT_PROVIDER=stripe with STRIPE_SECRET_KEY"
                    .into(),
            })
        }
        other => {
            return Err(EnvError {
                name: "PAYMENT_PROVIDER".into(),
                reason: format!("{other:?} is not a provider (stripe or test)"),
            })
        }
    };
    Ok(Settings {
        service: command_kit::settings::<PaymentsSpec>(env)?,
        provider,
        provider_timeout: env.millis_or("PAYMENT_PROVIDER_TIMEOUT_MS", Duration::from_secs(2))?,
        circuit_failures: env.within_or("PAYMENT_PROVIDER_CIRCUIT_FAILURES", 5, 1..=1000)?,
        circuit_open_for: env
            .millis_or("PAYMENT_PROVIDER_CIRCUIT_OPEN_MS", Duration::from_secs(5))?,
        webhook: webhook::WebhookSettings::from_env(env)?,
    })
}

/// The service, built and bound, with its provider behind a deadline (and, for Stripe, a
/// circuit); sealed payment tokens are opened by asking orders.
pub async fn app(settings: &Settings) -> anyhow::Result<CommandApp> {
    let timeout = settings.provider_timeout;
    let (choice, failures, open_for) = (
        settings.provider.clone(),
        settings.circuit_failures,
        settings.circuit_open_for,
    );
    let spec = PaymentsSpec {
        webhook: settings.webhook.clone(),
    };
    CommandApp::build(&settings.service, spec, move |resources| {
        let provider: Arc<dyn PaymentProvider> = match &choice {
            Provider::Test => {
                tracing::warn!("payments run the token-named test provider: development only");
                Arc::new(provider::Guarded::new(TestProvider::default(), timeout))
            }
            Provider::Stripe(stripe) => {
                tracing::info!(api = %stripe.api_base, "payments speak to Stripe");
                let adapter = stripe::Stripe::new(stripe.clone(), timeout, resources.pool.clone())?;
                Arc::new(
                    provider::Guarded::new(adapter, timeout)
                        .with_circuit("stripe", failures, open_for),
                )
            }
        };
        let opener = open::NatsOpener::new(
            resources.nats.clone(),
            resources
                .namespace
                .open_subject(messaging::BoundedContext::Orders),
            timeout,
        );
        Ok(command_kit::Parts::services(PaymentServices {
            provider,
            opener: Arc::new(opener),
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_provider_needs_the_development_flag_and_stripe_a_key() {
        // The common settings read as plain HTTP, so only the provider's are in question.
        let env = |pairs: &[(&str, &str)]| {
            settings(&Env::from_pairs(
                pairs.iter().copied().chain([("TLS", "off")]),
            ))
        };
        let refused = env(&[("PAYMENT_PROVIDER", "test")]).unwrap_err();
        assert_eq!(refused.name, "PAYMENT_PROVIDER");
        assert!(
            refused.reason.contains("ALLOW_TEST_PAYMENT_PROVIDER"),
            "{refused}"
        );
        assert!(matches!(
            env(&[
                ("PAYMENT_PROVIDER", "test"),
                ("ALLOW_TEST_PAYMENT_PROVIDER", "true")
            ])
            .unwrap()
            .provider,
            Provider::Test
        ));
        // Stripe is the default, and needs its key.
        assert_eq!(env(&[]).unwrap_err().name, "STRIPE_SECRET_KEY");
        assert!(matches!(
            env(&[("STRIPE_SECRET_KEY", "sk_test_1")]).unwrap().provider,
            Provider::Stripe(_)
        ));
        assert_eq!(
            env(&[("PAYMENT_PROVIDER", "paypal")]).unwrap_err().name,
            "PAYMENT_PROVIDER"
        );
    }
}
