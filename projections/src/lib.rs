//! Projection workers: durable JetStream pull consumers that apply events to Postgres read
//! models, each batch and its checkpoint in one transaction.
//!
//! Invariant: a message is acknowledged only after the transaction that applied it committed.
//! Invariant: per (projection, aggregate), an event is applied only when its sequence is the
//! last applied plus one; lower is a duplicate (acked, no effect), higher waits (nak + delay).
//! Invariant: an aggregate's events are never applied out of order around a dead letter: once
//! one is dead-lettered, the rest of that aggregate's events in that projection are too, until
//! a replay applies them all in order (or the operator discards them).
#![forbid(unsafe_code)]

pub mod app;
pub mod bookkeeping;
pub mod dead_letters;
pub mod dead_letters_http;
pub mod lag;
pub mod orders_view;
pub mod payments_view;
pub mod products_view;
pub mod projection;
pub mod rebuild;
pub mod saga_timeline;
pub mod settings;
pub mod worker;

pub use app::App;
pub use settings::Settings;

/// Migrations of the `read` database (the query API reads what these create).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The read database as code. The projections' role owns it: a rebuild creates, moves and
/// drops tables, and everything in it can be rebuilt from the event log. The query API reads
/// it as a role that may only SELECT (granted by whoever provisions the database), except a
/// dead letter's payload: the message as it came, which may hold what no read model shows.
///
/// Invariant: no role but the owner can read `dead_letters.payload`; the others may read the
/// column that counts them per projection (`GET /projections`), narrowed again at every start
/// since provisioning grants SELECT on every table (`query-api/tests/it/reads.rs` tries).
pub static SCHEMA: service_kit::db::Schema = service_kit::db::Schema {
    migrator: &MIGRATOR,
    grants: &[],
    owner_statements: &[DEAD_LETTERS_PRIVATE],
};

/// Whoever but the owner may SELECT `dead_letters` (PUBLIC included) keeps only its
/// `projection` column.
const DEAD_LETTERS_PRIVATE: &str = "DO $$
DECLARE
    grantee oid;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'public.dead_letters'::regclass
          AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        IF grantee = 0 THEN
            REVOKE SELECT ON public.dead_letters FROM PUBLIC;
            GRANT SELECT (projection) ON public.dead_letters TO PUBLIC;
        ELSE
            EXECUTE format('REVOKE SELECT ON public.dead_letters FROM %s', grantee::regrole);
            EXECUTE format('GRANT SELECT (projection) ON public.dead_letters TO %s', grantee::regrole);
        END IF;
    END LOOP;
END $$";

// The names and the update channel are shared with the query API through `read_contract`; they
// stay reachable here because the worker's callers and tests name them through this crate.
pub use read_contract::{NAMES, UPDATED_CHANNEL};

#[cfg(test)]
mod tests {
    use crate::projection::Projection;

    #[test]
    fn names_and_streams_are_the_declared_ones() {
        use crate::orders_view::OrdersView;
        use crate::payments_view::PaymentsView;
        use crate::products_view::ProductsView;
        use crate::saga_timeline::SagaTimeline;
        let own = [
            (OrdersView::NAME, OrdersView::CONTEXT),
            (ProductsView::NAME, ProductsView::CONTEXT),
            (PaymentsView::NAME, PaymentsView::CONTEXT),
            (SagaTimeline::NAME, SagaTimeline::CONTEXT),
        ];
        assert_eq!(own, messaging::durables::PROJECTIONS);
        assert_eq!(own.map(|(name, _)| name), read_contract::NAMES);
    }
}
