//! The payments command service: Payment aggregates (one per order) behind a payment provider,
//! over HTTP and NATS (`cmd.payments.*`), the `payments` database, its outbox to `PAYMENTS`.
#![forbid(unsafe_code)]

pub mod open;
pub mod provider;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use command_kit::{CommandApp, ServiceSettings};
use domain::payment::{PaymentServices, TestProvider};
use runtime::env::{Env, EnvError};

pub use spec::PaymentsSpec;

/// The payments service's settings: the common ones and the provider's.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceSettings,
    /// `PAYMENT_PROVIDER_TIMEOUT_MS`: longest wait for the provider, default 2000.
    pub provider_timeout: Duration,
}

/// The service's settings from an environment.
pub fn settings(env: &Env) -> Result<Settings, EnvError> {
    Ok(Settings {
        service: command_kit::settings::<PaymentsSpec>(env)?,
        provider_timeout: env.millis_or("PAYMENT_PROVIDER_TIMEOUT_MS", Duration::from_secs(2))?,
    })
}

/// The service, built and bound, with the built-in test provider; sealed payment tokens are
/// opened by asking orders.
pub async fn app(settings: &Settings) -> anyhow::Result<CommandApp> {
    let provider =
        provider::TimeoutProvider::new(TestProvider::default(), settings.provider_timeout);
    let timeout = settings.provider_timeout;
    CommandApp::build(&settings.service, PaymentsSpec, move |resources| {
        let opener = open::NatsOpener::new(
            resources.nats.clone(),
            resources
                .namespace
                .open_subject(messaging::BoundedContext::Orders),
            timeout,
        );
        Ok(command_kit::Parts::services(PaymentServices {
            provider: Arc::new(provider),
            opener: Arc::new(opener),
        }))
    })
    .await
}
