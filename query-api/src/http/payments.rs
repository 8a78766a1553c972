//! `GET /payments/{order_id}` (with read-your-writes).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use service_kit::problem::Json;

use super::{
    parse_id, read, read_at_least, AppState, Body, Params, ReadParams, Route, MIN_VERSION,
};
use crate::catalog::{self, PaymentView};
use crate::error::ApiError;

pub(super) const ROUTES: &[Route] = &[Route {
    path: "/payments/{order_id}",
    summary: "An order's payment: authorised, captured, voided, refunded",
    query: &[MIN_VERSION],
    body: Body::of::<PaymentView>("PaymentView"),
    serve: |state| read(state, get(get_payment)),
}];

async fn get_payment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Json<PaymentView>, ApiError> {
    let order_id = parse_id(&id)?;
    let found = read_at_least(
        &state,
        read_contract::PAYMENTS_VIEW,
        params.min_version,
        || catalog::payment(&state.pool, order_id),
        |p| p.version as u64,
    )
    .await?;
    found.map(Json).ok_or(ApiError::NotFound("payment"))
}
