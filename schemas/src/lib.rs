//! The JSON Schemas of the event log, generated from the Rust types so they cannot drift:
//! one file per event type and version under `events/<context>/<Type>.v<N>.json` (the
//! envelope's `dataschema` names it), and `envelope.json` for the CloudEvents envelope.
//!
//! The schemas of every command's request and reply (`commands/<context>/<Command>.json` and
//! `.reply.json`) and the OpenAPI documents of every HTTP service (`openapi/`) are written
//! here too.
//!
//! A released event schema never changes: `released.json` holds the SHA-256 of every event
//! schema file as it was released, and [`check`] fails when a file or the code that
//! generates it no longer matches (change an event's shape with a new version instead).
//!
//! `cargo run -p schemas` rewrites the files (never a released one); `--check` only compares.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
            prune_definitions(&mut schema);
            out.push((name.clone(), schema));
        }
    }
    out
}

/// Drops the `$defs` that nothing in the schema refers to (directly or through another
/// definition): an event's file holds what it uses, and another event's new version changes
/// no file but its own.
pub fn prune_definitions(schema: &mut Value) {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = map
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    out.push(name.to_owned());
                }
                map.iter()
                    .filter(|(k, _)| *k != "$defs")
                    .for_each(|(_, v)| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let Some(defs) = schema.get("$defs").and_then(Value::as_object).cloned() else {
        return;
    };
    let mut pending = Vec::new();
    refs(schema, &mut pending);
    let mut used = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if used.insert(name.clone()) {
            if let Some(def) = defs.get(&name) {
                refs(def, &mut pending);
            }
        }
    }
    let obj = schema.as_object_mut().expect("checked above");
    if used.is_empty() {
        obj.remove("$defs");
    } else if let Some(Value::Object(kept)) = obj.get_mut("$defs") {
        kept.retain(|name, _| used.contains(name));
    }
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
        (BoundedContext::Inventory, "StockReserved") => domain::product::STOCK_RESERVED_VERSION
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
    for (context, event, version, schema) in [
        (
            BoundedContext::Orders,
            "OrderPlaced",
            1,
            schema_of::<domain::order::OrderPlacedV1>(),
        ),
        (
            BoundedContext::Orders,
            "OrderPlaced",
            2,
            schema_of::<domain::order::OrderPlacedV2>(),
        ),
        (
            BoundedContext::Inventory,
            "StockReserved",
            1,
            schema_of::<domain::product::StockReservedV1>(),
        ),
    ] {
        let path = schema_path(context, event, version);
        let title = format!("{event} v{version} ({} context)", context.token());
        files.insert(path.clone(), finish(schema, &path, title));
    }
    for command in contracts::all() {
        let context = command.context.token();
        for (part, schema) in [("request", command.request), ("reply", command.reply)] {
            let suffix = if part == "reply" { ".reply" } else { "" };
            let path = format!("commands/{context}/{}{suffix}.json", command.name);
            let title = format!("{} {part} ({context} context)", command.name);
            let mut schema = schema(schemars::generate::SchemaSettings::draft2020_12()).to_value();
            if part == "request" {
                with_command_id(&mut schema);
            }
            files.insert(path.clone(), finish(schema, &path, title));
        }
    }
    for (service, document) in openapi_documents() {
        files.insert(format!("openapi/{service}.json"), document);
    }
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

/// A command's fields as a NATS request: plus the `command_id` that is its idempotency key
/// (over HTTP the `Idempotency-Key` header plays that part, and the OpenAPI documents describe
/// the body without it).
fn with_command_id(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.insert(
            contracts::reply::COMMAND_ID.into(),
            json!({"type": "string", "minLength": 1, "maxLength": 255,
                   "description": "The command's idempotency key: a repeat gets the first answer"}),
        );
    }
    if let Some(Value::Array(required)) = object.get_mut("required") {
        required.insert(0, json!(contracts::reply::COMMAND_ID));
    }
}

/// Every HTTP service's OpenAPI document, by service name.
pub fn openapi_documents() -> Vec<(&'static str, Value)> {
    let mut documents = vec![
        (
            "orders",
            command_kit::openapi::document::<orders::OrdersSpec>(),
        ),
        (
            "inventory",
            command_kit::openapi::document::<inventory::InventorySpec>(),
        ),
        (
            "payments",
            command_kit::openapi::document::<payments::PaymentsSpec>(),
        ),
        ("orchestrator", orchestrator::http::openapi()),
        ("projections", projections::lag::openapi()),
        ("query-api", query_api::openapi::document()),
        ("notifications", notifications::http::openapi()),
    ];
    // The gateway's operations are the services' own, as the code makes them now.
    let gateway = gateway::openapi::document(&|service| {
        documents
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, doc)| doc.clone())
            .unwrap_or_else(|| panic!("no document of {service}"))
    });
    documents.push(("gateway", gateway));
    documents
}

/// The file that locks released event schemas.
pub const RELEASED: &str = "released.json";

