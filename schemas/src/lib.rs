//! The JSON Schemas of the event log, generated from the Rust types so they cannot drift:
//! one file per event type and version under `events/<context>/<Type>.v<N>.json` (the
//! envelope's `dataschema` names it), and `envelope.json` for the CloudEvents envelope.
//!
//! The OpenAPI documents of the HTTP services are written here too (`openapi/`).
//!
//! `cargo run -p schemas` rewrites the files; a test fails when they differ from the code.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use messaging::envelope::schema_path;
use messaging::BoundedContext;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// The folder holding the schema files.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema_of<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// Splits the schema of an externally tagged event enum into one schema per variant: the
/// variant's own object (what the envelope's `data` holds), with the definitions it uses.
fn variants(enum_schema: &Value) -> Vec<(String, Value)> {
    let defs = enum_schema.get("$defs").cloned();
    let mut out = Vec::new();
    for alternative in enum_schema["oneOf"].as_array().into_iter().flatten() {
        let Some(properties) = alternative["properties"].as_object() else {
            continue;
        };
        for (name, schema) in properties {
            let mut schema = match schema.get("$ref").and_then(Value::as_str) {
                // `{"$ref": "#/$defs/X"}`: inline X so the file stands on its own.
                Some(reference) => {
                    let key = reference.trim_start_matches("#/$defs/");
                    defs.as_ref()
                        .and_then(|d| d.get(key))
                        .cloned()
                        .unwrap_or(Value::Null)
                }
                None => schema.clone(),
            };
            if let (Some(obj), Some(defs)) = (schema.as_object_mut(), &defs) {
                obj.insert("$defs".into(), defs.clone());
            }
            out.push((name.clone(), schema));
        }
    }
    out
}

fn finish(mut schema: Value, id: &str, title: String) -> Value {
    let obj = schema.as_object_mut().expect("schemas are objects");
    let mut head = Map::new();
    head.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    head.insert("$id".into(), json!(format!("streamshop:schemas/{id}")));
    head.insert("title".into(), json!(title));
    obj.remove("$schema");
    obj.remove("title");
    head.extend(std::mem::take(obj));
    Value::Object(head)
}

/// The current version of each event type (events not listed are at version 1).
fn current_version(context: BoundedContext, event: &str) -> u32 {
    match (context, event) {
        (BoundedContext::Orders, "OrderPlaced") => domain::order::ORDER_PLACED_VERSION
            .parse()
            .expect("a whole version number"),
        _ => 1,
    }
}

/// Every schema file: relative path -> content.
pub fn generate() -> BTreeMap<String, Value> {
    let mut files = BTreeMap::new();
    let contexts = [
        (
            BoundedContext::Orders,
            schema_of::<domain::order::OrderEvent>(),
        ),
        (
            BoundedContext::Inventory,
            schema_of::<domain::product::ProductEvent>(),
        ),
        (
            BoundedContext::Payments,
            schema_of::<domain::payment::PaymentEvent>(),
        ),
        (
            BoundedContext::Sagas,
            schema_of::<domain::saga::SagaEvent>(),
        ),
    ];
    for (context, enum_schema) in contexts {
        for (event, schema) in variants(&enum_schema) {
            let version = current_version(context, &event);
            let path = schema_path(context, &event, version);
            let title = format!("{event} v{version} ({} context)", context.token());
            files.insert(path.clone(), finish(schema, &path, title));
        }
    }
    // Historic versions still in the log.
    let path = schema_path(BoundedContext::Orders, "OrderPlaced", 1);
    files.insert(
        path.clone(),
        finish(
            schema_of::<domain::order::OrderPlacedV1>(),
            &path,
            "OrderPlaced v1 (orders context)".into(),
        ),
    );
    files.insert(
        "openapi/query-api.json".into(),
        query_api::openapi::document(),
    );
    files.insert(
        "envelope.json".into(),
        finish(
            schema_of::<messaging::Envelope>(),
            "envelope.json",
            "streamshop CloudEvents 1.0 envelope".into(),
        ),
    );
    files
}

/// Pretty JSON with a final newline, as the files are stored.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("schemas serialise");
    text.push('\n');
    text
}
