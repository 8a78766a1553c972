//! The sender: claims due deliveries for a lease, sends each through its channel and records
//! the attempt. A failed attempt is retried after an exponential, jittered delay until the
//! delivery's retry window is over; then it is marked failed and its endpoint paused.
//!
//! Invariant: an endpoint's deliveries of one aggregate are sent in sequence order: one is
//! claimed only when none before it is pending.
//!
//! Invariant: a slow or dead endpoint holds at most `WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`
//! places of this replica's `WEBHOOK_MAX_IN_FLIGHT`; the others' deliveries go on meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::channel::{Channel, Endpoint, Outcome, Webhooks};
use crate::settings::WebhookSettings;

/// A delivery claimed for one attempt.
#[derive(Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    pub payload: sqlx::types::Json<Value>,
    pub window_start: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// Every field but the signing secrets, which no log may show.
impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("attempts", &self.attempts)
            .field("window_start", &self.window_start)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Sends what is due, through the webhook channel.
pub struct Sender {
    pool: PgPool,
    channel: Webhooks,
    settings: WebhookSettings,
    /// The places of the channel's bulkhead.
    places: Arc<Semaphore>,
    /// Attempts in flight per endpoint.
    in_flight: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// Woken when deliveries are recorded.
    recorded: Arc<Notify>,
}

