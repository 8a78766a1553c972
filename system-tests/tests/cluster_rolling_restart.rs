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
    // A connection a stopping gateway had accepted but not yet read a request from is
    // closed unanswered (hyper closes idle connections on shutdown; a balancer's readiness
    // check keeps new ones away first). The request is sent again with its key, and the end
    // checks below find each order placed once: the count is reported, not failed on.
    assert_end(&fleet.stack, &placed.orders).await;
}
