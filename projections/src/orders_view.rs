//! The order read models: one row per order (`orders_view`), orders per customer
//! (`customer_order_counts`), confirmed sales per day and SKU (`sales_daily`) and how orders
//! ended per day (`order_outcomes_daily`).

use chrono::{DateTime, NaiveDate, Utc};
use domain::order::OrderEvent;
use messaging::{BoundedContext, Envelope};
use read_contract::OrderStatus;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projection::{decode, Folds, Projection};

/// Keeps the order read models up to date from the `ORDERS` stream.
#[derive(Debug, Default, Clone)]
pub struct OrdersView;

/// What one order event does.
#[derive(Debug)]
pub enum Effect {
    Placed {
        customer_id: Uuid,
        lines: Value,
        placed_at: DateTime<Utc>,
    },
    Priced {
        lines: Value,
        total_minor: i64,
        currency: String,
    },
    Confirmed,
    Cancelled,
    Rejected {
        reason: String,
        detail: String,
    },
}

#[derive(Debug)]
pub struct OrderChange {
    order_id: Uuid,
    effect: Effect,
    version: i64,
    at: DateTime<Utc>,
}

/// One order's row as this batch leaves it.
#[derive(Default)]
struct Fold {
    order_id: Uuid,
    created: bool,
    customer_id: Option<Uuid>,
    status: Option<OrderStatus>,
    lines: Option<Value>,
    placed_at: Option<DateTime<Utc>>,
    total_minor: Option<i64>,
    currency: Option<String>,
    /// The last status change set (or cleared) the rejection.
    rejection_set: bool,
    rejection_reason: Option<String>,
    rejection_detail: Option<String>,
    version: i64,
    at: Option<DateTime<Utc>>,
}

impl Projection for OrdersView {
    type Change = OrderChange;

    const NAME: &'static str = read_contract::ORDERS_VIEW;
    const CONTEXT: BoundedContext = BoundedContext::Orders;
    const TABLES: &'static [&'static str] = &[
        "orders_view",
        "customer_order_counts",
        "sales_daily",
        "order_outcomes_daily",
    ];

    fn decode(&self, event: &Envelope) -> Result<OrderChange, String> {
        // The contract's decode reads every version (v1 OrderPlaced is upcast there).
        let (order_id, effect) = match decode::<OrderEvent>(event)? {
            OrderEvent::OrderPlaced(placed) => {
                let lines = placed
                    .lines
                    .iter()
                    .map(|l| json!({"sku": l.sku, "quantity": l.quantity}))
                    .collect();
                let effect = Effect::Placed {
                    customer_id: placed.customer_id,
                    lines: Value::Array(lines),
                    placed_at: placed.placed_at,
                };
                (placed.order_id, effect)
            }
            OrderEvent::OrderPriced {
                order_id,
                lines,
                total,
            } => {
                let effect = Effect::Priced {
                    lines: serde_json::to_value(&lines).map_err(|e| e.to_string())?,
                    total_minor: total.amount_minor,
                    currency: total.currency.as_str().to_owned(),
                };
                (order_id, effect)
            }
            OrderEvent::OrderConfirmed { order_id, .. } => (order_id, Effect::Confirmed),
            OrderEvent::OrderCancelled { order_id, .. } => (order_id, Effect::Cancelled),
            OrderEvent::OrderRejected {
                order_id,
                reason,
                detail,
                ..
            } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|r| r.as_str().map(str::to_owned))
                    .unwrap_or_default();
                (order_id, Effect::Rejected { reason, detail })
            }
        };
        Ok(OrderChange {
            order_id,
            effect,
            version: event.sequence as i64,
            at: event.time,
        })
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        changes: &[OrderChange],
    ) -> Result<(), sqlx::Error> {
        let folded = Folded::of(changes);
        upsert_orders(conn, &folded.rows).await?;
        count_customers(conn, &folded.customers).await?;
        add_sales(conn, &folded.sales).await?;
        count_outcomes(conn, &folded.outcomes).await
    }
}