/// SHA-256 of a schema file's text, in hex, without the annotations that say how a field
/// may be shown (`x-sensitive`) and without definitions nothing refers to: neither changes
/// validation, so a released schema may gain the one and lose the other and stay locked.
pub fn digest(text: &str) -> String {
    use sha2::Digest;
    let locked = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut schema) => {
            strip_annotations(&mut schema);
            prune_definitions(&mut schema);
            render(&schema)
        }
        Err(_) => text.to_owned(),
    };
    sha2::Sha256::digest(locked.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn strip_annotations(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove(contracts::sensitive::ANNOTATION);
            map.values_mut().for_each(strip_annotations);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_annotations),
        _ => {}
    }
}

/// The released event schemas as locked in `dir`: path -> digest.
pub fn released(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(RELEASED))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The blocks of the operators' page made from the code: `(name, content)`, each between the lines
/// `<!-- begin:<name> -->` and `<!-- end:<name> -->`.
fn page_blocks() -> Vec<(&'static str, String)> {
    vec![(
        "jetstream-permissions",
        messaging::identity::jetstream_table(),
    )]
}

/// The book's operators page, which holds the generated tables.
pub fn operators_page() -> PathBuf {
    dir().join("../docs/operators.md")
}

/// What is stale in the operators page's generated blocks (none: it is the code's).
pub fn page_problems(page: &Path) -> Vec<String> {
    match std::fs::read_to_string(page) {
        Err(e) => vec![format!("{}: {e}", page.display())],
        Ok(text) => match with_blocks(&text) {
            Err(missing) => vec![missing],
            Ok(fresh) if fresh != text => vec![
                "stale: docs/operators.md's generated tables differ from the code (run `cargo run -p schemas`)"
                    .into(),
            ],
            Ok(_) => vec![],
        },
    }
}

/// Rewrites the page's generated blocks; true when something changed.
pub fn write_page(page: &Path) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(page)?;
    let fresh = with_blocks(&text).map_err(std::io::Error::other)?;
    if fresh == text {
        return Ok(false);
    }
    std::fs::write(page, fresh)?;
    Ok(true)
}

/// `text` with every generated block as the code makes it; `Err` names a missing marker.
fn with_blocks(text: &str) -> Result<String, String> {
    let mut text = text.to_owned();
    for (name, content) in page_blocks() {
        let (begin, end) = (
            format!("<!-- begin:{name} -->\n"),
            format!("<!-- end:{name} -->"),
        );
        let start = text
            .find(&begin)
            .ok_or_else(|| format!("docs/operators.md has no {begin:?}"))?
            + begin.len();
        let stop = text[start..]
            .find(&end)
            .ok_or_else(|| format!("docs/operators.md has no {end:?}"))?
            + start;
        text.replace_range(start..stop, &content);
    }
    Ok(text)
}

/// Everything wrong with the schema files under `dir`: files that differ from the code, and
/// released event schemas that changed, vanished, or that the code would now generate
/// differently. Empty when all is well.
pub fn check(dir: &Path) -> Vec<String> {
    let generated = generate();
    let released = released(dir);
    let mut problems = Vec::new();
    for (path, schema) in &generated {
        let text = render(schema);
        if std::fs::read_to_string(dir.join(path)).ok().as_deref() != Some(text.as_str()) {
            problems.push(format!(
                "stale: {path} differs from the code (run `cargo run -p schemas`)"
            ));
        }
        if path.starts_with("events/") && !released.contains_key(path) {
            problems.push(format!(
                "unreleased: {path} is not locked in {RELEASED} (run `cargo run -p schemas`)"
            ));
        }
    }
    for (path, locked) in &released {
        match std::fs::read_to_string(dir.join(path)) {
            Err(_) => problems.push(format!("released: {path} was removed; released schemas stay")),
            Ok(text) if digest(&text) != *locked => problems.push(format!(
                "released: {path} changed; a released schema never changes: add a new version with an upcaster"
            )),
            Ok(_) => {}
        }
        match generated.get(path) {
            None => problems.push(format!("released: the code no longer generates {path}")),
            Some(schema) if digest(&render(schema)) != *locked => problems.push(format!(
                "released: the code now generates a different {path}; a released schema never changes: add a new version with an upcaster"
            )),
            Some(_) => {}
        }
    }
    problems
}

/// Writes every file that differs from the code, and locks new event schemas. A released
/// schema is never rewritten: its path is returned as refused.
pub fn write(dir: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let mut released = released(dir);
    let (mut written, mut refused) = (Vec::new(), Vec::new());
    for (path, schema) in generate() {
        let text = render(&schema);
        if let Some(locked) = released.get(&path) {
            if *locked != digest(&text) {
                refused.push(path);
                continue;
            }
        } else if path.starts_with("events/") {
            released.insert(path.clone(), digest(&text));
        }
        let file = dir.join(&path);
        if std::fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        std::fs::create_dir_all(file.parent().expect("files live in folders"))?;
        std::fs::write(&file, text)?;
        written.push(path);
    }
    let lock = render(&serde_json::to_value(&released).expect("a map serialises"));
    if std::fs::read_to_string(dir.join(RELEASED)).ok().as_deref() != Some(lock.as_str()) {
        std::fs::write(dir.join(RELEASED), lock)?;
        written.push(RELEASED.to_owned());
    }
    Ok((written, refused))
}

/// Pretty JSON with a final newline, as the files are stored.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("schemas serialise");
    text.push('\n');
    text
}
