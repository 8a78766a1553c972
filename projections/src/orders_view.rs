//! The order read models: one row per order (`orders_view`) and orders per customer
//! (`customer_order_counts`).

use domain::order::OrderPlaced;
use messaging::{BoundedContext, Envelope};
use sqlx::PgConnection;

use crate::projection::{ApplyError, Projection};

/// Keeps `orders_view` and `customer_order_counts` up to date from the `ORDERS` stream.
#[derive(Debug, Default, Clone)]
pub struct OrdersView;

fn decode<T: serde::de::DeserializeOwned>(event: &Envelope) -> Result<T, ApplyError> {
    serde_json::from_value(event.data.clone()).map_err(|e| {
        ApplyError::Poison(format!(
            "{} v{} does not decode: {e}",
            event.name(),
            event.version()
        ))
    })
}

impl Projection for OrdersView {
    fn name(&self) -> &'static str {
        "orders_view"
    }

    fn context(&self) -> BoundedContext {
        BoundedContext::Orders
    }

    async fn apply(&self, conn: &mut PgConnection, event: &Envelope) -> Result<(), ApplyError> {
        match (event.name(), event.version()) {
            ("OrderPlaced", 1) => {
                let placed: OrderPlaced = decode(event)?;
                sqlx::query(
                    "INSERT INTO orders_view \
                       (order_id, customer_id, status, lines, version, placed_at, updated_at) \
                     VALUES ($1, $2, 'placed', $3, $4, $5, $6)",
                )
                .bind(placed.order_id)
                .bind(placed.customer_id)
                .bind(sqlx::types::Json(&placed.lines))
                .bind(event.sequence as i64)
                .bind(placed.placed_at)
                .bind(event.time)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO customer_order_counts (customer_id, orders) VALUES ($1, 1) \
                     ON CONFLICT (customer_id) \
                     DO UPDATE SET orders = customer_order_counts.orders + 1",
                )
                .bind(placed.customer_id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
            (name, version) => Err(ApplyError::Poison(format!(
                "unknown event type {name} v{version}"
            ))),
        }
    }
}
