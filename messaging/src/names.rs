//! Stream and subject names. A [`Namespace`] prefixes all of them so that tests (or tenants)
//! can share one NATS server without seeing each other's messages.

use std::fmt;
use std::str::FromStr;

/// The contexts that own a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BoundedContext {
    Orders,
    Inventory,
    Payments,
    Sagas,
}

impl BoundedContext {
    pub const ALL: [Self; 4] = [Self::Orders, Self::Inventory, Self::Payments, Self::Sagas];

    /// Lower-case token used in subjects and CloudEvents `source`: `orders`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Inventory => "inventory",
            Self::Payments => "payments",
            Self::Sagas => "sagas",
        }
    }

    /// The stream's base name: `ORDERS`.
    pub fn stream_base(self) -> &'static str {
        match self {
            Self::Orders => "ORDERS",
            Self::Inventory => "INVENTORY",
            Self::Payments => "PAYMENTS",
            Self::Sagas => "SAGAS",
        }
    }
}

impl FromStr for BoundedContext {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.token() == s.to_ascii_lowercase() || c.stream_base() == s)
            .ok_or_else(|| format!("unknown context {s:?}"))
    }
}

impl fmt::Display for BoundedContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// A prefix for every stream and subject; empty in production.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// `prefix` must be empty or made of ASCII letters, digits and `_`.
    pub fn new(prefix: &str) -> Result<Self, String> {
        if prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            Ok(Self(prefix.to_ascii_lowercase()))
        } else {
            Err(format!(
                "namespace {prefix:?} may hold only ASCII letters, digits and _"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn subject(&self, rest: String) -> String {
        if self.0.is_empty() {
            rest
        } else {
            format!("{}.{rest}", self.0)
        }
    }

    /// `ORDERS`, or `T1234_ORDERS` in namespace `t1234`.
    pub fn stream(&self, context: BoundedContext) -> String {
        if self.0.is_empty() {
            context.stream_base().to_owned()
        } else {
            format!("{}_{}", self.0.to_ascii_uppercase(), context.stream_base())
        }
    }

    /// `events.orders.<aggregate_id>.<EventType>`.
    pub fn event_subject(
        &self,
        context: BoundedContext,
        aggregate_id: &str,
        event_type: &str,
    ) -> String {
        self.subject(format!(
            "events.{}.{aggregate_id}.{event_type}",
            context.token()
        ))
    }

    /// Every event subject of a context: `events.orders.>`.
    pub fn events_filter(&self, context: BoundedContext) -> String {
        self.subject(format!("events.{}.>", context.token()))
    }

    /// `events.orders.<aggregate_id>.>`: every event of one aggregate.
    pub fn aggregate_events_filter(&self, context: BoundedContext, aggregate_id: &str) -> String {
        self.subject(format!("events.{}.{aggregate_id}.>", context.token()))
    }

    /// `cmd.orders.<Command>`, for NATS request/reply (never captured by a stream).
    pub fn command_subject(&self, context: BoundedContext, command: &str) -> String {
        self.subject(format!("cmd.{}.{command}", context.token()))
    }

    /// `keys.orders.open`: where the context that owns customers' data keys opens a sealed
    /// value for the one context allowed to ask (NATS request/reply, never captured).
    pub fn open_subject(&self, context: BoundedContext) -> String {
        self.subject(format!("keys.{}.open", context.token()))
    }

    /// `keys.orders.email`: where that context opens a customer's sealed email address for
    /// the notification service alone.
    pub fn open_email_subject(&self, context: BoundedContext) -> String {
        self.subject(format!("keys.{}.email", context.token()))
    }
}

impl FromStr for Namespace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_names_match_the_design() {
        let ns = Namespace::default();
        assert_eq!(ns.stream(BoundedContext::Orders), "ORDERS");
        assert_eq!(
            ns.event_subject(BoundedContext::Orders, "abc", "OrderPlaced"),
            "events.orders.abc.OrderPlaced"
        );
        assert_eq!(ns.events_filter(BoundedContext::Sagas), "events.sagas.>");
        assert_eq!(
            ns.command_subject(BoundedContext::Inventory, "SomeCommand"),
            "cmd.inventory.SomeCommand"
        );
    }

    #[test]
    fn namespaces_prefix_everything() {
        let ns = Namespace::new("T42").unwrap();
        assert_eq!(ns.stream(BoundedContext::Payments), "T42_PAYMENTS");
        assert_eq!(
            ns.events_filter(BoundedContext::Orders),
            "t42.events.orders.>"
        );
        assert!(Namespace::new("a.b").is_err());
        assert_eq!(
            "INVENTORY".parse::<BoundedContext>(),
            Ok(BoundedContext::Inventory)
        );
    }
}
