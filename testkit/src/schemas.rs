//! Checks an emitted envelope against the committed JSON Schemas: the envelope schema, and the
//! event schema its `dataschema` names.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use messaging::Envelope;
use serde_json::Value;

fn validator(path: &str) -> &'static jsonschema::Validator {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static jsonschema::Validator>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.entry(path.to_owned()).or_insert_with(|| {
        let file = schemas::dir().join(path);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no schema {}: {e}", file.display()));
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("schema {path} does not compile: {e}"));
        Box::leak(Box::new(validator))
    })
}

/// Every violation of the committed schema at `path` (under `schemas/`) by `instance`.
pub fn check(path: &str, instance: &Value) -> Vec<String> {
    validator(path)
        .iter_errors(instance)
        .map(|e| format!("{path}: {e} at {}", e.instance_path()))
        .collect()
}

/// Panics with every violation when the envelope or its data does not match its schemas.
pub fn assert_valid(envelope: &Envelope) {
    let as_json = serde_json::to_value(envelope).expect("envelopes serialise");
    let mut errors = check("envelope.json", &as_json);
    let data_schema = envelope
        .dataschema
        .strip_prefix("streamshop:schemas/")
        .unwrap_or_else(|| {
            panic!(
                "dataschema {} is not under streamshop:schemas/",
                envelope.dataschema
            )
        });
    errors.extend(check(data_schema, &envelope.data));
    assert!(
        errors.is_empty(),
        "{} v{} does not match its schema:\n{}",
        envelope.name(),
        envelope.version(),
        errors.join("\n")
    );
}

/// The committed example envelope of every event type and version
/// (`schemas/examples/<context>/<Type>.v<N>.json`), in path order: what consumer-side contract
/// tests decode. Examples are fixtures: like released schemas, they are never rewritten.
pub fn examples() -> Vec<Envelope> {
    let dir = schemas::dir().join("examples");
    let mut paths = Vec::new();
    for context in std::fs::read_dir(&dir).expect("schemas/examples exists") {
        let context = context.expect("a folder entry").path();
        for file in std::fs::read_dir(&context).expect("a context folder") {
            paths.push(file.expect("a file entry").path());
        }
    }
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("an example file");
            Envelope::from_slice(text.as_bytes())
                .unwrap_or_else(|e| panic!("{} is not an envelope: {e}", path.display()))
        })
        .collect()
}

/// The examples of one context's stream.
pub fn examples_of(context: messaging::BoundedContext) -> Vec<Envelope> {
    examples()
        .into_iter()
        .filter(|e| e.type_parts().is_ok_and(|(c, _, _)| c == context.token()))
        .collect()
}
