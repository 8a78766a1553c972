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
use runtime::service::{task, Task};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::InventorySpec;

/// Open reservations looked at per statement.
const BATCH: i64 = 500;

/// How far before the last cut-off the next sweeps look again. A reservation's `recorded_at` is
/// its transaction's start, so one that committed just after a sweep may be older than the
/// cut-off that sweep used; no transaction of the service lasts anywhere near this long (its
/// statements are cut off after seconds).
pub const OVERLAP: Duration = Duration::from_secs(300);

/// Reservations made before the cut-off (`$4`) and after the cursor (`$1`–`$3`: time, SKU,
/// sequence), that no release or commit has settled, in cursor order. Events committed
/// together share their `recorded_at`, so the cursor carries the key as well as the time:
/// a batch that ends among them resumes at the next, never past it.
const OPEN_AND_OLD: &str = "\
    SELECT r.aggregate_id, r.sequence, r.payload -> 'StockReserved' ->> 'order_id', r.recorded_at \
    FROM events r \
    WHERE r.event_type = 'StockReserved' \
      AND (r.recorded_at, r.aggregate_id, r.sequence) > ($1, $2, $3) \
      AND r.recorded_at < $4 \
      AND NOT EXISTS (SELECT 1 FROM events s \
          WHERE s.aggregate_type = r.aggregate_type AND s.aggregate_id = r.aggregate_id \
            AND s.event_type IN ('ReservationReleased', 'ReservationCommitted') \
            AND s.payload -> s.event_type ->> 'order_id' = r.payload -> 'StockReserved' ->> 'order_id') \
    ORDER BY r.recorded_at, r.aggregate_id, r.sequence LIMIT $5";

/// Where the sweeps have got to: every reservation before it has been looked at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    at: DateTime<Utc>,
    sku: String,
    sequence: i64,
}

impl Cursor {
    fn at(at: DateTime<Utc>) -> Self {
        Self {
            at,
            sku: String::new(),
            sequence: -1,
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
    /// Whether everything before the cut-off has been looked at (otherwise sweep again now).
    pub caught_up: bool,
}

/// Finds open reservations past their time to live and releases them, a batch per
/// [`Sweeper::sweep`]. It starts at the beginning of history (a restart looks at all of it
/// once, which the anti-join keeps to what is still open); once caught up, each sweep looks
/// only at what was reserved since the last cut-off, so its cost follows the recent
/// reservations, not every one ever made.
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
            cursor: Cursor::at(DateTime::<Utc>::UNIX_EPOCH),
        }
    }

    /// At most `batch` reservations per sweep (tests use small batches).
    pub fn batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Every reservation made before this has been looked at.
    pub fn swept_until(&self) -> DateTime<Utc> {
        self.cursor.at
    }

    /// One batch: releases each open reservation made before the cut-off (the database's
    /// clock minus the time to live) and after the cursor, and moves the cursor past them.
    pub async fn sweep(&mut self) -> Result<Swept, sqlx::Error> {
        let cut_off: DateTime<Utc> = sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
            .bind(self.ttl.as_secs_f64())
            .fetch_one(&self.pool)
            .await?;
        let open: Vec<(String, i64, Option<String>, DateTime<Utc>)> = sqlx::query_as(OPEN_AND_OLD)
            .bind(self.cursor.at)
            .bind(&self.cursor.sku)
            .bind(self.cursor.sequence)
            .bind(cut_off)
            .bind(self.batch)
            .fetch_all(&self.pool)
            .await?;
        let mut released = 0;
        for (sku, _, order_id, _) in &open {
            let Some(order_id) = order_id else { continue };
            released += usize::from(self.release(sku, order_id).await);
        }
        if let Some((sku, sequence, _, at)) = open.last() {
            self.cursor = Cursor {
                at: *at,
                sku: sku.clone(),
                sequence: *sequence,
            };
        }
        let caught_up = (open.len() as i64) < self.batch;
        if caught_up {
            // Everything before the cut-off was looked at; keep a margin for transactions
            // that had not committed yet.
            let until = cut_off - chrono::Duration::from_std(OVERLAP).unwrap_or_default();
            self.cursor = self.cursor.clone().max(Cursor::at(until));
        }
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
                    tracing::warn!(error = %runtime::problem::ErrorChain(&e), "expiring reservations failed; trying again later")
                }
            }
            if !runtime::retry::sleep_unless_cancelled(every, &shutdown).await {
                return Ok(());
            }
        }
    })
}
