//! What a context tells the shared machinery about its commands: for each command of its
//! contract (`contracts::<context>`), how the request becomes the aggregate's command; and what
//! an accepted answer holds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use contracts::{Command, CommandInfo};
use cqrs_es::Aggregate;
use domain::Rejection;
use messaging::BoundedContext;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

pub use cqrs_es::persist::EventUpcaster;

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

type Parse<A> = Box<dyn Fn(Value, DateTime<Utc>) -> Result<Parsed<A>, String> + Send + Sync>;

/// One command of the context's contract and how its request becomes the aggregate's command.
pub struct Binding<S: CommandSpec> {
    pub info: CommandInfo,
    parse: Parse<S::Aggregate>,
}

impl<S: CommandSpec> Binding<S> {
    /// Binds the contract's command `C` (whose answer is the context's); `bind` maps its
    /// request (with the time it arrived) to the aggregate's command.
    pub fn new<C>(bind: fn(C, DateTime<Utc>) -> Parsed<S::Aggregate>) -> Self
    where
        C: Command<Answer = S::Answer>,
    {
        let info = contracts::info::<C>();
        let bounds = bounds_of(&info);
        Self {
            info,
            parse: Box::new(move |body, now| {
                // The documented schema is the check, so the limits it states (lengths, item
                // counts, ranges) are the limits enforced. A type error reads better in serde's
                // words, so it is reported first.
                let within = bounds.validate(&body).map_err(|e| {
                    let at = e.instance_path().to_string();
                    let at = if at.is_empty() {
                        "the body".to_owned()
                    } else {
                        at
                    };
                    format!("{at}: {}", e.masked())
                });
                let request: C = serde_json::from_value(body).map_err(|e| e.to_string())?;
                within?;
                Ok(bind(request, now))
            }),
        }
    }

    /// Reads the command from its JSON body (path parameters already merged in); `Err` is a
    /// human-readable reason the body is invalid.
    pub fn parse(&self, body: Value, now: DateTime<Utc>) -> Result<Parsed<S::Aggregate>, String> {
        (self.parse)(body, now)
    }
}

/// A command on `aggregate_id`, correlated with `correlation_id` (the order id in the order
/// flow).
pub fn parsed<A: Aggregate>(
    aggregate_id: impl ToString,
    correlation_id: impl ToString,
    command: A::Command,
) -> Parsed<A> {
    Parsed {
        aggregate_id: aggregate_id.to_string(),
        command,
        correlation_id: correlation_id.to_string(),
        new_aggregate: false,
    }
}

/// The validator of a command's request schema, as the documents publish it.
fn bounds_of(info: &CommandInfo) -> jsonschema::Validator {
    let schema = (info.request)(schemars::generate::SchemaSettings::draft2020_12());
    let schema = serde_json::to_value(schema).expect("a schema is JSON");
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{}'s request schema does not compile: {e}", info.name))
}

/// One context's commands.
pub trait CommandSpec: Send + Sync + 'static {
    /// The aggregate, with what the shared machinery needs of its commands and errors.
    type Aggregate: Aggregate<Command: Clone + Send + Sync, Error: Rejection + Send + Sync + 'static>
        + Clone
        + 'static;
    /// The data of every accepted answer of the context: each contract command's `Answer`.
    type Answer: Serialize + JsonSchema;

    /// The context, for NATS subjects and the stream.
    const CONTEXT: BoundedContext;
    /// The reply field that names the aggregate: `order_id`, `sku`.
    const ID_FIELD: &'static str;
    /// The problem type of a domain rejection over HTTP: `order-rejected`.
    const REJECTED_KIND: &'static str;
    /// The service as the topology declares it: its port and database under `cargo xtask up`.
    const SERVICE: &'static topology::Service;

    /// How stored events of older versions are read as the current ones.
    fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
        Vec::new()
    }

    /// Every command of the context, each bound to the aggregate.
    fn bindings() -> Vec<Binding<Self>>
    where
        Self: Sized;

    /// The OpenAPI paths of the context's own routes beside its commands ([`crate::app::Parts`]),
    /// as `(path, path item)`.
    fn extra_paths() -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }

    /// Gives the command its request's idempotency key (`nats:<command id>` for a saga step,
    /// `http:<Idempotency-Key>`), the same for every retry of the request: a context whose
    /// `handle` calls something outside that must not act twice (payments' provider) keeps
    /// it in the command. Others ignore it.
    fn keyed(_command: &mut <Self::Aggregate as Aggregate>::Command, _key: &str) {}

    /// Postgres run-time parameters of the service's connections: rules its database's
    /// triggers enforce in the transaction that appends (orders' fair shares).
    fn session(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Background work of the context beside serving commands (inventory expires old
    /// reservations); it gives commands through `dispatcher`, as any transport does.
    fn housekeeping(
        &self,
        _dispatcher: std::sync::Arc<crate::dispatch::Dispatcher<Self>>,
        _pool: sqlx::PgPool,
    ) -> Vec<service_kit::service::Task>
    where
        Self: Sized,
    {
        Vec::new()
    }

    /// Routes of the context beside its commands that run commands of their own through
    /// `dispatcher` (payments' provider webhooks), with those of them the gateway forwards.
    fn routes(
        &self,
        _dispatcher: std::sync::Arc<crate::dispatch::Dispatcher<Self>>,
        _pool: sqlx::PgPool,
    ) -> (axum::Router, Vec<(axum::http::Method, String)>)
    where
        Self: Sized,
    {
        (axum::Router::new(), Vec::new())
    }

    /// An accepted answer, from the command, the aggregate after it, and the events it
    /// appended (none when it changed nothing).
    fn answer(
        &self,
        command: &<Self::Aggregate as Aggregate>::Command,
        state: &Self::Aggregate,
        events: &[<Self::Aggregate as Aggregate>::Event],
    ) -> Self::Answer;
}

/// The context's bindings by command name.
pub fn by_name<S: CommandSpec>() -> HashMap<&'static str, Binding<S>> {
    S::bindings()
        .into_iter()
        .map(|b| (b.info.name, b))
        .collect()
}

/// Whether context `S` binds exactly the commands its contract declares, each once: a
/// command left out would build and then answer `unknown_command` at run time. Each service
/// runs this in a test.
pub fn binds_its_contract<S: CommandSpec>() -> Result<(), String> {
    let mut bound: Vec<(&str, &str)> = S::bindings()
        .iter()
        .map(|b| (b.info.context.token(), b.info.name))
        .collect();
    let mut declared: Vec<(&str, &str)> = contracts::all()
        .iter()
        .filter(|c| c.context == S::CONTEXT)
        .map(|c| (c.context.token(), c.name))
        .collect();
    bound.sort_unstable();
    declared.sort_unstable();
    if bound == declared {
        Ok(())
    } else {
        Err(format!(
            "{} binds {bound:?}, its contract declares {declared:?}",
            S::CONTEXT
        ))
    }
}
