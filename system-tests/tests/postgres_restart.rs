//! The Postgres cluster of every service stopped with `pg_ctl stop -m immediate` while orders
//! flow, and started again ten seconds later (crash recovery from the WAL): requests meanwhile
//! get 503 with `Retry-After` (a frontend retries them with their idempotency key), every
//! pool reconnects, and every order ends where it would have ended.

use std::time::Duration;

use testkit::outage::{assert_end, orders_through, patient_stack};
use testkit::private::PrivatePostgres;

#[tokio::test]
async fn postgres_stopped_immediately_and_restarted_while_orders_flow() {
    // This test's own cluster: stopping the shared one would break every other test.
    let pg = PrivatePostgres::start().await;
    testkit::use_infra(testkit::Infra {
        pg_admin_url: pg.admin_url(),
        ..testkit::Infra::from_env()
    });
    let s = patient_stack().await;
    let (orders, pg) = orders_through(&s, async move {
        pg.stop_immediate().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        pg.start_again().await;
        pg
    })
    .await;
    assert_end(&s, &orders).await;
    drop(pg);
}
