//! The inventory command service: Product aggregates (one per SKU: catalog and stock) over
//! HTTP and NATS (`cmd.inventory.*`), the `inventory` database, its outbox to `INVENTORY`.
#![forbid(unsafe_code)]

pub mod expiry;
pub mod spec;

pub use spec::InventorySpec;
