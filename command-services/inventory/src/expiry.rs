//! Reservations do not hold stock forever: one still open after `RESERVATION_TTL_MINUTES` (an
//! hour by default, far past any saga's business deadline) is released by the service itself,
//! through the same `ReleaseStock` command the saga would send. Stock held for an order whose
//! saga stopped, or for an order id nobody placed, comes back.
//!
//! A saga that later commits an expired reservation is refused (`no_reservation`) and
//! compensates, as for any refusal.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use command_kit::dispatch::{Dispatcher, Request};
use contracts::inventory::ReleaseStock;
use contracts::{Command, Reply};
use service_kit::service::{task, Task};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::InventorySpec;

/// Open reservations looked at per statement.
const BATCH: i64 = 500;

/// Open reservations made before the cut-off (the database's clock less `$4` seconds) and
/// after the cursor (`$1`–`$3`: time, SKU, order id), in cursor order, from the table the
/// events' trigger keeps (migration 0008): its size is the reservations in flight, not every
/// one ever made. Events committed together share their time, so the cursor carries the key
/// as well: a batch that ends among them resumes at the next, never past it.
const OPEN_AND_OLD: &str = "\
    SELECT aggregate_id, order_id, reserved_at FROM open_reservations \
    WHERE (reserved_at, aggregate_id, order_id) > ($1, $2, $3) \
      AND reserved_at < now() - make_interval(secs => $4) \
    ORDER BY reserved_at, aggregate_id, order_id LIMIT $5";

/// Where a pass over the open reservations has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    at: DateTime<Utc>,
    sku: String,
    order_id: String,
}

impl Default for Cursor {
    fn default() -> Self {
        Self {
            at: DateTime::<Utc>::UNIX_EPOCH,
            sku: String::new(),
            order_id: String::new(),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Open, old reservations found.
    pub found: usize,
    /// Of those, released now.
    pub released: usize,
    /// Whether the pass is over (otherwise sweep again now); the next starts from the oldest.
    pub caught_up: bool,
}

/// Finds open reservations past their time to live and releases them, a batch per
/// [`Sweeper::sweep`]. A pass goes once through the open reservations older than the cut-off
/// (one that cannot be released now is not retried until the next pass).
pub struct Sweeper {
    dispatcher: Arc<Dispatcher<InventorySpec>>,
    pool: PgPool,
    ttl: Duration,
    batch: i64,
    cursor: Cursor,
}

impl Sweeper {
    pub fn new(dispatcher: Arc<Dispatcher<InventorySpec>>, pool: PgPool, ttl: Duration) -> Self {
        Self {
            dispatcher,
            pool,
            ttl,
            batch: BATCH,
            cursor: Cursor::default(),
        }
    }

    /// At most `batch` reservations per sweep (tests use small batches).
    pub fn batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// One batch: releases each open reservation made before the cut-off (the database's
    /// clock minus the time to live) and after the cursor, and moves the cursor past them.
    pub async fn sweep(&mut self) -> Result<Swept, sqlx::Error> {
        let open: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(OPEN_AND_OLD)
            .bind(self.cursor.at)
            .bind(&self.cursor.sku)
            .bind(&self.cursor.order_id)
            .bind(self.ttl.as_secs_f64())
            .bind(self.batch)
            .fetch_all(&self.pool)
            .await?;
        let mut released = 0;
        for (sku, order_id, _) in &open {
            released += usize::from(self.release(sku, order_id).await);
        }
        let caught_up = (open.len() as i64) < self.batch;
        self.cursor = match open.last() {
            Some((sku, order_id, at)) if !caught_up => Cursor {
                at: *at,
                sku: sku.clone(),
                order_id: order_id.clone(),
            },
            _ => Cursor::default(),
        };
        Ok(Swept {
            found: open.len(),
            released,
            caught_up,
        })
    }

    /// Releases one reservation through the same command the saga would send.
    async fn release(&self, sku: &str, order_id: &str) -> bool {
        let reply = self
            .dispatcher
            .dispatch(Request {
                name: ReleaseStock::NAME.to_owned(),
                body: serde_json::json!({"sku": sku, "order_id": order_id}),
                idempotency_key: None,
                traceparent: None,
            })
            .await;
        match reply {
            Reply::Accepted { .. } => {
                metrics::counter!("reservations_expired_total").increment(1);
                tracing::info!(%sku, %order_id, "an old reservation expired; its stock is back");
                true
            }
            Reply::Rejected {
                reason, message, ..
            } => {
                tracing::warn!(%sku, %order_id, reason, message, "an old reservation could not be released");
                false
            }
        }
    }
}

/// The sweeper's task: sweeps until caught up, then again every `every`.
pub fn sweeper(
    dispatcher: Arc<Dispatcher<InventorySpec>>,
    pool: PgPool,
    ttl: Duration,
    every: Duration,
) -> Task {
    task(move |shutdown: CancellationToken| async move {
        let mut sweeper = Sweeper::new(dispatcher, pool, ttl);
        loop {
            match sweeper.sweep().await {
                Ok(swept) if !swept.caught_up => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %service_kit::problem::ErrorChain(&e), "expiring reservations failed; trying again later")
                }
            }
            if !service_kit::retry::sleep_unless_cancelled(every, &shutdown).await {
                return Ok(());
            }
        }
    })
}