/// A batch of changes folded into one row per order, per customer and per day's outcome, and
/// the confirmed orders whose lines count as sales.
#[derive(Default)]
struct Folded {
    rows: Folds<Uuid, Fold>,
    customers: Folds<Uuid, (Uuid, i64)>,
    outcomes: Folds<(NaiveDate, String), (NaiveDate, String, i64)>,
    /// Confirmed orders and when: their priced lines count as sales of that day (UTC).
    sales: Vec<(Uuid, DateTime<Utc>)>,
}

impl Folded {
    fn of(changes: &[OrderChange]) -> Self {
        let Folded {
            mut rows,
            mut customers,
            mut outcomes,
            mut sales,
        } = Folded::default();
        for c in changes {
            let f = rows.entry(c.order_id, || Fold {
                order_id: c.order_id,
                ..Fold::default()
            });
            f.version = c.version;
            f.at = Some(c.at);
            let mut outcome = |name: &str| {
                let day = c.at.date_naive();
                outcomes
                    .entry((day, name.to_owned()), || (day, name.to_owned(), 0))
                    .2 += 1;
            };
            match &c.effect {
                Effect::Placed {
                    customer_id,
                    lines,
                    placed_at,
                } => {
                    f.created = true;
                    f.customer_id = Some(*customer_id);
                    f.status = Some(OrderStatus::Placed);
                    f.lines = Some(lines.clone());
                    f.placed_at = Some(*placed_at);
                    customers.entry(*customer_id, || (*customer_id, 0)).1 += 1;
                }
                Effect::Priced {
                    lines,
                    total_minor,
                    currency,
                } => {
                    f.status = Some(OrderStatus::Priced);
                    f.lines = Some(lines.clone());
                    f.total_minor = Some(*total_minor);
                    f.currency = Some(currency.clone());
                }
                Effect::Confirmed | Effect::Cancelled => {
                    let status = if matches!(c.effect, Effect::Confirmed) {
                        OrderStatus::Confirmed
                    } else {
                        OrderStatus::Cancelled
                    };
                    f.status = Some(status);
                    f.rejection_set = true;
                    f.rejection_reason = None;
                    f.rejection_detail = None;
                    if status == OrderStatus::Confirmed {
                        sales.push((c.order_id, c.at));
                    }
                    // A confirmed or cancelled order's outcome is its status word.
                    outcome(status.as_str());
                }
                Effect::Rejected { reason, detail } => {
                    f.status = Some(OrderStatus::Rejected);
                    f.rejection_set = true;
                    f.rejection_reason = Some(reason.clone());
                    f.rejection_detail = Some(detail.clone());
                    outcome(reason);
                }
            }
        }
        Folded {
            rows,
            customers,
            outcomes,
            sales,
        }
    }
}

