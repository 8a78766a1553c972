//! What a projection is: a name, the stream it reads, and how one event changes its tables.

use std::future::Future;

use messaging::{BoundedContext, Envelope};
use sqlx::PgConnection;

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (unknown type, a body that does not decode).
    #[error("{0}")]
    Poison(String),
    /// The database failed; whether to retry depends on the error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A read model fed by one stream.
pub trait Projection: Send + Sync + 'static {
    /// Unique name: the durable consumer's name and the checkpoint's key.
    fn name(&self) -> &'static str;

    /// The context whose stream feeds it.
    fn context(&self) -> BoundedContext;

    /// The tables it owns: what a rebuild builds afresh and swaps in.
    fn tables(&self) -> &'static [&'static str];

    /// Applies one event inside the batch's transaction. It must decode before it writes, so
    /// that a `Poison` leaves nothing behind.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a Envelope,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send + 'a;
}

/// Decodes an event's `data`; a body that does not decode can never be applied.
pub fn decode<T: serde::de::DeserializeOwned>(event: &Envelope) -> Result<T, ApplyError> {
    serde_json::from_value(event.data.clone()).map_err(|e| {
        ApplyError::Poison(format!(
            "{} v{} does not decode: {e}",
            event.name(),
            event.version()
        ))
    })
}
