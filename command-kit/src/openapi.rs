//! A command service's OpenAPI 3.1 document, generated from its contract: one `POST` per
//! command, with the request and answer schemas of the contract's types.

use serde_json::{json, Map, Value};

use crate::spec::CommandSpec;
use service_kit::openapi::{add_schema, path_param, problem, schema_settings};

/// The request schema for HTTP: path parameters come from the path, so the body may leave
/// them out (when it names one, it must agree with the path).
fn body_schema(mut schema: schemars::Schema, path_params: &[&str]) -> schemars::Schema {
    if let Some(Value::Array(required)) = schema.as_object_mut().and_then(|o| o.get_mut("required"))
    {
        required.retain(|field| !path_params.iter().any(|p| field == p));
    }
    schema
}

/// The document of context `S`'s command service.
pub fn document<S: CommandSpec>() -> Value {
    let mut components = Map::new();
    let mut paths = Map::new();
    let answer_name = <S::Answer as schemars::JsonSchema>::schema_name();
    let answer = service_kit::openapi::add::<S::Answer>(&mut components, &answer_name);
    for binding in S::bindings() {
        let info = binding.info;
        let params = contracts::path_params(info.path);
        let request = add_schema(
            &mut components,
            info.name,
            body_schema((info.request)(schema_settings()), &params),
        );
        let mut parameters: Vec<Value> = params.iter().map(|p| path_param(p)).collect();
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A retry with the same key and body returns the first answer; the same key with another body is 422",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}
        }));
        let accepted = json!({"allOf": [
            {
                "type": "object",
                "required": [S::ID_FIELD, "version"],
                "properties": {
                    S::ID_FIELD: {"type": "string"},
                    "version": {"type": "integer", "minimum": 1,
                                "description": "The aggregate's version after the command: pass it as min_version to reads"}
                }
            },
            answer.clone()
        ]});
        paths.insert(
            info.path.to_owned(),
            json!({"post": {
                "operationId": info.name,
                "summary": info.summary,
                "parameters": parameters,
                "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
                "responses": {
                    "202": {"description": "Accepted; `Idempotent-Replayed: true` when it repeats a first answer",
                            "content": {"application/json": {"schema": accepted}}},
                    "400": problem("Malformed JSON or Idempotency-Key"),
                    "404": problem("No such aggregate"),
                    "409": problem("Concurrent changes kept conflicting; retry"),
                    "413": problem("Body over the size limit"),
                    "415": problem("Not application/json"),
                    "422": problem("Invalid body, a domain rejection (with `reason`), or a reused Idempotency-Key"),
                    "500": problem("Internal error"),
                    "503": problem("A dependency is unavailable; retry")
                }
            }}),
        );
    }
    for (path, item) in S::extra_paths() {
        paths.insert(path.to_owned(), item);
    }
    let context = S::CONTEXT.token();
    service_kit::openapi::document(
        &format!("streamshop {context} commands"),
        &format!(
            "The {context} context's commands over HTTP; the same commands are served over NATS request/reply on cmd.{context}.<Command>."
        ),
        paths,
        components,
    )
}