/// One row per order: the fold over the stored row; orders neither placed now nor known are
/// skipped, as an UPDATE of a missing row would be.
async fn upsert_orders(
    conn: &mut PgConnection,
    rows: &Folds<Uuid, Fold>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders_view (order_id, customer_id, status, lines, version, placed_at, \
           updated_at, total_minor, currency, rejection_reason, rejection_detail) \
         SELECT u.order_id, coalesce(u.customer_id, o.customer_id), coalesce(u.status, o.status), \
           coalesce(u.lines, o.lines), u.version, coalesce(u.placed_at, o.placed_at), u.at, \
           coalesce(u.total_minor, o.total_minor), coalesce(u.currency, o.currency), \
           CASE WHEN u.rejection_set THEN u.reason ELSE o.rejection_reason END, \
           CASE WHEN u.rejection_set THEN u.detail ELSE o.rejection_detail END \
         FROM unnest($1::uuid[], $2::bool[], $3::uuid[], $4::text[], $5::jsonb[], \
                     $6::timestamptz[], $7::bigint[], $8::text[], $9::bool[], $10::text[], \
                     $11::text[], $12::bigint[], $13::timestamptz[]) \
              AS u(order_id, created, customer_id, status, lines, placed_at, total_minor, \
                   currency, rejection_set, reason, detail, version, at) \
         LEFT JOIN orders_view o USING (order_id) \
         WHERE u.created OR o.order_id IS NOT NULL \
         ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
           status = EXCLUDED.status, lines = EXCLUDED.lines, version = EXCLUDED.version, \
           placed_at = EXCLUDED.placed_at, updated_at = EXCLUDED.updated_at, \
           total_minor = EXCLUDED.total_minor, currency = EXCLUDED.currency, \
           rejection_reason = EXCLUDED.rejection_reason, \
           rejection_detail = EXCLUDED.rejection_detail",
    )
    .bind(rows.column(|f| f.order_id))
    .bind(rows.column(|f| f.created))
    .bind(rows.column(|f| f.customer_id))
    .bind(rows.column(|f| f.status.map(OrderStatus::as_str)))
    .bind(rows.column(|f| f.lines.clone()))
    .bind(rows.column(|f| f.placed_at))
    .bind(rows.column(|f| f.total_minor))
    .bind(rows.column(|f| f.currency.clone()))
    .bind(rows.column(|f| f.rejection_set))
    .bind(rows.column(|f| f.rejection_reason.clone()))
    .bind(rows.column(|f| f.rejection_detail.clone()))
    .bind(rows.column(|f| f.version))
    .bind(rows.column(|f| f.at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn count_customers(
    conn: &mut PgConnection,
    customers: &Folds<Uuid, (Uuid, i64)>,
) -> Result<(), sqlx::Error> {
    if !customers.rows().is_empty() {
        sqlx::query(
            "INSERT INTO customer_order_counts (customer_id, orders) \
             SELECT * FROM unnest($1::uuid[], $2::bigint[]) \
             ON CONFLICT (customer_id) \
             DO UPDATE SET orders = customer_order_counts.orders + EXCLUDED.orders",
        )
        .bind(customers.column(|c| c.0))
        .bind(customers.column(|c| c.1))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn add_sales(
    conn: &mut PgConnection,
    sales: &[(Uuid, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if !sales.is_empty() {
        sqlx::query(
            "INSERT INTO sales_daily (day, sku, currency, units, revenue_minor, orders) \
             SELECT (u.at AT TIME ZONE 'UTC')::date, line->>'sku', line->'line_total'->>'currency', \
                    sum((line->>'quantity')::bigint), \
                    sum((line->'line_total'->>'amount_minor')::bigint), \
                    count(DISTINCT u.order_id) \
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(order_id, at) \
             JOIN orders_view o USING (order_id), jsonb_array_elements(o.lines) line \
             WHERE line ? 'line_total' \
             GROUP BY 1, 2, 3 \
             ON CONFLICT (day, sku, currency) DO UPDATE SET \
               units = sales_daily.units + EXCLUDED.units, \
               revenue_minor = sales_daily.revenue_minor + EXCLUDED.revenue_minor, \
               orders = sales_daily.orders + EXCLUDED.orders",
        )
        .bind(sales.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(sales.iter().map(|s| s.1).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn count_outcomes(
    conn: &mut PgConnection,
    outcomes: &Folds<(NaiveDate, String), (NaiveDate, String, i64)>,
) -> Result<(), sqlx::Error> {
    if !outcomes.rows().is_empty() {
        sqlx::query(
            "INSERT INTO order_outcomes_daily (day, outcome, orders) \
             SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[]) \
             ON CONFLICT (day, outcome) \
             DO UPDATE SET orders = order_outcomes_daily.orders + EXCLUDED.orders",
        )
        .bind(outcomes.column(|o| o.0))
        .bind(outcomes.column(|o| o.1.clone()))
        .bind(outcomes.column(|o| o.2))
        .execute(conn)
        .await?;
    }
    Ok(())
}
