//! One in-process lock per aggregate: commands on the same aggregate in this process take
//! turns instead of racing into optimistic-concurrency conflicts. Conflicts with other
//! replicas are still possible and still retried by the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Locks keyed by aggregate id; an entry lives only while someone holds or waits for it.
#[derive(Default)]
pub struct AggregateLocks {
    locks: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

impl AggregateLocks {
    /// Waits for the aggregate's lock; it is released when the guard drops.
    pub async fn lock(&self, aggregate_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() > 1024 {
                locks.retain(|_, weak| weak.strong_count() > 0);
            }
            match locks.get(aggregate_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    locks.insert(aggregate_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_aggregate_and_others_are_independent() {
        let locks = Arc::new(AggregateLocks::default());
        let held = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "another aggregate is not blocked");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(same.is_err(), "the same aggregate waits");
        drop(held);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), locks.lock("a"))
                .await
                .is_ok()
        );
    }
}
