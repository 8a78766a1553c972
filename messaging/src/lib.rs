//! The event log contract shared by publishers and consumers: stream and subject names, the
//! CloudEvents envelope, and JetStream stream set-up.
#![forbid(unsafe_code)]

pub mod consume;
pub mod durables;
pub mod envelope;
pub mod identity;
pub mod keeper;
pub mod names;
pub mod server_config;
pub mod settings;
pub mod streams;

pub use envelope::{Envelope, EnvelopeError};
pub use identity::Identity;
pub use names::{BoundedContext, Namespace};
pub use settings::NatsSettings;
