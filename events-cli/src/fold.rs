//! Folds events into the domain's own aggregates with their own `apply` (time travel and
//! verification): the envelope's `data` is the event's body, named by the type's event name.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use domain::order::Order;
use domain::payment::Payment;
use domain::product::Product;
use domain::saga::OrderSaga;
use messaging::BoundedContext;
use serde_json::{json, Value};

use crate::progress::Progress;
use crate::read::{self, End, Selection, Source};

/// An aggregate of any context, as its events make it.
#[derive(Debug, Clone, PartialEq)]
pub enum Folded {
    Order(Order),
    Product(Product),
    Payment(Payment),
    Saga(OrderSaga),
}

/// The event `name` at major `version` as `A`'s event, read through the contract (which
/// upcasts old versions).
fn event<A: Aggregate>(name: &str, version: u32, data: &Value) -> Result<A::Event, String>
where
    A::Event: contracts::LogEvent,
{
    contracts::events::decode_data(name, version, data).map_err(|e| e.to_string())
}

impl Folded {
    /// The empty aggregate of a context's stream.
    pub fn new(context: BoundedContext) -> Self {
        match context {
            BoundedContext::Orders => Self::Order(Order::default()),
            BoundedContext::Inventory => Self::Product(Product::default()),
            BoundedContext::Payments => Self::Payment(Payment::default()),
            BoundedContext::Sagas => Self::Saga(OrderSaga::default()),
        }
    }

    /// Applies one event, given by name, major version and body; old versions are upcast by
    /// the contract, as every consumer reads them.
    pub fn apply(&mut self, name: &str, version: u32, data: &Value) -> Result<(), String> {
        match self {
            Self::Order(order) => order.apply(event::<Order>(name, version, data)?),
            Self::Product(product) => product.apply(event::<Product>(name, version, data)?),
            Self::Payment(payment) => payment.apply(event::<Payment>(name, version, data)?),
            Self::Saga(saga) => saga.apply(event::<OrderSaga>(name, version, data)?),
        }
        Ok(())
    }

    /// The state as JSON, as the aggregate serialises it.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Order(a) => serde_json::to_value(a),
            Self::Product(a) => serde_json::to_value(a),
            Self::Payment(a) => serde_json::to_value(a),
            Self::Saga(a) => serde_json::to_value(a),
        }
        .unwrap_or(Value::Null)
    }
}

/// The point in an aggregate's history to show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AsOf {
    Latest,
    /// After the event with this aggregate sequence (version).
    Version(u64),
    /// After every event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// `events state`: the aggregate as it was at `as_of`, folded from its stream.
pub async fn state(
    source: &Source,
    context: BoundedContext,
    aggregate_id: &str,
    as_of: AsOf,
    progress: Arc<Progress>,
) -> anyhow::Result<Value> {
    let selection = Selection {
        aggregate: Some(aggregate_id.to_owned()),
        end: End::Now,
        ..Selection::everything(vec![context])
    };
    let mut reading = read::spawn(source, &selection, BTreeMap::new(), progress);
    let mut folded = Folded::new(context);
    let mut version = 0;
    let mut at = None;
    while let Some(record) = reading.events.recv().await {
        let e = &record.envelope;
        let wanted = match as_of {
            AsOf::Latest => true,
            AsOf::Version(v) => e.sequence <= v,
            AsOf::Time(t) => e.time <= t,
        };
        // A re-published duplicate (at a sequence already applied) is skipped.
        if !wanted || e.sequence <= version {
            continue;
        }
        folded
            .apply(e.name(), e.version(), &e.data)
            .map_err(|reason| {
                anyhow::anyhow!("{} #{}: {reason}", record.stream, record.stream_sequence)
            })?;
        version = e.sequence;
        at = Some(e.time);
    }
    reading.finish().await?;
    anyhow::ensure!(
        version > 0,
        "{} has no events in {} as of {as_of:?}",
        aggregate_id,
        context.stream_base()
    );
    Ok(json!({
        "stream": context.stream_base(),
        "aggregate_id": aggregate_id,
        "version": version,
        "as_of": at,
        "state": folded.to_json(),
    }))
}
