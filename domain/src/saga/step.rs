//! The saga's steps: `Step` (one command to one context, named `reserve:SKU`, `price`, ... in
//! events and JSON), what a step came to (`StepResult`) and its progress (`StepState`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Money, Sku};

/// One step of the flow, each a command to one context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Reserve(Sku),
    Price,
    Authorise,
    Commit(Sku),
    Capture,
    Confirm,
    // Compensations.
    Release(Sku),
    Restock(Sku),
    Void,
    Refund,
    Reject,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserve(s) => write!(f, "reserve:{s}"),
            Self::Price => f.write_str("price"),
            Self::Authorise => f.write_str("authorise"),
            Self::Commit(s) => write!(f, "commit:{s}"),
            Self::Capture => f.write_str("capture"),
            Self::Confirm => f.write_str("confirm"),
            Self::Release(s) => write!(f, "release:{s}"),
            Self::Restock(s) => write!(f, "restock:{s}"),
            Self::Void => f.write_str("void"),
            Self::Refund => f.write_str("refund"),
            Self::Reject => f.write_str("reject"),
        }
    }
}

impl FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sku = |v: &str| Sku::parse(v).map_err(|e| e.to_string());
        Ok(match s.split_once(':') {
            Some(("reserve", v)) => Self::Reserve(sku(v)?),
            Some(("commit", v)) => Self::Commit(sku(v)?),
            Some(("release", v)) => Self::Release(sku(v)?),
            Some(("restock", v)) => Self::Restock(sku(v)?),
            None => match s {
                "price" => Self::Price,
                "authorise" => Self::Authorise,
                "capture" => Self::Capture,
                "confirm" => Self::Confirm,
                "void" => Self::Void,
                "refund" => Self::Refund,
                "reject" => Self::Reject,
                _ => return Err(format!("unknown step {s:?}")),
            },
            _ => return Err(format!("unknown step {s:?}")),
        })
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Step {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Step".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(reserve|commit|release|restock):[A-Z0-9][A-Z0-9-]{0,31}$|^(price|authorise|capture|confirm|void|refund|reject)$",
            "description": "A saga step: a command to one context"
        })
    }
}

/// What a step's command came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepResult {
    /// Stock reserved, at this unit price.
    Reserved {
        unit_price: Money,
    },
    OutOfStock,
    Authorised,
    Declined {
        reason: String,
    },
    /// The command was accepted (or had already been done).
    Done,
    /// The command was refused for good.
    Refused {
        reason: String,
    },
}

impl StepResult {
    /// Its name, as the `result` tag of its JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Reserved { .. } => "reserved",
            Self::OutOfStock => "out_of_stock",
            Self::Authorised => "authorised",
            Self::Declined { .. } => "declined",
            Self::Done => "done",
            Self::Refused { .. } => "refused",
        }
    }
}

/// One step's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepState {
    pub attempts: u32,
    pub deadline: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub result: Option<StepResult>,
    pub gave_up: bool,
    /// The id every attempt's command carries. It is a capability (whoever knows it can answer
    /// for the step's command first), so it is kept out of the state's JSON and documents.
    #[serde(skip)]
    #[schemars(skip)]
    pub command_id: Option<Uuid>,
}
