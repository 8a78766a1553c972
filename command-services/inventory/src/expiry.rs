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

/// Reservations made before the cut-off (`recorded_at` older than the TTL) and after
/// `since`, that no release or commit has settled, oldest first.
const OPEN_AND_OLD: &str = "\
    SELECT r.aggregate_id, r.payload -> 'StockReserved' ->> 'order_id', r.recorded_at \
    FROM events r \
    WHERE r.event_type = 'StockReserved' AND r.recorded_at > $1 \
      AND r.recorded_at < now() - make_interval(secs => $2) \
      AND NOT EXISTS (SELECT 1 FROM events s \
          WHERE s.aggregate_type = r.aggregate_type AND s.aggregate_id = r.aggregate_id \
            AND s.event_type IN ('ReservationReleased', 'ReservationCommitted') \
            AND s.payload -> s.event_type ->> 'order_id' = r.payload -> 'StockReserved' ->> 'order_id') \
    ORDER BY r.recorded_at LIMIT $3";

/// The sweeper: every `every`, releases what has been open longer than `ttl`.
pub fn sweeper(
    dispatcher: Arc<Dispatcher<InventorySpec>>,
    pool: PgPool,
    ttl: Duration,
    every: Duration,
) -> Task {
    task(move |shutdown: CancellationToken| async move {
        // Everything before this was looked at (in this process); a restart looks at all
        // history once, which the anti-join keeps to what is still open.
        let mut since = DateTime::<Utc>::UNIX_EPOCH;
        loop {
            match sweep(&dispatcher, &pool, ttl, since).await {
                Ok((seen, last)) => {
                    since = last.unwrap_or(since);
                    if seen as i64 == BATCH {
                        continue;
                    }
                }
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

/// One batch: releases each open, old reservation; returns how many it saw and the time of
/// the last.
async fn sweep(
    dispatcher: &Dispatcher<InventorySpec>,
    pool: &PgPool,
    ttl: Duration,
    since: DateTime<Utc>,
) -> Result<(usize, Option<DateTime<Utc>>), sqlx::Error> {
    let open: Vec<(String, Option<String>, DateTime<Utc>)> = sqlx::query_as(OPEN_AND_OLD)
        .bind(since)
        .bind(ttl.as_secs_f64())
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
    for (sku, order_id, _) in &open {
        let Some(order_id) = order_id else { continue };
        let reply = dispatcher
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
            }
            Reply::Rejected {
                reason, message, ..
            } => {
                tracing::warn!(%sku, %order_id, reason, message, "an old reservation could not be released")
            }
        }
    }
    Ok((open.len(), open.last().map(|(_, _, at)| *at)))
}
