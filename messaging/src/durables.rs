//! Every durable consumer of the system, declared once: who owns it, on which stream, and its
//! name. The NATS permissions (`identity.rs`) give each name to its owner alone and keep every
//! reader away from it; the orchestrator and the projection workers create their consumers
//! under these names.
//!
//! Invariant: a durable consumer is reachable (created, read, acknowledged, changed or
//! deleted) only by its owner's identity; the readers' ordered consumers take other names.

use crate::{BoundedContext, Identity};

/// The orchestrator's consumer on each stream it reads.
pub const ORCHESTRATOR: &str = "orchestrator";

/// The projection that keeps `orders_view`, `customer_order_counts`, `sales_daily` and
/// `order_outcomes_daily` (from the `ORDERS` stream).
pub const ORDERS_VIEW: &str = "orders_view";
/// The projection that keeps `products_view` (from `INVENTORY`).
pub const PRODUCTS_VIEW: &str = "products_view";
/// The projection that keeps `payments_view` (from `PAYMENTS`).
pub const PAYMENTS_VIEW: &str = "payments_view";
/// The projection that keeps `saga_timeline` and `sagas_view` (from `SAGAS`).
pub const SAGA_TIMELINE: &str = "saga_timeline";

/// Every projection, with the stream it is built from.
pub const PROJECTIONS: [(&str, BoundedContext); 4] = [
    (ORDERS_VIEW, BoundedContext::Orders),
    (PRODUCTS_VIEW, BoundedContext::Inventory),
    (PAYMENTS_VIEW, BoundedContext::Payments),
    (SAGA_TIMELINE, BoundedContext::Sagas),
];

/// The notifications service's consumer of the order events it tells partners about.
pub const NOTIFICATIONS: &str = "notifications";

/// The streams the notifications service reads.
pub const NOTIFICATIONS_INPUTS: [BoundedContext; 1] = [BoundedContext::Orders];

/// Put before a projection's name for the consumer of its blue/green rebuild.
pub const REBUILD_PREFIX: &str = "rebuild_";

/// The streams the orchestrator reads.
pub const ORCHESTRATOR_INPUTS: [BoundedContext; 3] = [
    BoundedContext::Orders,
    BoundedContext::Inventory,
    BoundedContext::Payments,
];

/// One durable consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    pub owner: Identity,
    pub context: BoundedContext,
    pub name: String,
}

impl Durable {
    /// Read all the time, not only during a rebuild.
    pub fn live(&self) -> bool {
        !self.name.starts_with(REBUILD_PREFIX)
    }
}

/// Every durable consumer, the rebuilds' included.
pub fn all() -> Vec<Durable> {
    let mut durables: Vec<Durable> = ORCHESTRATOR_INPUTS
        .into_iter()
        .map(|context| Durable {
            owner: Identity::ORCHESTRATOR,
            context,
            name: ORCHESTRATOR.to_owned(),
        })
        .collect();
    durables.extend(NOTIFICATIONS_INPUTS.into_iter().map(|context| Durable {
        owner: Identity::NOTIFICATIONS,
        context,
        name: NOTIFICATIONS.to_owned(),
    }));
    for (name, context) in PROJECTIONS {
        for name in [name.to_owned(), format!("{REBUILD_PREFIX}{name}")] {
            durables.push(Durable {
                owner: Identity::PROJECTIONS,
                context,
                name,
            });
        }
    }
    durables
}

/// The durable consumers on `context`'s stream.
pub fn on(context: BoundedContext) -> impl Iterator<Item = Durable> {
    all().into_iter().filter(move |d| d.context == context)
}

/// The name of a reader's ordered consumer: its identity and a random part, so it is never a
/// durable's name and nobody can guess it.
pub fn reader_name(identity: &str) -> String {
    format!("{identity}_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durables_are_distinct_per_stream_and_never_a_readers_name() {
        let all = all();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    a.context != b.context || a.name != b.name,
                    "{a:?} and {b:?}"
                );
            }
            for reader in [Identity::ANALYST, Identity::GATEWAY] {
                assert!(!a.name.starts_with(&format!("{}_", reader.name())), "{a:?}");
            }
        }
        assert_eq!(on(BoundedContext::Sagas).count(), 2);
        assert_eq!(on(BoundedContext::Orders).count(), 4);
    }
}
