//! The event fields the schemas mark sensitive (`"x-sensitive": true`, such as the payment
//! token): the event log keeps them for the saga, and no reader is shown them. Tools that hand
//! events to people (`events` replay, tail, export and state) redact them by default.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::Value;

/// The schema annotation that marks a field sensitive. It changes what a reader may be
/// shown, not what is valid, so a released schema may gain it (the lock ignores it).
pub const ANNOTATION: &str = "x-sensitive";

/// What a redacted value reads.
pub const REDACTED: &str = "[redacted]";

/// The names of the fields any event schema marks sensitive.
pub fn fields() -> &'static BTreeSet<String> {
    static FIELDS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
        let mut found = BTreeSet::new();
        for schema in [
            schemars::schema_for!(domain::order::OrderEvent),
            schemars::schema_for!(domain::order::OrderPlaced),
            schemars::schema_for!(domain::product::ProductEvent),
            schemars::schema_for!(domain::payment::PaymentEvent),
            schemars::schema_for!(domain::saga::SagaEvent),
        ] {
            collect(&schema.to_value(), &mut found);
        }
        found
    });
    &FIELDS
}

fn collect(schema: &Value, found: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                for (name, property) in properties {
                    if property.get(ANNOTATION) == Some(&Value::Bool(true)) {
                        found.insert(name.clone());
                    }
                }
            }
            for value in map.values() {
                collect(value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
        _ => {}
    }
}

/// Replaces every sensitive field's value (at any depth) with [`REDACTED`]; `null` stays
/// `null`. Returns whether anything was redacted.
pub fn redact(value: &mut Value) -> bool {
    let mut redacted = false;
    match value {
        Value::Object(map) => {
            for (name, field) in map.iter_mut() {
                if fields().contains(name) && !field.is_null() {
                    *field = Value::String(REDACTED.to_owned());
                    redacted = true;
                } else {
                    redacted |= redact(field);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                redacted |= redact(item);
            }
        }
        _ => {}
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_token_is_sensitive_wherever_it_appears() {
        assert!(fields().contains("payment_token"), "{:?}", fields());
        let mut data = serde_json::json!({
            "order_id": "o",
            "payment_token": "tok_ok",
            "nested": [{"payment_token": "tok_x"}, {"payment_token": null}]
        });
        assert!(redact(&mut data));
        assert_eq!(data["payment_token"], REDACTED);
        assert_eq!(data["nested"][0]["payment_token"], REDACTED);
        assert!(data["nested"][1]["payment_token"].is_null());
        assert_eq!(data["order_id"], "o");
    }
}
