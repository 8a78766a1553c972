//! One replica of every service SIGKILLed in the middle of 300 orders through the gateways:
//! the other replicas carry every saga, projection and request on (a gateway's callers move
//! to the other gateway, a dead replica's unacknowledged messages are delivered again to the
//! live one, and its outbox relay's lock passes over), and every order ends where it would
//! have ended, with the killed replicas never started again.

use testkit::fleet::{services, Fleet};
use testkit::outage::assert_end;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_of_every_service_killed_while_300_orders_flow() {
    let (mut fleet, load) = Fleet::start_under_load().await;

    load.reached(100).await;
    // The first replica of half the services and the second of the rest, so both
    // gateways' lists and both halves of the cluster lose something.
    for (s, service) in services().enumerate() {
        fleet.kill9(service, s % 2).await;
        eprintln!("killed {service} replica {}", s % 2);
    }
    fleet.aim_checks();

    let placed = load.finish().await;
    assert_end(&fleet.stack, &placed.orders).await;
}
