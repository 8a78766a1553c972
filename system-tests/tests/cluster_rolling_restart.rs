//! A rolling restart of every service, one replica at a time, while 300 orders flow through
//! the gateways (what a Kubernetes rollout does): each replica is stopped with SIGTERM, must
//! exit cleanly after finishing what it holds, and is replaced by a new process before the
//! next one stops. No request fails at the gateway, and every order ends where it would have
//! ended.

use testkit::fleet::Fleet;
use testkit::outage::assert_end;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_service_under_300_orders_fails_no_request() {
    let (mut fleet, load) = Fleet::start_under_load().await;

    load.reached(30).await;
    fleet.rolling_restart().await;
    fleet.aim_checks();

    let placed = load.finish().await;
    assert!(
        placed.failed.is_empty(),
        "requests failed at the gateway during the rollout: {:#?}",
        placed.failed
    );
    // A stopping gateway finishes what it took: only a refused connection goes elsewhere.
    assert!(
        placed.dropped.is_empty(),
        "a stopping gateway dropped requests it had taken: {:#?}",
        placed.dropped
    );
    assert_end(&fleet.stack, &placed.orders).await;
}
