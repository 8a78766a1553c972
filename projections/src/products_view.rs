//! The product read model: catalog and stock per SKU, from the `INVENTORY` stream.

use chrono::{DateTime, Utc};
use domain::Money;
use messaging::{BoundedContext, Envelope};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::projection::{decode, unknown, Folds, Projection};

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

/// What one inventory event does to its product's row.
#[derive(Debug)]
pub enum Effect {
    Created {
        name: String,
        unit_price: i64,
        currency: String,
        on_hand: i64,
    },
    /// Sets `on_hand`.
    OnHand(i64),
    Price(i64),
    /// Adds to `reserved` (negative to release).
    Reserved(i64),
    /// A reservation left stock: `reserved` drops and `on_hand` is now this.
    Committed {
        quantity: i64,
        on_hand: i64,
    },
}

#[derive(Debug)]
pub struct ProductChange {
    sku: String,
    effect: Effect,
    version: i64,
    at: DateTime<Utc>,
}

/// One product's row as this batch leaves it.
#[derive(Default)]
struct Fold {
    sku: String,
    created: bool,
    name: Option<String>,
    unit_price: Option<i64>,
    currency: Option<String>,
    on_hand: Option<i64>,
    /// Added to the row's `reserved` (to 0 for a product created in this batch).
    reserved: i64,
    version: i64,
    at: Option<DateTime<Utc>>,
}

impl Projection for ProductsView {
    type Change = ProductChange;

    fn name(&self) -> &'static str {
        "products_view"
    }

    fn context(&self) -> BoundedContext {
        BoundedContext::Inventory
    }

    fn tables(&self) -> &'static [&'static str] {
        &["products_view"]
    }

    fn decode(&self, event: &Envelope) -> Result<ProductChange, String> {
        let (sku, effect) = match (event.name(), event.version()) {
            ("ProductCreated", 1) => {
                let e: Created = decode(event)?;
                let effect = Effect::Created {
                    name: e.name,
                    unit_price: e.unit_price.amount_minor,
                    currency: e.unit_price.currency.as_str().to_owned(),
                    on_hand: e.initial_stock,
                };
                (e.sku, effect)
            }
            ("ProductRestocked", 1) => {
                let e: Restocked = decode(event)?;
                (e.sku, Effect::OnHand(e.on_hand))
            }
            ("PriceChanged", 1) => {
                let e: Repriced = decode(event)?;
                (e.sku, Effect::Price(e.new_price.amount_minor))
            }
            ("StockReserved", 1) => {
                let e: Moved = decode(event)?;
                (e.sku, Effect::Reserved(e.quantity))
            }
            ("ReservationReleased", 1) => {
                let e: Moved = decode(event)?;
                (e.sku, Effect::Reserved(-e.quantity))
            }
            ("ReservationCommitted", 1) => {
                let e: Committed = decode(event)?;
                let effect = Effect::Committed {
                    quantity: e.quantity,
                    on_hand: e.on_hand,
                };
                (e.sku, effect)
            }
            _ => return Err(unknown(event)),
        };
        Ok(ProductChange {
            sku,
            effect,
            version: event.sequence as i64,
            at: event.time,
        })
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        changes: &[ProductChange],
    ) -> Result<(), sqlx::Error> {
        let mut rows: Folds<&str, Fold> = Folds::default();
        for c in changes {
            let f = rows.entry(&c.sku, || Fold {
                sku: c.sku.clone(),
                ..Fold::default()
            });
            f.version = c.version;
            f.at = Some(c.at);
            match &c.effect {
                Effect::Created {
                    name,
                    unit_price,
                    currency,
                    on_hand,
                } => {
                    f.created = true;
                    f.name = Some(name.clone());
                    f.unit_price = Some(*unit_price);
                    f.currency = Some(currency.clone());
                    f.on_hand = Some(*on_hand);
                }
                Effect::OnHand(n) => f.on_hand = Some(*n),
                Effect::Price(p) => f.unit_price = Some(*p),
                Effect::Reserved(q) => f.reserved += q,
                Effect::Committed { quantity, on_hand } => {
                    f.reserved -= quantity;
                    f.on_hand = Some(*on_hand);
                }
            }
        }
        // Products neither created now nor known are skipped, as an UPDATE of a missing row
        // would be.
        sqlx::query(
            "INSERT INTO products_view (sku, name, unit_price, currency, on_hand, reserved, version, updated_at) \
             SELECT u.sku, coalesce(u.name, p.name), coalesce(u.unit_price, p.unit_price), \
               coalesce(u.currency, p.currency), coalesce(u.on_hand, p.on_hand), \
               CASE WHEN u.created THEN 0 ELSE p.reserved END + u.reserved, u.version, u.at \
             FROM unnest($1::text[], $2::bool[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], \
                         $7::bigint[], $8::bigint[], $9::timestamptz[]) \
                  AS u(sku, created, name, unit_price, currency, on_hand, reserved, version, at) \
             LEFT JOIN products_view p USING (sku) \
             WHERE u.created OR p.sku IS NOT NULL \
             ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, unit_price = EXCLUDED.unit_price, \
               currency = EXCLUDED.currency, on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, \
               version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        )
        .bind(rows.column(|f| f.sku.clone()))
        .bind(rows.column(|f| f.created))
        .bind(rows.column(|f| f.name.clone()))
        .bind(rows.column(|f| f.unit_price))
        .bind(rows.column(|f| f.currency.clone()))
        .bind(rows.column(|f| f.on_hand))
        .bind(rows.column(|f| f.reserved))
        .bind(rows.column(|f| f.version))
        .bind(rows.column(|f| f.at))
        .execute(conn)
        .await?;
        Ok(())
    }
}
