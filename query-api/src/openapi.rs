//! The query API's OpenAPI 3.1 document, generated from the response types (their JSON Schemas
//! come from schemars, which OpenAPI 3.1 accepts as they are) and the route table below.
//! Served at `GET /openapi.json`, committed as `schemas/openapi/query-api.json`, and checked
//! against the code by the schemas drift test.

use runtime::openapi::{add, path_param, problem, reference};
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

    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route.path_params.iter().map(|p| path_param(p)).collect();
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
                        "content": {"application/json": {"schema": reference(route.schema)}}
                    },
                    "304": {"description": "Not modified (If-None-Match named the current ETag)"},
                    "400": problem("Bad path id or query parameter"),
                    "404": problem("Not in the read model"),
                    "503": problem("The read took too long")
                }
            }}),
        );
    }
    runtime::openapi::document(
        "streamshop query API",
        "Reads over the read models the projections build from the event streams.",
        paths,
        components,
    )
}
