//! Pieces every service's OpenAPI 3.1 document shares: the document's frame, schemas from
//! schemars placed under `components/schemas`, the problem+json schema and responses, and
//! the paths that [`crate::service::Service`] mounts on every service.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// The settings that make schemars place definitions under `#/components/schemas/`.
pub fn schema_settings() -> schemars::generate::SchemaSettings {
    schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
    })
}

/// Adds a root schema made with [`schema_settings`] (and the schemas it uses) to
/// `components` under `name`, and returns a `$ref` to it.
pub fn add_schema(
    components: &mut Map<String, Value>,
    name: &str,
    schema: schemars::Schema,
) -> Value {
    let mut schema = schema.to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        // With this definitions path, schemars nests the definitions as components.schemas.
        if let Some(Value::Object(mut nested)) = obj.remove("components") {
            if let Some(Value::Object(defs)) = nested.remove("schemas") {
                components.extend(defs);
            }
        }
        if let Some(Value::Object(defs)) = obj.remove("$defs") {
            components.extend(defs);
        }
    }
    components.insert(name.to_owned(), schema);
    reference(name)
}

/// Adds `T`'s schema to `components` under `name`; returns a `$ref` to it.
pub fn add<T: JsonSchema>(components: &mut Map<String, Value>, name: &str) -> Value {
    let schema = schema_settings()
        .into_generator()
        .into_root_schema_for::<T>();
    add_schema(components, name, schema)
}

/// `{"$ref": "#/components/schemas/<name>"}`.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The RFC 9457 problem details schema, as every service answers errors.
pub fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details; `type` is urn:streamshop:problem:<slug>",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"}
        }
    })
}

/// A problem+json response with this description.
pub fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": reference("Problem")}}
    })
}

/// A `GET` operation answering `ok` (a schema) with 200, or the problems listed as
/// (status, description).
pub fn get(summary: &str, parameters: Vec<Value>, ok: Value, problems: &[(&str, &str)]) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK", "content": {"application/json": {"schema": ok}}}),
    );
    for (status, description) in problems {
        responses.insert((*status).into(), problem(description));
    }
    json!({"get": {"summary": summary, "parameters": parameters, "responses": responses}})
}

/// A required string path parameter.
pub fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The paths every service serves: health, readiness, metrics and this document.
pub fn common_paths(paths: &mut Map<String, Value>) {
    let json_ok = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}});
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness: the process answers",
                       "responses": {"200": json_ok("Alive")}}}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": {"summary": "Readiness: every dependency answers",
                       "responses": {"200": json_ok("Ready, with each check"),
                                     "503": json_ok("Not ready, with each check")}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "Prometheus metrics",
                       "responses": {"200": {"description": "Text exposition format",
                                             "content": {"text/plain": {"schema": {"type": "string"}}}}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"summary": "This document",
                       "responses": {"200": json_ok("OpenAPI 3.1 document")}}}),
    );
}

/// The whole document around `paths` and `components`; the problem schema is added.
pub fn document(
    title: &str,
    description: &str,
    mut paths: Map<String, Value>,
    mut components: Map<String, Value>,
) -> Value {
    common_paths(&mut paths);
    components.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": env!("CARGO_PKG_VERSION"),
            "description": description
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": components}
    })
}
