//! Order emails: what to send is recorded as an order's events are read (in the consumer's
//! transaction), then the mailer claims each due email, opens the customer's sealed address
//! (orders opens it, over NATS, for this service alone), and sends it through the email
//! channel, retrying with backoff.
//!
//! Invariant: an address is only ever held sealed here; it is opened for one attempt and
//! never stored, logged or shown. An erased customer's address no longer opens, so they get
//! no further email.
//!
//! Invariant: a customer who turned emails off gets none: checked when an email is recorded
//! and again before it is sent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::keys::{OpenAnswer, OpenRequest};
use domain::sealing::SealingError;
use messaging::Envelope;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::channel::{Channel, Outcome};
use crate::email::{Content, Email, Line};
use crate::settings::MailSettings;

/// Records what an order's event means for its emails (in the consumer's transaction); how
/// many emails it recorded.
pub async fn record(tx: &mut PgConnection, event: &Envelope) -> Result<usize, sqlx::Error> {
    let data = &event.data;
    let Some(order_id) = data["order_id"]
        .as_str()
        .and_then(|s| s.parse::<Uuid>().ok())
    else {
        return Ok(0);
    };
    let kind = match event.name() {
        "OrderPlaced" => {
            // Orders placed without an address (before addresses, or by an operator) get none.
            let (Some(customer), Some(sealed)) = (
                data["customer_id"]
                    .as_str()
                    .and_then(|s| s.parse::<Uuid>().ok()),
                data["email"].as_str(),
            ) else {
                return Ok(0);
            };
            sqlx::query(
                "INSERT INTO order_mail (order_id, customer_id, email_sealed, lines, placed_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(customer)
            .bind(sealed)
            .bind(&data["lines"])
            .bind(
                data["placed_at"]
                    .as_str()
                    .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                    .unwrap_or(event.time),
            )
            .execute(&mut *tx)
            .await?;
            return Ok(0);
        }
        "OrderPriced" => {
            sqlx::query("UPDATE order_mail SET priced = $2, total = $3 WHERE order_id = $1")
                .bind(order_id)
                .bind(&data["lines"])
                .bind(&data["total"])
                .execute(&mut *tx)
                .await?;
            return Ok(0);
        }
        "OrderConfirmed" => "confirmed",
        "OrderRejected" => "rejected",
        "OrderCancelled" => "cancelled",
        _ => return Ok(0),
    };
    // The order's last event: its facts are taken (and dropped) for its one email.
    let facts: Option<Facts> = sqlx::query_as(
        "DELETE FROM order_mail WHERE order_id = $1 \
         RETURNING customer_id, email_sealed, lines, priced, total, placed_at",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(facts) = facts else {
        return Ok(0);
    };
    let (customer, sealed) = (facts.customer_id, facts.email_sealed);
    let content = Content {
        order_id,
        kind: kind.to_owned(),
        placed_at: facts.placed_at,
        lines: lines_of(&facts.lines, facts.priced.as_ref()),
        total: facts.total.and_then(|t| serde_json::from_value(t).ok()),
        reason: (kind == "rejected").then(|| reason(data)),
    };
    let inserted = sqlx::query(
        "INSERT INTO emails (id, event_id, order_id, customer_id, kind, email_sealed, content, \
         event_time) \
         SELECT gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7 \
         WHERE coalesce((SELECT email FROM email_preferences WHERE customer_id = $3), true) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.id.to_string())
    .bind(order_id)
    .bind(customer)
    .bind(kind)
    .bind(sealed)
    .bind(sqlx::types::Json(&content))
    .bind(event.time)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() as usize)
}

/// An order's facts for its emails (`order_mail`).
#[derive(sqlx::FromRow)]
struct Facts {
    customer_id: Uuid,
    email_sealed: String,
    lines: Value,
    priced: Option<Value>,
    total: Option<Value>,
    placed_at: DateTime<Utc>,
}

/// The lines as placed, with their prices when the order was priced.
fn lines_of(placed: &Value, priced: Option<&Value>) -> Vec<Line> {
    let priced: Vec<Value> = priced
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    placed
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let sku = line["sku"].as_str().unwrap_or_default().to_owned();
            let price = priced.iter().find(|p| p["sku"] == line["sku"]);
            let money =
                |field: &str| price.and_then(|p| serde_json::from_value(p[field].clone()).ok());
            Line {
                quantity: line["quantity"].as_u64().unwrap_or_default() as u32,
                unit_price: money("unit_price"),
                line_total: money("line_total"),
                sku,
            }
        })
        .collect()
}

