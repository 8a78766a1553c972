//! How many live order streams are open, per caller and in all. Each stream holds two
//! JetStream consumers for as long as the order takes, so a caller may hold only a few at
//! once, however slowly they open them, and all callers together a bounded number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open streams per caller, and the most one (and all) may hold.
pub struct OpenStreams {
    max: u32,
    total: u32,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    per_caller: HashMap<String, u32>,
    all: u32,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The caller holds as many as one may.
    Caller,
    /// All callers together hold as many as the gateway serves.
    All,
}

/// One open stream; dropping it (when the stream ends) frees its place.
pub struct Slot {
    streams: Arc<OpenStreams>,
    caller: String,
}

impl OpenStreams {
    pub fn new(max: u32, total: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            total,
            open: Mutex::new(Open::default()),
        })
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// A place for one more stream of `caller`, unless they (or all callers) hold the most
    /// already.
    pub fn take(self: &Arc<Self>, caller: String) -> Result<Slot, Full> {
        let mut open = self.lock();
        if open.all >= self.total {
            return Err(Full::All);
        }
        let count = open.per_caller.entry(caller.clone()).or_insert(0);
        if *count >= self.max {
            return Err(Full::Caller);
        }
        *count += 1;
        open.all += 1;
        Ok(Slot {
            streams: self.clone(),
            caller,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        open.all = open.all.saturating_sub(1);
        if let Some(count) = open.per_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.per_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_holds_at_most_the_limit_and_a_closed_stream_frees_its_place() {
        let streams = OpenStreams::new(2, 100);
        let a1 = streams.take("a".into()).unwrap();
        let _a2 = streams.take("a".into()).unwrap();
        assert_eq!(streams.take("a".into()).err(), Some(Full::Caller));
        assert!(
            streams.take("b".into()).is_ok(),
            "another caller is not limited"
        );
        drop(a1);
        assert!(streams.take("a".into()).is_ok());
    }

    #[test]
    fn all_callers_together_hold_at_most_the_total() {
        let streams = OpenStreams::new(2, 3);
        let held: Vec<Slot> = ["a", "b", "c"]
            .into_iter()
            .map(|c| streams.take(c.into()).unwrap())
            .collect();
        assert_eq!(streams.take("d".into()).err(), Some(Full::All));
        drop(held);
        assert!(streams.take("d".into()).is_ok(), "places freed");
    }
}
