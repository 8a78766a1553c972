//! The query API's OpenAPI 3.1 document, generated from the route table in [`crate::http`]
//! (the same table the router is built from) and the response types' JSON Schemas (from
//! schemars, which OpenAPI 3.1 accepts as they are). Served at `GET /openapi.json`, committed
//! as `schemas/openapi/query-api.json`, and checked against the code by the schemas drift test.

use serde_json::{json, Map, Value};
use service_kit::openapi::{path_param, problem};

use crate::http::Route;

/// The whole document.
pub fn document() -> Value {
    let mut bodies = Map::new();
    let mut used = Map::new();
    let mut paths = Map::new();
    for route in crate::http::routes() {
        let mut own = Map::new();
        paths.insert(route.path.to_owned(), operation(route, &mut own));
        if let Some(body) = own.remove(route.body.name) {
            bodies.insert(route.body.name.to_owned(), body);
        }
        used.extend(own);
    }
    // A body that another body also contains (`OrderView` in `OrderPage`) keeps the schema
    // schemars makes for it inside the other (without the root's `title`), whichever route
    // comes first in the table.
    let mut components = bodies;
    components.extend(used);
    service_kit::openapi::document(
        "streamshop query API",
        "Reads over the read models the projections build from the event streams.",
        paths,
        components,
    )
}

/// One route's path item; its body's schema goes into `components`. Every route gets the
/// responses that the reads' shared error handling and layers (`http::read`) produce.
/// `GET /projections` is served without those layers, so its entry promises more (an ETag,
/// 304, 503) than it does; it is kept as committed until the document is changed on purpose.
fn operation(route: &Route, components: &mut Map<String, Value>) -> Value {
    let body = (route.body.add)(components, route.body.name);
    let mut parameters: Vec<Value> = path_params(route.path).map(path_param).collect();
    parameters.extend(route.query.iter().map(|(name, ty, description)| {
        json!({"name": name, "in": "query", "required": false,
               "description": description, "schema": {"type": ty}})
    }));
    json!({"get": {
        "summary": route.summary,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "OK; carries ETag and Cache-Control: no-cache",
                "content": {"application/json": {"schema": body}}
            },
            "304": {"description": "Not modified (If-None-Match named the current ETag)"},
            "400": problem("Bad path id or query parameter"),
            "404": problem("Not in the read model"),
            "503": problem("The read took too long")
        }
    }})
}

/// The names of a path's `{name}` segments, in order: the path itself is the one place they
/// are spelled.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_parameters_come_from_the_path() {
        let names: Vec<&str> = super::path_params("/customers/{id}/orders/{n}").collect();
        assert_eq!(names, ["id", "n"]);
        assert_eq!(super::path_params("/products").count(), 0);
    }
}