/// The delay after the `attempt`-th failed attempt: base × 2^(attempt-1), at most `max`,
/// times a random factor in [0.5, 1] so that endpoints coming back are not hit in step.
pub fn backoff(attempt: i32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = base.saturating_mul(1u32 << exponent).min(max);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

impl Sender {
    pub fn new(
        pool: PgPool,
        settings: WebhookSettings,
        recorded: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let guard = crate::guard::Guard {
            allow_private: settings.allow_private,
        };
        Ok(Self {
            channel: Webhooks::new(guard, settings.timeout)?,
            places: Arc::new(Semaphore::new(settings.max_in_flight)),
            in_flight: Arc::default(),
            pool,
            settings,
            recorded,
        })
    }

    /// Endpoints with all their places taken on this replica.
    fn saturated(&self) -> Vec<Uuid> {
        let cap = self.settings.max_in_flight_per_endpoint;
        let in_flight = self.in_flight.lock().expect("in-flight counts");
        in_flight
            .iter()
            .filter(|(_, n)| **n >= cap)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Claims up to `limit` due deliveries, each for a lease of twice the attempt's timeout
    /// and 5 s: time to send and record it. A replica killed meanwhile leaves the lease to
    /// run out, and another sends the delivery again (with the same id). Also whether more
    /// may be due: the claim was full, or passed over (or now fills) an endpoint's places.
    pub async fn claim(&self, limit: usize) -> Result<(Vec<Claimed>, bool), sqlx::Error> {
        let saturated = self.saturated();
        let cap = self.settings.max_in_flight_per_endpoint;
        let lease = self.settings.timeout * 2 + Duration::from_secs(5);
        let lease_ms = lease.as_millis() as i64;
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH candidates AS ( \
                SELECT d.id, row_number() OVER ( \
                    PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.sequence) AS n \
                FROM deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
                  AND e.status = 'active' \
                  AND (d.locked_until IS NULL OR d.locked_until < now()) \
                  AND NOT (d.endpoint_id = ANY ($2)) \
                  AND NOT EXISTS ( \
                    SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id \
                      AND p.aggregate_id = d.aggregate_id AND p.sequence < d.sequence \
                      AND p.status = 'pending') \
             ), picked AS ( \
                SELECT d.id FROM deliveries d JOIN candidates c ON c.id = d.id \
                WHERE c.n <= $3 ORDER BY d.next_attempt_at LIMIT $1 \
                FOR UPDATE OF d SKIP LOCKED \
             ) \
             UPDATE deliveries d \
             SET locked_until = now() + make_interval(secs => $4::float8 / 1000), \
                 attempts = d.attempts + 1, last_attempt_at = now() \
             FROM picked, webhook_endpoints e \
             WHERE d.id = picked.id AND e.id = d.endpoint_id \
             RETURNING d.id, d.endpoint_id, d.attempts, d.payload, d.window_start, e.url, \
                 e.secret, e.previous_secret, e.previous_secret_until",
        )
        .bind(limit as i64)
        .bind(&saturated)
        .bind(cap as i64)
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await?;
        let fills_an_endpoint = {
            let in_flight = self.in_flight.lock().expect("in-flight counts");
            let mut taken: HashMap<Uuid, usize> = HashMap::new();
            claimed.iter().any(|c| {
                let n = taken.entry(c.endpoint_id).or_default();
                *n += 1;
                in_flight.get(&c.endpoint_id).copied().unwrap_or(0) + *n >= cap
            })
        };
        let more = claimed.len() >= limit || !saturated.is_empty() || fills_an_endpoint;
        Ok((claimed, more))
    }

    /// Makes one attempt of a claimed delivery and records how it went.
    pub async fn attempt(&self, claimed: &Claimed) -> Result<Outcome, sqlx::Error> {
        let mut secrets = vec![claimed.secret.clone()];
        if let (Some(previous), Some(until)) =
            (&claimed.previous_secret, claimed.previous_secret_until)
        {
            if until > Utc::now() {
                secrets.push(previous.clone());
            }
        }
        let endpoint = Endpoint {
            url: claimed.url.clone(),
            secrets,
        };
        let at = Utc::now();
        let started = Instant::now();
        let outcome = self
            .channel
            .deliver(&endpoint, claimed.id, &claimed.payload.0)
            .await;
        let took = started.elapsed();
        // Sent, not yet recorded: a crash here leaves the lease to run out, and the delivery
        // is sent again with the same id.
        service_kit::failpoint::hit("notifications.after_send");
        self.settle(claimed, &outcome, at, took).await?;
        Ok(outcome)
    }

    /// Records an attempt's outcome: delivered, due again after the backoff, or failed for
    /// good (and the endpoint paused).
    async fn settle(
        &self,
        claimed: &Claimed,
        outcome: &Outcome,
        at: DateTime<Utc>,
        took: Duration,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut wake_lane = false;
        let (status, error) = match outcome {
            Outcome::Delivered { status } => (Some(i32::from(*status)), None),
            Outcome::Failed { status, error } => (status.map(i32::from), Some(error.clone())),
        };
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, \
             duration_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(claimed.id)
        .bind(claimed.attempts)
        .bind(at)
        .bind(status)
        .bind(&error)
        .bind(i32::try_from(took.as_millis()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        let channel = self.channel.name();
        match outcome {
            Outcome::Delivered { .. } => {
                // Whether the endpoint's next delivery of the same aggregate waited for this
                // one: it is due now, and the lane is woken for it.
                let next_waits: Option<bool> = sqlx::query_scalar(
                    "UPDATE deliveries d SET status = 'delivered', delivered_at = now(), \
                     locked_until = NULL, last_status_code = $2, last_error = NULL \
                     WHERE id = $1 \
                     RETURNING EXISTS (SELECT 1 FROM deliveries n \
                         WHERE n.endpoint_id = d.endpoint_id AND n.aggregate_id = d.aggregate_id \
                           AND n.sequence > d.sequence AND n.status = 'pending')",
                )
                .bind(claimed.id)
                .bind(status)
                .fetch_optional(&mut *tx)
                .await?;
                wake_lane = next_waits == Some(true);
                metrics::counter!("notifications_deliveries_total", "channel" => channel, "outcome" => "delivered").increment(1);
            }
            Outcome::Failed { .. } => {
                let window = chrono::Duration::from_std(self.settings.retry_for)
                    .unwrap_or(chrono::Duration::MAX);
                let delay = backoff(
                    claimed.attempts,
                    self.settings.backoff_base,
                    self.settings.backoff_max,
                    rand::rng().random::<f64>(),
                );
                let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                let over = next > claimed.window_start + window;
                sqlx::query(
                    "UPDATE deliveries SET status = CASE WHEN $2 THEN 'failed' ELSE 'pending' END, \
                     next_attempt_at = $3, locked_until = NULL, last_status_code = $4, \
                     last_error = $5 WHERE id = $1",
                )
                .bind(claimed.id)
                .bind(over)
                .bind(next)
                .bind(status)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
                if over {
                    let reason = format!(
                        "delivery {} failed after {} attempts: {}",
                        claimed.id,
                        claimed.attempts,
                        error.as_deref().unwrap_or("")
                    );
                    let paused = sqlx::query(
                        "UPDATE webhook_endpoints SET status = 'paused', paused_reason = $2, \
                         updated_at = now() WHERE id = $1 AND status = 'active'",
                    )
                    .bind(claimed.endpoint_id)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                    if paused.rows_affected() > 0 {
                        metrics::counter!("webhook_endpoints_paused_total").increment(1);
                        tracing::warn!(endpoint = %claimed.endpoint_id, %reason, "webhook endpoint paused");
                    }
                    metrics::counter!("notifications_deliveries_total", "channel" => channel, "outcome" => "failed").increment(1);
                } else {
                    metrics::counter!("notifications_deliveries_total", "channel" => channel, "outcome" => "retried").increment(1);
                }
            }
        }
        tx.commit().await?;
        if wake_lane {
            self.recorded.notify_one();
        }
        Ok(())
    }

    /// Sends until `shutdown`: attempts in flight are finished and recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let lane = Lane {
            what: "webhook deliveries",
            places: this.places.clone(),
            recorded: this.recorded.clone(),
            poll_interval: this.settings.poll_interval,
        };
        let claimer = this.clone();
        lane.drive(
            shutdown,
            move |free| {
                let this = claimer.clone();
                async move { this.claim(free).await }
            },
            |delivery: Claimed| {
                // Counted before the next claim, which passes over saturated endpoints.
                *this
                    .in_flight
                    .lock()
                    .expect("in-flight counts")
                    .entry(delivery.endpoint_id)
                    .or_default() += 1;
                let sender = this.clone();
                async move {
                    if let Err(e) = sender.attempt(&delivery).await {
                        tracing::warn!(delivery = %delivery.id, error = %service_kit::problem::ErrorChain(&e), "recording an attempt failed; the lease runs out and it is tried again");
                    }
                    let mut in_flight = sender.in_flight.lock().expect("in-flight counts");
                    if let Some(n) = in_flight.get_mut(&delivery.endpoint_id) {
                        *n -= 1;
                        if *n == 0 {
                            in_flight.remove(&delivery.endpoint_id);
                        }
                    }
                }
            },
        )
        .await;
    }
}

/// One channel's sending: a bulkhead of places, woken when something is recorded for it and
/// polled for retries that fall due (and leases that ran out).
pub struct Lane {
    /// What it sends, for its logs.
    pub what: &'static str,
    pub places: Arc<Semaphore>,
    pub recorded: Arc<Notify>,
    pub poll_interval: Duration,
}

impl Lane {
    /// Claims as many due items as there are free places, runs `attempt` on each while it
    /// holds a place, and waits for new work, the next poll, or (when `claim` said more may
    /// be due) a free place; until `shutdown`, when the attempts in flight are finished.
    /// `attempt` is called at once (what it does before its future runs is done before the
    /// next claim). A claim costs a query: none is made when nothing can have fallen due.
    pub async fn drive<T, C, CF, A, AF>(self, shutdown: CancellationToken, claim: C, attempt: A)
    where
        C: Fn(usize) -> CF,
        CF: std::future::Future<Output = Result<(Vec<T>, bool), sqlx::Error>>,
        A: Fn(T) -> AF,
        AF: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut attempts = JoinSet::new();
        let (mut claim_now, mut more) = (true, false);
        // The poll is due a poll interval after the last claim, however often the lane wakes
        // meanwhile for attempts that finish without claiming.
        let mut next_poll = tokio::time::Instant::now();
        loop {
            let free = self.places.available_permits();
            if claim_now {
                // With no free place there is nothing to claim now; the next finished attempt
                // claims (the last claim filled the places, so it said more may be due).
                next_poll = tokio::time::Instant::now() + self.poll_interval;
            }
            if claim_now && free > 0 {
                match claim(free).await {
                    Ok((claimed, left)) => {
                        more = left;
                        for item in claimed {
                            let permit = self
                                .places
                                .clone()
                                .acquire_owned()
                                .await
                                .expect("the bulkhead is never closed");
                            let attempt = attempt(item);
                            attempts.spawn(async move {
                                attempt.await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        more = true;
                        tracing::warn!(what = self.what, error = %service_kit::problem::ErrorChain(&e), "claiming failed")
                    }
                }
            }
            // Reap what finished: a place it freed is used at once if more may be due.
            let mut reaped = false;
            while attempts.try_join_next().is_some() {
                reaped = true;
            }
            if reaped && more {
                claim_now = true;
                continue;
            }
            claim_now = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.recorded.notified() => true,
                Some(_) = attempts.join_next(), if !attempts.is_empty() => more,
                () = tokio::time::sleep_until(next_poll) => true,
            };
        }
        while attempts.join_next().await.is_some() {}
        tracing::info!(what = self.what, "sending stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, base, max, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(5, base, max, 1.0), max);
        assert_eq!(backoff(60, base, max, 1.0), max);
        assert_eq!(backoff(2, base, max, 0.0), Duration::from_millis(100));
    }

    /// A lane with a 1 s poll, driven in a task: its first claim returns `first` (each item
    /// an attempt lasting that many ms) and `more`, every later claim nothing.
    struct Driven {
        claims: Arc<std::sync::atomic::AtomicUsize>,
        recorded: Arc<Notify>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Driven {
        fn start(places: usize, first: Vec<u64>, more: bool) -> Self {
            let claims = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let recorded = Arc::new(Notify::new());
            let lane = Lane {
                what: "test",
                places: Arc::new(Semaphore::new(places)),
                recorded: recorded.clone(),
                poll_interval: Duration::from_secs(1),
            };
            let shutdown = CancellationToken::new();
            let counted = claims.clone();
            let task = tokio::spawn(lane.drive(
                shutdown.clone(),
                move |_free| {
                    let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let claimed = if n == 0 {
                        (first.clone(), more)
                    } else {
                        (Vec::new(), false)
                    };
                    async move { Ok(claimed) }
                },
                |ms: u64| tokio::time::sleep(Duration::from_millis(ms)),
            ));
            Self {
                claims,
                recorded,
                shutdown,
                task,
            }
        }

        fn claims(&self) -> usize {
            self.claims.load(std::sync::atomic::Ordering::SeqCst)
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.expect("the lane stops");
        }
    }

    /// A finished attempt frees a place; it is claimed for only when the last claim said more
    /// may be due. New work and the poll always claim.
    #[tokio::test(start_paused = true)]
    async fn a_finished_attempt_claims_again_only_when_more_may_be_due() {
        for (more, after_finish) in [(false, 1), (true, 2)] {
            let lane = Driven::start(4, vec![10], more);
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(lane.claims(), after_finish, "more: {more}");
            lane.recorded.notify_one();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(lane.claims(), after_finish + 1, "woken by new work");
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(lane.claims(), after_finish + 2, "the poll");
            lane.stop().await;
        }
    }

    /// Attempts finishing one after another wake the lane without claiming; they do not put
    /// off the poll, which finds retries and run-out leases.
    #[tokio::test(start_paused = true)]
    async fn finishing_attempts_do_not_put_off_the_poll() {
        // Eight attempts ending 100 ms apart; nothing more is due.
        let lane = Driven::start(16, (1..=8).map(|n| 100 * n).collect(), false);
        tokio::time::sleep(Duration::from_millis(950)).await;
        assert_eq!(lane.claims(), 1, "finished attempts claim nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lane.claims(), 2, "the poll, 1 s after the claim");
        lane.stop().await;
    }

    #[test]
    fn a_claimed_delivery_never_shows_its_secrets_in_a_log() {
        let claimed = Claimed {
            id: Uuid::nil(),
            endpoint_id: Uuid::nil(),
            attempts: 1,
            payload: sqlx::types::Json(Value::Null),
            window_start: Utc::now(),
            url: "https://partner.example/hook".into(),
            secret: "whsec_current".into(),
            previous_secret: Some("whsec_previous".into()),
            previous_secret_until: None,
        };
        let shown = format!("{claimed:?}");
        assert!(shown.contains("partner.example"), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
    }
}
