//! `GET /projections`: the projections' lag, served as the projections worker serves it (the
//! read, its type and its handler are `read_contract::lag`'s), so it skips the reads' ETag and
//! time limit.

use read_contract::lag::{ProjectionLag, PATH, SCHEMA, SUMMARY};

use super::{Body, Route};

pub(super) const ROUTES: &[Route] = &[Route {
    path: PATH,
    summary: SUMMARY,
    query: &[],
    body: Body::of::<Vec<ProjectionLag>>(SCHEMA),
    serve: |state| read_contract::lag::handler(state.pool.clone()),
}];
