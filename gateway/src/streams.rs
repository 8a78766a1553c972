//! How many live order streams each caller has open. Each stream holds two JetStream
//! consumers for as long as the order takes, so a caller may hold only a few at once, however
//! slowly they open them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open streams per caller, and the most one may hold.
pub struct OpenStreams {
    max: u32,
    open: Mutex<HashMap<String, u32>>,
}

/// One open stream; dropping it (when the stream ends) frees its place.
pub struct Slot {
    streams: Arc<OpenStreams>,
    caller: String,
}

impl OpenStreams {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// A place for one more stream of `caller`, unless they hold the most already.
    pub fn take(self: &Arc<Self>, caller: String) -> Option<Slot> {
        let mut open = self.lock();
        let count = open.entry(caller.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            streams: self.clone(),
            caller,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        if let Some(count) = open.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_holds_at_most_the_limit_and_a_closed_stream_frees_its_place() {
        let streams = OpenStreams::new(2);
        let a1 = streams.take("a".into()).unwrap();
        let _a2 = streams.take("a".into()).unwrap();
        assert!(streams.take("a".into()).is_none());
        assert!(
            streams.take("b".into()).is_some(),
            "another caller is not limited"
        );
        drop(a1);
        assert!(streams.take("a".into()).is_some());
    }
}
