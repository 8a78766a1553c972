//! The notification service as one process: its database, the consumer that records
//! deliveries and emails, the webhook sender, the mailer (when `SMTP_URL` is set) and the API.

use std::sync::Arc;

use anyhow::Context;
use messaging::durables;
use service_kit::health::Readiness;
use service_kit::service::{task, Service};
use tokio_util::sync::CancellationToken;

use crate::record::Recorder;
use crate::send::Sender;
use crate::Settings;

/// A built notification service, bound to its port, not yet running.
pub struct App {
    service: Service,
}

/// Delivered deliveries and sent emails leave the log after
/// `WEBHOOK_DELIVERY_RETENTION_DAYS` (deliveries' attempts with them); pending and failed ones
/// have no `delivered_at` or `sent_at` and stay.
pub fn retention(settings: &crate::settings::WebhookSettings) -> Vec<service_kit::retention::Rule> {
    vec![
        service_kit::retention::Rule {
            table: "deliveries",
            column: "delivered_at",
            keep: settings.delivered_retention,
        },
        service_kit::retention::Rule {
            table: "emails",
            column: "sent_at",
            keep: settings.delivered_retention,
        },
    ]
}

impl App {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool = settings
            .basics
            .connect_database("notifications", Some(&crate::SCHEMA))
            .await?;
        // The streams are their contexts' to create: the consumer waits for a missing one.
        let (nats, js) = settings.nats.connect_with_streams(&[]).await?;
        let wake = crate::record::Wake::default();
        let mut recorders = Vec::new();
        for context in durables::NOTIFICATIONS_INPUTS {
            recorders.push(
                Recorder::new(
                    pool.clone(),
                    &js,
                    &settings.nats.namespace,
                    context,
                    settings.consumer.clone(),
                    wake.clone(),
                )
                .await,
            );
        }
        let sender = Sender::new(
            pool.clone(),
            settings.webhooks.clone(),
            wake.deliveries.clone(),
        )
        .context("the webhook client")?;
        let mailer = match &settings.mail.smtp_url {
            Some(url) => {
                let templates = crate::email::Templates::new(
                    &settings.mail.order_url,
                    &settings.mail.settings_url,
                );
                let channel = crate::email::Email::new(
                    url.expose(),
                    &settings.mail.from,
                    templates,
                    settings.mail.timeout,
                    settings.mail.max_in_flight,
                )?;
                let opener = crate::emails::Opener {
                    nats: nats.clone(),
                    subject: settings
                        .nats
                        .namespace
                        .open_email_subject(messaging::BoundedContext::Orders),
                    timeout: settings.mail.timeout,
                };
                Some(crate::emails::Mailer::new(
                    pool.clone(),
                    channel,
                    opener,
                    settings.mail.clone(),
                    wake.emails,
                ))
            }
            None => {
                tracing::info!("SMTP_URL is not set: no order emails are recorded or sent");
                None
            }
        };
        let readiness = recorders.iter().fold(
            Readiness::new()
                .postgres("notifications", pool.clone())
                .nats(nats),
            |readiness, recorder| {
                readiness.condition(
                    format!("consumer:{}", durables::NOTIFICATIONS),
                    recorder.consumer_intact(),
                )
            },
        );
        let api = Arc::new(crate::http::Api {
            pool: pool.clone(),
            guard: crate::guard::Guard {
                allow_private: settings.webhooks.allow_private,
            },
            secret_grace: settings.webhooks.secret_grace,
        });
        let mut service = Service::bind("notifications", settings.basics.http_addr)
            .await?
            .tls(settings.basics.tls.as_ref())?
            .gateway_routes(crate::http::gateway_routes())
            .routes(crate::http::router(api), readiness, crate::http::openapi())
            .time_limit(settings.basics.request_timeout)
            .with_task(task(|shutdown| async move {
                sender.run(shutdown).await;
                Ok(())
            }))
            .with_task(service_kit::retention::task_for(
                pool.clone(),
                retention(&settings.webhooks),
                std::time::Duration::from_secs(3600),
            ))
            .with_pool(pool);
        if let Some(mailer) = mailer {
            service = service.with_task(task(|shutdown| async move {
                mailer.run(shutdown).await;
                Ok(())
            }));
        }
        for recorder in recorders {
            service = service.with_task(task(|shutdown| async move {
                recorder.run(shutdown).await;
                Ok(())
            }));
        }
        Ok(Self { service })
    }

    /// The base URL it answers on (`https://` when TLS is on).
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// Records, sends and serves until `shutdown`; the batch and the attempts in hand finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.service.run(shutdown).await
    }
}