/// Why an order was rejected, in words for its customer.
fn reason(data: &Value) -> String {
    let skus: Vec<&str> = data["skus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match data["reason"].as_str() {
        Some("out_of_stock") if !skus.is_empty() => format!(
            "Not enough stock of {}, so we could not take your order. Nothing was charged.",
            skus.join(", ")
        ),
        Some("out_of_stock") => {
            "Some items are out of stock, so we could not take your order. Nothing was charged."
                .into()
        }
        Some("payment_declined") => {
            "Your payment was declined, so we could not take your order. Nothing was charged."
                .into()
        }
        Some("timeout") => {
            "We could not finish your order in time, so we did not take it. Nothing was charged."
                .into()
        }
        _ => "Something went wrong on our side while we took your order, so we did not take it. \
              Nothing was charged."
            .into(),
    }
}

/// An email claimed for one attempt.
#[derive(Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub attempts: i32,
    pub email_sealed: String,
    pub content: sqlx::types::Json<Value>,
    pub window_start: DateTime<Utc>,
    /// The customer's choice as it stood when the email was claimed.
    pub wanted: bool,
}

/// Asks orders to open a sealed address (NATS request/reply on `keys.orders.email`).
pub struct Opener {
    pub nats: async_nats::Client,
    pub subject: String,
    pub timeout: Duration,
}

impl Opener {
    /// The address, or why not: `Erased` and `Invalid` never open; `Unavailable` may later.
    async fn open(&self, order_id: Uuid, sealed: &str) -> Result<String, SealingError> {
        let unavailable = SealingError::Unavailable;
        let request = OpenRequest {
            order_id,
            token: sealed.to_owned(),
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let asked = self.nats.request(self.subject.clone(), body.into());
        let reply = tokio::time::timeout(self.timeout, asked)
            .await
            .map_err(|_| unavailable("opening the address timed out".into()))?
            .map_err(|e| unavailable(format!("the address could not be opened: {e}")))?;
        serde_json::from_slice::<OpenAnswer>(&reply.payload)
            .map_err(|e| unavailable(format!("orders answered something else: {e}")))?
            .opened()
    }
}

/// Sends due emails through the email channel.
pub struct Mailer {
    pool: PgPool,
    channel: Email,
    opener: Opener,
    settings: MailSettings,
    places: Arc<Semaphore>,
    recorded: Arc<Notify>,
}

/// How one email's attempt ended, for its row.
enum Settled {
    Sent,
    Retry(String),
    Failed(String),
    Skipped(&'static str),
}

impl Mailer {
    pub fn new(
        pool: PgPool,
        channel: Email,
        opener: Opener,
        settings: MailSettings,
        recorded: Arc<Notify>,
    ) -> Self {
        Self {
            places: Arc::new(Semaphore::new(settings.max_in_flight)),
            pool,
            channel,
            opener,
            settings,
            recorded,
        }
    }

