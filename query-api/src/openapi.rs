//! The query API's OpenAPI 3.1 document, generated from the response types (their JSON Schemas
//! come from schemars, which OpenAPI 3.1 accepts as they are) and the route table below.
//! Served at `GET /openapi.json`, committed as `schemas/openapi/query-api.json`, and checked
//! against the code by the schemas drift test.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::catalog::{OutcomeRow, PaymentView, ProductView, SalesRow};
use crate::http::Page;
use crate::orders::OrderView;

/// A documented query parameter: name, JSON type, description.
type Param = (&'static str, &'static str, &'static str);

const MIN_VERSION: Param = (
    "min_version",
    "integer",
    "Wait (boundedly) until the read model reflects at least this aggregate version",
);
const LIMIT: Param = ("limit", "integer", "Items per page, 1 to 200 (default 50)");
const CURSOR: Param = ("cursor", "string", "The next_cursor of the previous page");

/// One route: method, path, summary, path parameters, query parameters, 200 schema name.
struct Route {
    path: &'static str,
    summary: &'static str,
    path_params: &'static [&'static str],
    query: &'static [Param],
    schema: &'static str,
}

const ROUTES: &[Route] = &[
    Route {
        path: "/orders/{id}",
        summary: "An order with its lines, total, payment and saga timeline",
        path_params: &["id"],
        query: &[MIN_VERSION],
        schema: "OrderView",
    },
    Route {
        path: "/customers/{id}/orders",
        summary: "A customer's orders, newest first (keyset pagination)",
        path_params: &["id"],
        query: &[
            ("status", "string", "Only orders in this status"),
            LIMIT,
            CURSOR,
        ],
        schema: "OrderPage",
    },
    Route {
        path: "/products",
        summary: "Products by SKU, with availability",
        path_params: &[],
        query: &[
            (
                "low_stock",
                "integer",
                "Only products with at most this many available",
            ),
            LIMIT,
            CURSOR,
        ],
        schema: "ProductPage",
    },
    Route {
        path: "/products/{sku}",
        summary: "A product: price, on hand, reserved, available",
        path_params: &["sku"],
        query: &[MIN_VERSION],
        schema: "ProductView",
    },
    Route {
        path: "/payments/{order_id}",
        summary: "An order's payment: authorised, captured, voided, refunded",
        path_params: &["order_id"],
        query: &[MIN_VERSION],
        schema: "PaymentView",
    },
    Route {
        path: "/analytics/sales",
        summary: "Sales per day and SKU, and orders by outcome per day",
        path_params: &[],
        query: &[
            (
                "from",
                "string",
                "First day (YYYY-MM-DD), default 30 days before `to`",
            ),
            ("to", "string", "Last day (YYYY-MM-DD), default today"),
        ],
        schema: "SalesReport",
    },
    Route {
        path: "/projections",
        summary: "Each projection's checkpoint, lag and dead letters",
        path_params: &[],
        query: &[],
        schema: "ProjectionLags",
    },
];

/// `GET /analytics/sales`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SalesReport {
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    sales: Vec<SalesRow>,
    outcomes: Vec<OutcomeRow>,
}

/// Adds `T`'s schema (and the schemas it uses) to `components`, under `name`.
fn add<T: JsonSchema>(components: &mut Map<String, Value>, name: &str) {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
    });
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
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
}

fn problem_schema() -> Value {
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

/// The whole document.
pub fn document() -> Value {
    let mut components = Map::new();
    add::<OrderView>(&mut components, "OrderView");
    add::<Page<OrderView>>(&mut components, "OrderPage");
    add::<ProductView>(&mut components, "ProductView");
    add::<Page<ProductView>>(&mut components, "ProductPage");
    add::<PaymentView>(&mut components, "PaymentView");
    add::<SalesReport>(&mut components, "SalesReport");
    add::<Vec<projections::lag::ProjectionLag>>(&mut components, "ProjectionLags");
    components.insert("Problem".into(), problem_schema());

    let problem = |description: &str| {
        json!({"description": description,
               "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
    };
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path_params
            .iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(route.query.iter().map(|(name, ty, description)| {
            json!({"name": name, "in": "query", "required": false,
                   "description": description, "schema": {"type": ty}})
        }));
        paths.insert(
            route.path.to_owned(),
            json!({"get": {
                "summary": route.summary,
                "parameters": parameters,
                "responses": {
                    "200": {
                        "description": "OK; carries ETag and Cache-Control: no-cache",
                        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", route.schema)}}}
                    },
                    "304": {"description": "Not modified (If-None-Match named the current ETag)"},
                    "400": problem("Bad path id or query parameter"),
                    "404": problem("Not in the read model"),
                    "503": problem("The read took too long")
                }
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "streamshop query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Reads over the read models the projections build from the event streams."
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": components}
    })
}
