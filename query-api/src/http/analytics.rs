//! `GET /analytics/sales`: sales per day and SKU, and orders by outcome per day.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use service_kit::problem::Json;

use super::{read, AppState, Body, Params, Route};
use crate::catalog::{self, OutcomeRow, SalesRow};
use crate::error::ApiError;

pub(super) const ROUTES: &[Route] = &[Route {
    path: "/analytics/sales",
    summary: "Sales per day and SKU, and orders by outcome per day",
    query: &[
        (
            "from",
            "string",
            "First day (YYYY-MM-DD), default 30 days before `to`",
        ),
        ("to", "string", "Last day (YYYY-MM-DD), default today"),
    ],
    body: Body::of::<SalesReport>("SalesReport"),
    serve: |state| read(state, get(sales)),
}];

/// `GET /analytics/sales`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct SalesReport {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub sales: Vec<SalesRow>,
    pub outcomes: Vec<OutcomeRow>,
}

/// `from` and `to` days (inclusive), default the last 30 days.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

async fn sales(
    State(state): State<Arc<AppState>>,
    Params(params): Params<RangeParams>,
) -> Result<Json<SalesReport>, ApiError> {
    let to = params.to.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let from = params.from.unwrap_or(to - chrono::Days::new(30));
    if from > to || (to - from).num_days() > 366 {
        return Err(ApiError::BadRequest(
            "from must be on or before to, and at most 366 days apart".into(),
        ));
    }
    let (sales, outcomes) = catalog::analytics(&state.pool, from, to).await?;
    Ok(Json(SalesReport {
        from,
        to,
        sales,
        outcomes,
    }))
}
