//! One way to keep a background loop going until shutdown: run a step, and after a failure
//! wait an exponential backoff (cut short by shutdown) before the next; a success resets it.
//! The relay, the projection workers and the orchestrator's consumers all loop this way.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff: `first`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait after the next failure, which doubles the one after it.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Back to `first` after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Sleeps `wait`, or less when `shutdown` comes first; true when it slept the whole wait.
pub async fn sleep_unless_cancelled(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Runs `step` until `shutdown` is cancelled. A step in hand always finishes; after a failed
/// step, `what` and the error are logged and the next step waits the backoff.
pub async fn until_cancelled<F, Fut, E>(
    what: &str,
    shutdown: &CancellationToken,
    mut backoff: Backoff,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    while !shutdown.is_cancelled() {
        match step().await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                let wait = backoff.failed();
                tracing::warn!(error = %crate::problem::ErrorChain(&e), retry_in = ?wait, "{what} failed");
                sleep_unless_cancelled(wait, shutdown).await;
            }
        }
    }
}

/// Runs `step` until it succeeds, waiting the backoff after each failure; `None` when
/// `shutdown` came first.
pub async fn until_ok<T, F, Fut, E>(
    what: &str,
    shutdown: &CancellationToken,
    mut backoff: Backoff,
    mut step: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    while !shutdown.is_cancelled() {
        match step().await {
            Ok(value) => return Some(value),
            Err(e) => {
                let wait = backoff.failed();
                tracing::warn!(error = %crate::problem::ErrorChain(&e), retry_in = ?wait, "{what} failed");
                sleep_unless_cancelled(wait, shutdown).await;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[test]
    fn the_backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_wait_the_backoff_and_shutdown_ends_the_loop() {
        let shutdown = CancellationToken::new();
        let steps = Arc::new(AtomicU32::new(0));
        let started = tokio::time::Instant::now();
        let (s, n) = (shutdown.clone(), steps.clone());
        until_cancelled("test", &shutdown, Backoff::default(), move || {
            let (s, n) = (s.clone(), n.clone());
            async move {
                // Three failures, then the fourth step asks to stop and succeeds.
                if n.fetch_add(1, Ordering::SeqCst) == 3 {
                    s.cancel();
                    return Ok(());
                }
                Err(Boom)
            }
        })
        .await;
        assert_eq!(steps.load(Ordering::SeqCst), 4);
        // 100 + 200 + 400 ms of backoff, on the paused clock.
        assert_eq!(started.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_until_a_success() {
        let shutdown = CancellationToken::new();
        let tries = AtomicU32::new(0);
        let value = until_ok("test", &shutdown, Backoff::default(), || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Boom),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(value, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_a_backoff_short() {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.cancel();
        });
        until_cancelled(
            "test",
            &shutdown,
            Backoff::new(Duration::from_secs(60), Duration::from_secs(60)),
            || async { Err::<(), _>(Boom) },
        )
        .await;
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }
}
