//! What a projection is: a name, the stream it reads, how an event decodes into a change, and
//! how a batch of changes is written.

use std::future::Future;

use messaging::{BoundedContext, Envelope};
use sqlx::PgConnection;

/// A read model fed by one stream, written a batch at a time.
///
/// The worker hands [`write`](Projection::write) the changes of one batch in stream order, each
/// the next event of its aggregate (per-aggregate positions guarantee it), and it holds those
/// aggregates' position locks. So a projection may fold each aggregate's changes in memory and
/// write each table with one set-based statement: a batch costs a few round trips, not a few
/// per event.
pub trait Projection: Send + Sync + 'static {
    /// What one event means to this projection.
    type Change: Send + Sync;

    /// Unique name: the durable consumer's name and the checkpoint's key.
    const NAME: &'static str;

    /// The context whose stream feeds it.
    const CONTEXT: BoundedContext;

    /// The tables it owns: what a rebuild builds afresh and swaps in.
    const TABLES: &'static [&'static str];

    /// [`Projection::NAME`], for a caller holding a value.
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// [`Projection::CONTEXT`], for a caller holding a value.
    fn context(&self) -> BoundedContext {
        Self::CONTEXT
    }

    /// [`Projection::TABLES`], for a caller holding a value.
    fn tables(&self) -> &'static [&'static str] {
        Self::TABLES
    }

    /// Decodes one event before anything is written; `Err` names why it can never apply (an
    /// unknown type, a body that does not decode), and the event is dead-lettered.
    fn decode(&self, event: &Envelope) -> Result<Self::Change, String>;

    /// Writes a batch of changes inside the batch's transaction.
    fn write<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        changes: &'a [Self::Change],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
}

/// Decodes an event with its context's contract (upcasting old versions); an event that does
/// not decode (an unknown type or version, a body of the wrong shape) can never be applied.
pub fn decode<E: contracts::LogEvent>(event: &Envelope) -> Result<E, String> {
    contracts::decode(event).map_err(|e| e.to_string())
}

/// A fold that reached an impossible number (only a forged or corrupt event can carry one).
/// It is a data error, like a constraint the database refuses: the worker replays the batch
/// one message per transaction, and the message that causes it is dead-lettered. Never a
/// panic, never a wrapped value.
fn overflow(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("{what} is out of range").into())
}

/// `a + b`, or the data error [`overflow`] says.
pub fn add(a: i64, b: i64, what: &str) -> Result<i64, sqlx::Error> {
    a.checked_add(b).ok_or_else(|| overflow(what))
}

/// The message when a projection meets an event type it does not know.
pub fn unknown(event: &Envelope) -> String {
    format!("unknown event type {} v{}", event.name(), event.version())
}

/// Rows folded per key, kept in the order keys were first seen.
#[derive(Debug)]
pub struct Folds<K, V> {
    index: std::collections::HashMap<K, usize>,
    rows: Vec<V>,
}

impl<K: std::hash::Hash + Eq, V> Default for Folds<K, V> {
    fn default() -> Self {
        Self {
            index: std::collections::HashMap::new(),
            rows: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Folds<K, V> {
    /// The row of `key`, made by `init` the first time.
    pub fn entry(&mut self, key: K, init: impl FnOnce() -> V) -> &mut V {
        let rows = &mut self.rows;
        let i = *self.index.entry(key).or_insert_with(|| {
            rows.push(init());
            rows.len() - 1
        });
        &mut self.rows[i]
    }

    pub fn rows(&self) -> &[V] {
        &self.rows
    }

    /// One column of every row, for an `unnest` parameter.
    pub fn column<T>(&self, f: impl Fn(&V) -> T) -> Vec<T> {
        self.rows.iter().map(f).collect()
    }
}
