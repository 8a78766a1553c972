//! Every command's request is bounded, and its schema says how: a sender that ignores the
//! documents cannot make a command (or the event it appends) grow without limit.

use serde_json::Value;

/// The places in `schema` where a string or a list has no stated limit.
fn unbounded(schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str);
            let limited = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
            // A pattern anchored at both ends with bounded repeats bounds a string as well
            // as a length does; so do a format (a UUID) and an enum.
            let pinned = map
                .get("pattern")
                .and_then(Value::as_str)
                .is_some_and(|p| p.starts_with('^') && p.ends_with('$') && !p.contains(['*', '+']));
            match kind {
                Some("string")
                    if !pinned && !limited(&["maxLength", "format", "enum", "const"]) =>
                {
                    found.push(format!("{at}: a string without maxLength"))
                }
                Some("array") if !limited(&["maxItems"]) => {
                    found.push(format!("{at}: an array without maxItems"))
                }
                _ => {}
            }
            for (key, value) in map {
                unbounded(value, &format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unbounded(item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_string_and_list_of_every_command_is_bounded() {
    let mut found = Vec::new();
    for info in contracts::all() {
        let schema = (info.request)(schemars::generate::SchemaSettings::draft2020_12());
        let schema = serde_json::to_value(schema).unwrap();
        unbounded(&schema, info.name, &mut found);
    }
    assert!(found.is_empty(), "unbounded inputs:\n{}", found.join("\n"));
}
