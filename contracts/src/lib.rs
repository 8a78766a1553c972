//! The typed contract between contexts. The producer of a command, an answer or an event and
//! every consumer of it use the types here, so a renamed field or command breaks the build of
//! both sides instead of failing at run time.
//!
//! - [`Command`]: each command's name, HTTP route, request body and answer data, one module
//!   per context ([`orders`], [`inventory`], [`payments`]).
//! - [`Reply`]: the answer to any command, the same over HTTP and NATS.
//! - [`events::decode`]: an envelope's event as the domain's event type, upcast once.
#![forbid(unsafe_code)]

pub mod events;
pub mod inventory;
pub mod keys;
pub mod orders;
pub mod payments;
pub mod reply;
pub mod sensitive;

use messaging::BoundedContext;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use events::{decode, DecodeError, LogEvent};
pub use reply::{reasons, NatsCommand, Reply};

/// One command of a context: its name (in `cmd.<context>.<NAME>`), its HTTP route, its request
/// body and the data of an accepted answer.
pub trait Command: Serialize + DeserializeOwned + JsonSchema + Send + 'static {
    /// The context that handles it.
    const CONTEXT: BoundedContext;
    /// The command's name: the last token of its NATS subject.
    const NAME: &'static str;
    /// `POST` route on the context's command service. Path parameters (`{order_id}`) are
    /// fields of the request, which the body may leave out.
    const PATH: &'static str;
    /// What a short human description of the command says in the OpenAPI document.
    const SUMMARY: &'static str;
    /// Whether only the saga orchestrator sends it (over NATS). Such a command is never
    /// reachable through the gateway: its service refuses the gateway's certificate on its
    /// route, so even a gateway taken over cannot confirm an unpaid order.
    const SAGA_INTERNAL: bool;
    /// The data of an accepted answer.
    type Answer: Serialize + DeserializeOwned + JsonSchema + Send + 'static;
}

/// What the documents need to know of a command, without its type.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    pub context: BoundedContext,
    pub name: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// See [`Command::SAGA_INTERNAL`].
    pub saga_internal: bool,
    /// The root JSON Schema of the request body, made with the given settings.
    pub request: fn(schemars::generate::SchemaSettings) -> schemars::Schema,
    /// The root JSON Schema of an accepted answer's data.
    pub answer: fn(schemars::generate::SchemaSettings) -> schemars::Schema,
    /// The root JSON Schema of the whole reply (accepted or rejected).
    pub reply: fn(schemars::generate::SchemaSettings) -> schemars::Schema,
}

/// The description of `C`.
pub fn info<C: Command>() -> CommandInfo {
    CommandInfo {
        context: C::CONTEXT,
        name: C::NAME,
        path: C::PATH,
        summary: C::SUMMARY,
        saga_internal: C::SAGA_INTERNAL,
        request: |s| s.into_generator().into_root_schema_for::<C>(),
        answer: |s| s.into_generator().into_root_schema_for::<C::Answer>(),
        reply: |s| {
            s.into_generator()
                .into_root_schema_for::<Reply<C::Answer>>()
        },
    }
}

/// Every command of every context, in the order the documents list them.
pub fn all() -> Vec<CommandInfo> {
    let mut all = orders::commands();
    all.extend(inventory::commands());
    all.extend(payments::commands());
    all
}

/// The names of a path's parameters: `/orders/{order_id}/price` gives `["order_id"]`.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// Implements [`Command`] for a request type; the last word says who sends it: `public`
/// (through the gateway too) or `saga_internal` (the orchestrator only).
macro_rules! command {
    ($ty:ty, $context:ident, $name:literal, $path:literal, $answer:ty, $summary:literal, public) => {
        $crate::command!(@ $ty, $context, $name, $path, $answer, $summary, false);
    };
    ($ty:ty, $context:ident, $name:literal, $path:literal, $answer:ty, $summary:literal, saga_internal) => {
        $crate::command!(@ $ty, $context, $name, $path, $answer, $summary, true);
    };
    (@ $ty:ty, $context:ident, $name:literal, $path:literal, $answer:ty, $summary:literal, $internal:literal) => {
        impl $crate::Command for $ty {
            const CONTEXT: messaging::BoundedContext = messaging::BoundedContext::$context;
            const NAME: &'static str = $name;
            const PATH: &'static str = $path;
            const SUMMARY: &'static str = $summary;
            const SAGA_INTERNAL: bool = $internal;
            type Answer = $answer;
        }
    };
}
pub(crate) use command;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_and_routes_are_unique_and_path_parameters_are_request_fields() {
        let all = all();
        let names: BTreeSet<_> = all.iter().map(|c| (c.context.token(), c.name)).collect();
        assert_eq!(names.len(), all.len());
        let paths: BTreeSet<_> = all.iter().map(|c| (c.context.token(), c.path)).collect();
        assert_eq!(paths.len(), all.len());
        for c in &all {
            assert_eq!(
                c.saga_internal,
                c.summary.ends_with("(saga-internal)"),
                "{} says who sends it in its summary too",
                c.name
            );
            let schema = (c.request)(schemars::generate::SchemaSettings::draft2020_12());
            let properties = &schema.as_value()["properties"];
            // The services put an answer's fields beside the aggregate id and version.
            let answer = (c.answer)(schemars::generate::SchemaSettings::draft2020_12());
            assert_eq!(answer.as_value()["type"], "object", "{}'s answer", c.name);
            for param in path_params(c.path) {
                assert!(
                    properties.get(param).is_some(),
                    "{} has no field {param} for its path",
                    c.name
                );
            }
        }
    }
}
