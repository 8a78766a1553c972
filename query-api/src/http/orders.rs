//! `GET /orders/{id}` (with read-your-writes) and `GET /customers/{id}/orders`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use read_contract::OrderStatus;
use service_kit::problem::Json;

use super::{limit, parse_id, read, AppState, Body, Page, PageParams, Params, ReadParams, Route};
use super::{CURSOR, LIMIT, MIN_VERSION};
use crate::error::ApiError;
use crate::freshness::Waited;
use crate::orders::{self, OrderView};

pub(super) const ROUTES: &[Route] = &[
    Route {
        path: "/orders/{id}",
        summary: "An order with its lines, total, payment and saga timeline",
        query: &[MIN_VERSION],
        body: Body::of::<OrderView>("OrderView"),
        serve: |state| read(state, get(get_order)),
    },
    Route {
        path: "/customers/{id}/orders",
        summary: "A customer's orders, newest first (keyset pagination)",
        query: &[
            ("status", "string", "Only orders in this status"),
            LIMIT,
            CURSOR,
        ],
        body: Body::of::<Page<OrderView>>("OrderPage"),
        serve: |state| read(state, get(customer_orders)),
    },
];

async fn get_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = parse_id(&id)?;
    let Some(min_version) = params.min_version else {
        return orders::find(&state.pool, order_id)
            .await?
            .map(Json)
            .ok_or(ApiError::OrderNotFound { stale: false });
    };
    let waited = state
        .freshness
        .wait_for(
            read_contract::ORDERS_VIEW,
            state.min_version_timeout,
            || orders::find(&state.pool, order_id),
            |o: &OrderView| o.version >= min_version,
            |o: Option<&OrderView>| {
                super::too_far(
                    min_version,
                    o.map_or(0, |o| o.version),
                    state.min_version_max_ahead,
                )
            },
        )
        .await?;
    match waited {
        Waited::Fresh(order) => Ok(Json(order)),
        Waited::Stale(Some(order)) => Ok(Json(OrderView {
            stale: true,
            ..order
        })),
        Waited::Stale(None) => Err(ApiError::OrderNotFound { stale: true }),
        Waited::TooFar => Err(ApiError::too_far(min_version, state.min_version_max_ahead)),
    }
}

async fn customer_orders(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<OrderView>>, ApiError> {
    let customer = parse_id(&id)?;
    if params.low_stock.is_some() {
        return Err(ApiError::BadRequest("low_stock applies to products".into()));
    }
    let status = match &params.status {
        None => None,
        Some(word) => Some(OrderStatus::parse(word).ok_or_else(|| {
            let words: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("status must be one of {}", words.join(", ")))
        })?),
    };
    let cursor =
        match &params.cursor {
            None => None,
            Some(c) => Some(orders::Cursor::decode(c).ok_or_else(|| {
                ApiError::BadRequest("the cursor is not one this API gave".into())
            })?),
        };
    let (items, next) =
        orders::for_customer(&state.pool, customer, status, cursor, limit(&params)?).await?;
    Ok(Json(Page {
        items,
        next_cursor: next.map(|c| c.encode()),
    }))
}
