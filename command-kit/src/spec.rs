//! What a context tells the shared machinery about its commands.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::Rejection;
use messaging::BoundedContext;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A command read from a request, bound to its aggregate.
#[derive(Debug)]
pub struct Parsed<A: Aggregate> {
    pub aggregate_id: String,
    pub command: A::Command,
    /// The business correlation id (the order id in the order flow).
    pub correlation_id: String,
    /// The id was generated for this command (`PlaceOrder`): there is no history to load.
    pub new_aggregate: bool,
}

/// One context's commands.
pub trait CommandSpec: Send + Sync + 'static {
    /// The aggregate, with what the shared machinery needs of its commands and errors.
    type Aggregate: Aggregate<Command: Clone + Send + Sync, Error: Rejection + Send + Sync + 'static>
        + Clone
        + 'static;

    /// The context, for NATS subjects and the stream.
    const CONTEXT: BoundedContext;
    /// The reply field that names the aggregate: `order_id`, `sku`.
    const ID_FIELD: &'static str;
    /// The problem type of a domain rejection over HTTP: `order-rejected`.
    const REJECTED_KIND: &'static str;

    /// Every command name, as used in `cmd.<context>.<Command>`.
    fn command_names(&self) -> &'static [&'static str];

    /// Reads the command `name` from its JSON body (path parameters already merged in).
    /// `Err` is a human-readable reason the body is invalid.
    fn parse(
        &self,
        name: &str,
        body: Value,
        now: DateTime<Utc>,
    ) -> Result<Parsed<Self::Aggregate>, String>;

    /// Fields added to an accepted reply, from the command, the aggregate after it, and the
    /// events it appended (none when it changed nothing).
    fn reply_data(
        &self,
        _command: &<Self::Aggregate as Aggregate>::Command,
        _state: &Self::Aggregate,
        _events: &[<Self::Aggregate as Aggregate>::Event],
    ) -> Map<String, Value> {
        Map::new()
    }
}

/// Deserialises a command body, with the field path in the error.
pub fn parse_body<T: DeserializeOwned>(body: Value) -> Result<T, String> {
    serde_json::from_value(body).map_err(|e| e.to_string())
}