    /// Claims up to `limit` due emails for a lease of twice the attempt's timeout and 5 s.
    /// Also whether more may be due (the claim was full).
    pub async fn claim(&self, limit: usize) -> Result<(Vec<Claimed>, bool), sqlx::Error> {
        let lease = self.settings.timeout * 2 + Duration::from_secs(5);
        let claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE emails e SET locked_until = now() + make_interval(secs => $2::float8 / 1000), \
                 attempts = e.attempts + 1 \
             FROM (SELECT id FROM emails WHERE status = 'pending' AND next_attempt_at <= now() \
                   AND (locked_until IS NULL OR locked_until < now()) \
                   ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
             WHERE e.id = due.id \
             RETURNING e.id, e.order_id, e.customer_id, e.attempts, e.email_sealed, e.content, \
                 e.window_start, coalesce((SELECT p.email FROM email_preferences p \
                     WHERE p.customer_id = e.customer_id), true) AS wanted",
        )
        .bind(limit as i64)
        .bind(lease.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        let more = claimed.len() >= limit;
        Ok((claimed, more))
    }

    /// Makes one attempt: the customer's choice checked again (as the claim read it), the
    /// address opened, the email sent, and the outcome recorded.
    pub async fn attempt(&self, claimed: &Claimed) -> Result<(), sqlx::Error> {
        let settled = if !claimed.wanted {
            Settled::Skipped("the customer turned order emails off")
        } else {
            match self
                .opener
                .open(claimed.order_id, &claimed.email_sealed)
                .await
            {
                Err(SealingError::Erased) => Settled::Skipped("the customer was erased"),
                Err(SealingError::Invalid) => {
                    Settled::Skipped("the address does not open for this order")
                }
                Err(SealingError::Unavailable(why)) => Settled::Retry(why),
                Ok(address) => {
                    match self
                        .channel
                        .deliver(&address, claimed.id, &claimed.content.0)
                        .await
                    {
                        Outcome::Delivered { .. } => Settled::Sent,
                        // A permanent SMTP refusal (5xx) is not tried again.
                        Outcome::Failed {
                            status: Some(code),
                            error,
                        } if code >= 500 => Settled::Failed(error),
                        Outcome::Failed { error, .. } => Settled::Retry(error),
                    }
                }
            }
        };
        // Sent, not yet recorded: a crash here leaves the lease to run out, and the email is
        // sent again with the same message id.
        service_kit::failpoint::hit("notifications.after_email");
        self.settle(claimed, settled).await
    }

    async fn settle(&self, claimed: &Claimed, settled: Settled) -> Result<(), sqlx::Error> {
        let (status, error, next) = match settled {
            Settled::Sent => ("sent", None, Utc::now()),
            Settled::Skipped(why) => ("skipped", Some(why.to_owned()), Utc::now()),
            Settled::Failed(why) => ("failed", Some(why), Utc::now()),
            Settled::Retry(why) => {
                let delay = crate::send::backoff(
                    claimed.attempts,
                    self.settings.backoff_base,
                    Duration::from_secs(3600),
                    rand::random::<f64>(),
                );
                let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                let window = chrono::Duration::from_std(self.settings.retry_for)
                    .unwrap_or(chrono::Duration::MAX);
                if next > claimed.window_start + window {
                    ("failed", Some(why), next)
                } else {
                    ("pending", Some(why), next)
                }
            }
        };
        if let Some(why) = &error {
            tracing::info!(email = %claimed.id, order = %claimed.order_id, attempt = claimed.attempts, %status, %why, "order email not sent");
        }
        metrics::counter!("notifications_deliveries_total", "channel" => "email", "outcome" => match status {
            "sent" => "delivered",
            "pending" => "retried",
            other => other,
        })
        .increment(1);
        sqlx::query(
            "UPDATE emails SET status = $2, last_error = $3, next_attempt_at = $4, \
             locked_until = NULL, sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1",
        )
        .bind(claimed.id)
        .bind(status)
        .bind(error)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sends until `shutdown`; the attempts in flight finish and are recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let lane = crate::send::Lane {
            what: "emails",
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
            |email: Claimed| {
                let mailer = this.clone();
                async move {
                    if let Err(e) = mailer.attempt(&email).await {
                        tracing::warn!(email = %email.id, error = %service_kit::problem::ErrorChain(&e), "recording an email's attempt failed; the lease runs out and it is tried again");
                    }
                }
            },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_is_told_in_plain_words() {
        let data = serde_json::json!({"reason": "out_of_stock", "skus": ["MUG-1", "CUP-2"]});
        assert_eq!(
            reason(&data),
            "Not enough stock of MUG-1, CUP-2, so we could not take your order. Nothing was charged."
        );
        let declined = serde_json::json!({"reason": "payment_declined"});
        assert!(reason(&declined).starts_with("Your payment was declined"));
    }

    #[test]
    fn lines_carry_their_prices_once_priced() {
        let placed = serde_json::json!([{"sku": "A-1", "quantity": 2}]);
        let priced = serde_json::json!([{"sku": "A-1", "quantity": 2,
            "unit_price": {"amount_minor": 150, "currency": "EUR"},
            "line_total": {"amount_minor": 300, "currency": "EUR"}}]);
        let without = lines_of(&placed, None);
        assert_eq!((without[0].quantity, without[0].unit_price), (2, None));
        let with = lines_of(&placed, Some(&priced));
        assert_eq!(with[0].line_total.map(|m| m.amount_minor), Some(300));
    }
}
