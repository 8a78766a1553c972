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

pub use messaging::durables::{ORDERS_VIEW, PAYMENTS_VIEW, PRODUCTS_VIEW, SAGA_TIMELINE};

/// Every projection's name: its durable consumer, its checkpoint key and the payload of its
/// [`UPDATED_CHANNEL`] notifications. The names are declared with every other durable
/// consumer's in `messaging::durables`; a test in `projections` keeps this equal to each
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
