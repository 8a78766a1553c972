//! One wake-up timer per key (per saga): scheduling again replaces the previous timer, so a
//! saga wakes once, at its latest computed time, however often it is driven.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// Timers keyed by `K`; each fires at most once, unless shutdown comes first.
pub struct Timers<K> {
    handles: Mutex<HashMap<K, AbortHandle>>,
    shutdown: CancellationToken,
}

impl<K: Eq + Hash + Clone + Send + 'static> Timers<K> {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            handles: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// Runs `fire` after `after`, replacing any timer of `key`.
    pub fn schedule<F, Fut>(&self, key: K, after: Duration, fire: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        // The deadline is fixed now, not when the task first runs.
        let sleep = tokio::time::sleep(after);
        let handle = tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = sleep => fire().await,
            }
        });
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = handles.insert(key, handle.abort_handle()) {
            old.abort();
        }
    }

    /// Drops the timer of `key`, if any.
    pub fn cancel(&self, key: &K) {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = handles.remove(key) {
            old.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn counter() -> (
        Arc<AtomicU32>,
        impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Clone,
    ) {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        (n, move || {
            let m = m.clone();
            Box::pin(async move {
                m.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    async fn advance(d: Duration) {
        tokio::time::advance(d).await;
        // Let woken tasks run.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_fires_once_at_its_time() {
        let timers = Timers::new(CancellationToken::new());
        let (n, fire) = counter();
        timers.schedule(1, Duration::from_secs(5), fire);
        advance(Duration::from_millis(4_999)).await;
        assert_eq!(n.load(Ordering::SeqCst), 0);
        advance(Duration::from_millis(1)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        advance(Duration::from_secs(60)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rescheduling_replaces_the_earlier_timer() {
        let timers = Timers::new(CancellationToken::new());
        let (n, fire) = counter();
        timers.schedule("saga", Duration::from_secs(10), fire.clone());
        timers.schedule("saga", Duration::from_secs(2), fire.clone());
        advance(Duration::from_secs(2)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "fires at the new time");
        advance(Duration::from_secs(10)).await;
        assert_eq!(
            n.load(Ordering::SeqCst),
            1,
            "the replaced timer never fires"
        );
        timers.schedule("other", Duration::from_secs(1), fire);
        advance(Duration::from_secs(1)).await;
        assert_eq!(n.load(Ordering::SeqCst), 2, "keys are independent");
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_and_shutdown_stop_timers() {
        let shutdown = CancellationToken::new();
        let timers = Timers::new(shutdown.clone());
        let (n, fire) = counter();
        timers.schedule(1, Duration::from_secs(1), fire.clone());
        timers.cancel(&1);
        timers.schedule(2, Duration::from_secs(1), fire);
        shutdown.cancel();
        advance(Duration::from_secs(5)).await;
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
