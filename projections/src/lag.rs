//! The projections worker's view of lag: the read itself is shared with the query API and
//! lives in `read_contract::lag`; this module frames it, with the dead letters' paths, as the
//! worker's OpenAPI document.

pub use read_contract::lag::{lags, routes, ProjectionLag};

/// The projections worker's OpenAPI document: `GET /projections` and the dead letters beside
/// the common paths.
pub fn openapi() -> serde_json::Value {
    let mut components = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    paths.insert(
        read_contract::lag::PATH.into(),
        read_contract::lag::operation(&mut components),
    );
    crate::dead_letters_http::paths(&mut paths, &mut components);
    service_kit::openapi::document(
        "streamshop projections worker",
        "The projection workers' health, metrics and progress, and their dead letters.",
        paths,
        components,
    )
}
