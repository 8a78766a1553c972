//! The product read model: catalog and stock per SKU, from the `INVENTORY` stream.

use chrono::{DateTime, Utc};
use domain::product::ProductEvent;
use messaging::{BoundedContext, Envelope};
use sqlx::PgConnection;

use crate::projection::{add, decode, Folds, Projection};

/// Keeps `products_view` up to date.
#[derive(Debug, Default, Clone)]
pub struct ProductsView;

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
    /// Sets `customer_limit` (`None`: no limit).
    CustomerLimit(Option<i64>),
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
    /// Set in this batch: the new `customer_limit` (which may be none).
    customer_limit: Option<Option<i64>>,
    version: i64,
    at: Option<DateTime<Utc>>,
}

impl Projection for ProductsView {
    type Change = ProductChange;

    const NAME: &'static str = read_contract::PRODUCTS_VIEW;
    const CONTEXT: BoundedContext = BoundedContext::Inventory;
    const TABLES: &'static [&'static str] = &["products_view"];

    fn decode(&self, event: &Envelope) -> Result<ProductChange, String> {
        let (sku, effect) = match decode::<ProductEvent>(event)? {
            ProductEvent::ProductCreated {
                sku,
                name,
                unit_price,
                initial_stock,
            } => {
                let effect = Effect::Created {
                    name,
                    unit_price: unit_price.amount_minor,
                    currency: unit_price.currency.as_str().to_owned(),
                    on_hand: i64::from(initial_stock),
                };
                (sku, effect)
            }
            ProductEvent::ProductRestocked { sku, on_hand, .. } => {
                (sku, Effect::OnHand(stock(on_hand)?))
            }
            ProductEvent::PriceChanged { sku, new_price, .. } => {
                (sku, Effect::Price(new_price.amount_minor))
            }
            ProductEvent::StockReserved { sku, quantity, .. } => {
                (sku, Effect::Reserved(i64::from(quantity)))
            }
            ProductEvent::ReservationReleased { sku, quantity, .. } => {
                (sku, Effect::Reserved(-i64::from(quantity)))
            }
            ProductEvent::ReservationCommitted {
                sku,
                quantity,
                on_hand,
                ..
            } => {
                let effect = Effect::Committed {
                    quantity: i64::from(quantity),
                    on_hand: stock(on_hand)?,
                };
                (sku, effect)
            }
            ProductEvent::CustomerLimitSet { sku, limit } => {
                (sku, Effect::CustomerLimit(limit.map(i64::from)))
            }
        };
        Ok(ProductChange {
            sku: sku.to_string(),
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
                Effect::Reserved(q) => f.reserved = add(f.reserved, *q, "reserved")?,
                Effect::Committed { quantity, on_hand } => {
                    f.reserved = add(f.reserved, -quantity, "reserved")?;
                    f.on_hand = Some(*on_hand);
                }
                Effect::CustomerLimit(limit) => f.customer_limit = Some(*limit),
            }
        }
        // Products neither created now nor known are skipped, as an UPDATE of a missing row
        // would be.
        sqlx::query(
            "INSERT INTO products_view (sku, name, unit_price, currency, on_hand, reserved, version, updated_at, customer_limit) \
             SELECT u.sku, coalesce(u.name, p.name), coalesce(u.unit_price, p.unit_price), \
               coalesce(u.currency, p.currency), coalesce(u.on_hand, p.on_hand), \
               CASE WHEN u.created THEN 0 ELSE p.reserved END + u.reserved, u.version, u.at, \
               CASE WHEN u.limit_set THEN u.customer_limit ELSE p.customer_limit END \
             FROM unnest($1::text[], $2::bool[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], \
                         $7::bigint[], $8::bigint[], $9::timestamptz[], $10::bool[], $11::bigint[]) \
                  AS u(sku, created, name, unit_price, currency, on_hand, reserved, version, at, \
                       limit_set, customer_limit) \
             LEFT JOIN products_view p USING (sku) \
             WHERE u.created OR p.sku IS NOT NULL \
             ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, unit_price = EXCLUDED.unit_price, \
               currency = EXCLUDED.currency, on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, \
               version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, \
               customer_limit = EXCLUDED.customer_limit",
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
        .bind(rows.column(|f| f.customer_limit.is_some()))
        .bind(rows.column(|f| f.customer_limit.flatten()))
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A stock level as the read model stores it (`bigint`); a larger one is impossible.
fn stock(on_hand: u64) -> Result<i64, String> {
    i64::try_from(on_hand).map_err(|_| format!("on_hand {on_hand} is out of range"))
}
