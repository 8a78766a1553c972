//! What the read side shares between the projections, which write the read database, and the
//! query API, which reads it: the projections' names, the channel on which a commit is
//! announced, the status words stored in the read tables, and the lag read.
//!
//! Both sides depend on this crate and neither on the other, so the query API builds without
//! the workers' JetStream and domain code, and a name or a status word cannot drift between
//! the side that writes it and the side that reads it.
#![forbid(unsafe_code)]

pub mod lag;
pub mod status;

pub use status::{OrderStatus, PaymentStatus, SagaStatus};

/// The projection that keeps `orders_view`, `customer_order_counts`, `sales_daily` and
/// `order_outcomes_daily` (from the `ORDERS` stream).
pub const ORDERS_VIEW: &str = "orders_view";
/// The projection that keeps `products_view` (from `INVENTORY`).
pub const PRODUCTS_VIEW: &str = "products_view";
/// The projection that keeps `payments_view` (from `PAYMENTS`).
pub const PAYMENTS_VIEW: &str = "payments_view";
/// The projection that keeps `saga_timeline` and `sagas_view` (from `SAGAS`).
pub const SAGA_TIMELINE: &str = "saga_timeline";

/// Every projection's name: its durable consumer, its checkpoint key and the payload of its
/// [`UPDATED_CHANNEL`] notifications. A test in `projections` keeps it equal to each
/// projection's own `name()`.
pub const NAMES: [&str; 4] = [ORDERS_VIEW, PRODUCTS_VIEW, PAYMENTS_VIEW, SAGA_TIMELINE];

/// Channel on which a committed batch announces `<projection>`; the query API listens to it
/// to answer read-your-writes requests without polling.
pub const UPDATED_CHANNEL: &str = "read_model_updated";

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_distinct() {
        let mut names = super::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), super::NAMES.len());
    }
}
