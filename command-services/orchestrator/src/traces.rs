//! The trace each open saga's work joins: the `traceparent` of the last input it took in (all
//! of one order's inputs are one trace), kept in this replica's memory while the saga is open.
//! A saga resumed after a restart starts a new trace.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use uuid::Uuid;

/// Per open saga: its trace, and when it was recorded.
#[derive(Default)]
pub struct SagaTraces(Mutex<HashMap<Uuid, (String, Instant)>>);

impl SagaTraces {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (String, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn remember(&self, saga: Uuid, traceparent: String) {
        self.map().insert(saga, (traceparent, Instant::now()));
    }

    pub fn of(&self, saga: Uuid) -> Option<String> {
        self.map()
            .get(&saga)
            .map(|(traceparent, _)| traceparent.clone())
    }

    /// The saga ended (here, or seen ended by a drive).
    pub fn forget(&self, saga: Uuid) {
        self.map().remove(&saga);
    }

    /// Drops the traces of sagas that were closed when `open` was listed at `listed_at`
    /// (another replica may have ended them), keeping those recorded since.
    pub fn forget_closed(&self, open: &[Uuid], listed_at: Instant) {
        let open: HashSet<&Uuid> = open.iter().collect();
        self.map()
            .retain(|id, (_, recorded)| open.contains(id) || *recorded > listed_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sagas_are_forgotten_but_not_those_recorded_after_the_listing() {
        let traces = SagaTraces::default();
        let (open, closed, newer) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        traces.remember(open, "a".into());
        traces.remember(closed, "b".into());
        let listed_at = Instant::now();
        traces.remember(newer, "c".into());
        traces.forget_closed(&[open], listed_at);
        assert_eq!(traces.of(open).as_deref(), Some("a"));
        assert_eq!(traces.of(closed), None);
        assert_eq!(traces.of(newer).as_deref(), Some("c"));
        traces.forget(open);
        assert_eq!(traces.of(open), None);
    }
}
