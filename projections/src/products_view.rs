//! The product read model: catalog and stock per SKU, from the `INVENTORY` stream.

use domain::Money;
use messaging::{BoundedContext, Envelope};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::projection::{decode, ApplyError, Projection};

/// Keeps `products_view` up to date.
#[derive(Debug, Default, Clone)]
pub struct ProductsView;

#[derive(Deserialize)]
struct Created {
    sku: String,
    name: String,
    unit_price: Money,
    initial_stock: i64,
}

#[derive(Deserialize)]
struct Restocked {
    sku: String,
    on_hand: i64,
}

#[derive(Deserialize)]
struct Repriced {
    sku: String,
    new_price: Money,
}

#[derive(Deserialize)]
struct Moved {
    sku: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct Committed {
    sku: String,
    quantity: i64,
    on_hand: i64,
}

impl Projection for ProductsView {
    fn name(&self) -> &'static str {
        "products_view"
    }

    fn context(&self) -> BoundedContext {
        BoundedContext::Inventory
    }

    fn tables(&self) -> &'static [&'static str] {
        &["products_view"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &Envelope) -> Result<(), ApplyError> {
        let (version, at) = (event.sequence as i64, event.time);
        let query = match (event.name(), event.version()) {
            ("ProductCreated", 1) => {
                let e: Created = decode(event)?;
                sqlx::query(
                    "INSERT INTO products_view (sku, name, unit_price, currency, on_hand, reserved, version, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
                )
                .bind(e.sku)
                .bind(e.name)
                .bind(e.unit_price.amount_minor)
                .bind(e.unit_price.currency.as_str().to_owned())
                .bind(e.initial_stock)
            }
            ("ProductRestocked", 1) => {
                let e: Restocked = decode(event)?;
                sqlx::query("UPDATE products_view SET on_hand = $2, version = $3, updated_at = $4 WHERE sku = $1")
                    .bind(e.sku)
                    .bind(e.on_hand)
            }
            ("PriceChanged", 1) => {
                let e: Repriced = decode(event)?;
                sqlx::query("UPDATE products_view SET unit_price = $2, version = $3, updated_at = $4 WHERE sku = $1")
                    .bind(e.sku)
                    .bind(e.new_price.amount_minor)
            }
            ("StockReserved", 1) => {
                let e: Moved = decode(event)?;
                sqlx::query("UPDATE products_view SET reserved = reserved + $2, version = $3, updated_at = $4 WHERE sku = $1")
                    .bind(e.sku)
                    .bind(e.quantity)
            }
            ("ReservationReleased", 1) => {
                let e: Moved = decode(event)?;
                sqlx::query("UPDATE products_view SET reserved = reserved - $2, version = $3, updated_at = $4 WHERE sku = $1")
                    .bind(e.sku)
                    .bind(e.quantity)
            }
            ("ReservationCommitted", 1) => {
                let e: Committed = decode(event)?;
                sqlx::query(
                    "UPDATE products_view SET reserved = reserved - $2, on_hand = $5, version = $3, updated_at = $4 WHERE sku = $1",
                )
                .bind(e.sku)
                .bind(e.quantity)
                .bind(version)
                .bind(at)
                .bind(e.on_hand)
                .execute(conn)
                .await?;
                return Ok(());
            }
            (name, v) => {
                return Err(ApplyError::Poison(format!(
                    "unknown event type {name} v{v}"
                )))
            }
        };
        query.bind(version).bind(at).execute(conn).await?;
        Ok(())
    }
}
