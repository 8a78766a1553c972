//! `GET /products/{sku}` (with read-your-writes) and `GET /products`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use service_kit::problem::Json;

use super::{
    limit, read, read_at_least, AppState, Body, Page, PageParams, Params, ReadParams, Route,
};
use super::{CURSOR, LIMIT, MIN_VERSION};
use crate::catalog::{self, ProductView};
use crate::error::ApiError;

pub(super) const ROUTES: &[Route] = &[
    Route {
        path: "/products",
        summary: "Products by SKU, with availability",
        query: &[
            (
                "low_stock",
                "integer",
                "Only products with at most this many available",
            ),
            LIMIT,
            CURSOR,
        ],
        body: Body::of::<Page<ProductView>>("ProductPage"),
        serve: |state| read(state, get(list_products)),
    },
    Route {
        path: "/products/{sku}",
        summary: "A product: price, on hand, reserved, available",
        query: &[MIN_VERSION],
        body: Body::of::<ProductView>("ProductView"),
        serve: |state| read(state, get(get_product)),
    },
];

async fn list_products(
    State(state): State<Arc<AppState>>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<ProductView>>, ApiError> {
    if params.status.is_some() {
        return Err(ApiError::BadRequest("status applies to orders".into()));
    }
    let (items, next) = catalog::products(
        &state.pool,
        params.cursor.as_deref(),
        params.low_stock,
        limit(&params)?,
    )
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: next,
    }))
}

async fn get_product(
    State(state): State<Arc<AppState>>,
    Path(sku): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Json<ProductView>, ApiError> {
    let found = read_at_least(
        &state,
        read_contract::PRODUCTS_VIEW,
        params.min_version,
        || catalog::product(&state.pool, &sku),
        |p| p.version as u64,
    )
    .await?;
    found.map(Json).ok_or(ApiError::NotFound("product"))
}
