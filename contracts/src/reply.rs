//! The answer to a command, the same over HTTP and NATS, and the NATS request that carries a
//! command.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Reasons the command machinery itself gives (domain reasons come from the aggregates'
/// errors, such as `out_of_stock`).
pub mod reasons {
    pub const INVALID_BODY: &str = "invalid_body";
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    pub const KEY_REUSED: &str = "idempotency_key_reused";
    pub const CONFLICT: &str = "conflict";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const INTERNAL: &str = "internal";
    pub const NOT_FOUND: &str = "not_found";
    /// An event the command would append is larger than the event log takes.
    pub const TOO_LARGE: &str = "too_large";
    /// Refused for good by a `refuse` failpoint: fault-injection tests only.
    pub const REFUSED: &str = "refused";
    /// The customer has as many open orders as one may (`ORDERS_MAX_OPEN_PER_CUSTOMER`); a
    /// place may pass once one of them is done.
    pub const TOO_MANY_OPEN_ORDERS: &str = "too_many_open_orders";
    /// The customer's open orders (or a product's own per-customer limit) would hold more
    /// units of one product than one customer may.
    pub const CUSTOMER_LIMIT: &str = "customer_limit";
}

/// A command's answer. On NATS it is the reply body, tagged by `status`. `D` is the command's
/// [`crate::Command::Answer`]; the service builds it as a JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply<D = Map<String, Value>> {
    Accepted {
        aggregate_id: String,
        /// The aggregate's version after the command: pass it as `min_version` to reads.
        version: u64,
        /// Command-specific answers, such as the unit price of a reservation.
        data: D,
        /// True when this repeats the first answer of an idempotency key or command id.
        #[serde(default)]
        replayed: bool,
    },
    Rejected {
        /// Machine-readable: a domain reason (`out_of_stock`) or one of [`reasons`].
        reason: String,
        message: String,
        /// Whether sending the same command again may succeed.
        retryable: bool,
    },
}

impl<D> Reply<D> {
    pub fn rejected(reason: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self::Rejected {
            reason: reason.to_owned(),
            message: message.into(),
            retryable,
        }
    }

    /// The version and answer data of an accepted reply.
    pub fn accepted(&self) -> Option<(u64, &D)> {
        match self {
            Self::Accepted { version, data, .. } => Some((*version, data)),
            Self::Rejected { .. } => None,
        }
    }

    /// Whether this repeats the first answer of its idempotency key or command id.
    pub fn is_replayed(&self) -> bool {
        matches!(self, Self::Accepted { replayed: true, .. })
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Rejected { reason, .. } => Some(reason),
            Self::Accepted { .. } => None,
        }
    }
}

/// A command as sent over NATS: its fields plus the `command_id` that is its idempotency key.
#[derive(Debug, Serialize)]
pub struct NatsCommand<'a, C> {
    pub command_id: &'a str,
    #[serde(flatten)]
    pub command: &'a C,
}

/// The NATS request field that carries the command id.
pub const COMMAND_ID: &str = "command_id";
