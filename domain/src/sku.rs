//! The stock-keeping unit, validated once where it enters the system.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A SKU: `^[A-Z0-9][A-Z0-9-]{0,31}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

/// A string that is not a valid SKU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SKU: use 1 to 32 of A-Z, 0-9 and -, not starting with -")]
pub struct InvalidSku(pub String);

impl Sku {
    pub fn parse(value: &str) -> Result<Self, InvalidSku> {
        let bytes = value.as_bytes();
        let valid = (1..=32).contains(&bytes.len())
            && bytes[0] != b'-'
            && bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidSku(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = InvalidSku;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> Self {
        sku.0
    }
}

impl schemars::JsonSchema for Sku {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sku".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Z0-9][A-Z0-9-]{0,31}$",
            "description": "A stock-keeping unit"
        })
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_pattern() {
        for ok in ["A", "SKU-1", "0-A", &"X".repeat(32)] {
            assert!(Sku::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-A", "a", "SKU_1", "SKU 1", &"X".repeat(33), "É"] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
    }
}
