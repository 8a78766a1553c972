//! The notification service: it reads the event streams with a durable consumer, records in
//! the same transaction what is to be sent to whom, and delivers it through a channel (order
//! emails to customers over SMTP, signed webhooks to partners), retrying with backoff until it
//! is delivered or its window is over.
//!
//! Invariant: a delivery is recorded in the transaction that records its event as read, so a
//! killed replica loses none and makes none twice; a receiver drops a resent one by its
//! `webhook-id` (one id per event and endpoint).
//!
//! Invariant: no webhook is sent to a loopback, private or link-local address unless
//! `WEBHOOK_ALLOW_PRIVATE_ADDRESSES` says so; the address is checked at registration and again
//! at every attempt, since DNS can change.
#![forbid(unsafe_code)]

pub mod app;
pub mod channel;
pub mod email;
pub mod emails;
pub mod endpoints;
pub mod guard;
pub mod http;
pub mod preferences;
pub mod record;
pub mod send;
pub mod settings;
pub mod signing;
pub mod smtp;

pub use app::App;
pub use settings::Settings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The notifications database: its owner migrates; the service's role records and sends.
pub static SCHEMA: service_kit::db::Schema = service_kit::db::Schema {
    migrator: &MIGRATOR,
    grants: &[
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON deliveries TO {role}",
        "GRANT SELECT, INSERT ON delivery_attempts TO {role}",
        "GRANT SELECT, INSERT, UPDATE ON consumer_positions TO {role}",
        "GRANT SELECT, INSERT, UPDATE ON consumer_checkpoints TO {role}",
        "GRANT SELECT, INSERT ON notification_dead_letters TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON order_mail TO {role}",
        "GRANT SELECT, INSERT, UPDATE ON email_preferences TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON emails TO {role}",
        "GRANT USAGE ON SEQUENCE notification_dead_letters_id_seq TO {role}",
    ],
    owner_statements: &[],
};
