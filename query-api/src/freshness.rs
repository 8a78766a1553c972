//! Read-your-writes support: wakes waiting requests when a projection commits.
//!
//! One `LISTEN read_model_updated` connection feeds a watch channel per projection (the
//! notification's payload names it). A request that asked for `min_version` waits on the
//! projection that sets that version and re-reads its row on each of its wake-ups (and on a
//! short poll, in case a notification was missed while the listener reconnected) until the
//! version is reached or time runs out.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Poll interval behind the notifications.
const FALLBACK_POLL: Duration = Duration::from_millis(100);

/// Hands out wake-ups on read-model commits, per projection: a wait for an order is not woken
/// by every saga or stock batch.
#[derive(Clone)]
pub struct Freshness {
    updates: std::collections::HashMap<&'static str, watch::Receiver<u64>>,
}

/// What a bounded wait found.
#[derive(Debug)]
pub enum Waited<T> {
    /// The read model reached the wanted version.
    Fresh(T),
    /// Time ran out; this is what it has (maybe nothing).
    Stale(Option<T>),
    /// The version asked for is too far past what the first read found to wait for.
    TooFar,
}

impl Freshness {
    /// Starts the listener task; it stops with `shutdown`.
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (senders, updates) = read_contract::NAMES
            .into_iter()
            .map(|name| {
                let (tx, rx) = watch::channel(0u64);
                ((name, tx), (name, rx))
            })
            .unzip();
        tokio::spawn(listen(pool, senders, shutdown));
        Self { updates }
    }

    /// Calls `read` until `is_fresh` holds for its result or `timeout` passes, reading again
    /// whenever `projection` (one of `read_contract::NAMES`) commits; gives up at once when the
    /// first read is `too_far` behind what is asked.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        projection: &str,
        timeout: Duration,
        mut read: F,
        is_fresh: impl Fn(&T) -> bool,
        too_far: impl Fn(Option<&T>) -> bool,
    ) -> Result<Waited<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut updates = self
            .updates
            .get(projection)
            .expect("callers name a projection of read_contract::NAMES")
            .clone();
        let mut first = true;
        loop {
            updates.mark_unchanged();
            let found = read().await?;
            if found.as_ref().is_some_and(&is_fresh) {
                return Ok(Waited::Fresh(found.expect("checked above")));
            }
            if std::mem::take(&mut first) && too_far(found.as_ref()) {
                return Ok(Waited::TooFar);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Waited::Stale(found));
            }
            tokio::select! {
                _ = updates.changed() => {}
                _ = tokio::time::sleep(FALLBACK_POLL) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

async fn listen(
    pool: PgPool,
    senders: std::collections::HashMap<&'static str, watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    let channel = read_contract::UPDATED_CHANNEL;
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(channel).await {
                Ok(()) => l,
                Err(e) => {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "cannot LISTEN for read-model updates");
                    pause(&shutdown).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "cannot connect the read-model listener");
                pause(&shutdown).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(n) => match senders.get(n.payload()) {
                        Some(tx) => tx.send_modify(|v| *v += 1),
                        // Unknown payload: wake everyone rather than miss a commit.
                        None => senders.values().for_each(|tx| tx.send_modify(|v| *v += 1)),
                    },
                    Err(e) => {
                        tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "read-model listener lost; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}
