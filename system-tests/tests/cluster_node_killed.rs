//! A three-node JetStream cluster with two replicas of every service: one NATS node is
//! SIGKILLed while 300 orders flow through the gateways and started again ten seconds later.
//! The clients on it move to the other nodes, the streams keep a quorum and go on, the node
//! catches up when it is back, and every order ends where it would have ended.

use std::time::Duration;

use testkit::fleet::{Fleet, Load};
use testkit::outage::assert_end;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_and_restarted_while_300_orders_flow() {
    let mut fleet = Fleet::start().await;
    let token = fleet.prepare_load(300).await;
    let load = Load::start(fleet.gateways(), token, 300, Duration::from_millis(50));

    load.reached(60).await;
    // The second node: the first replica of every service is connected to the first, the
    // second replica to the second.
    fleet.nats.kill9(1).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    fleet.nats.restart(1).await;

    let placed = load.finish().await;
    eprintln!(
        "load: {} placed, {} failed answers, {} handed to the other gateway",
        placed.orders.len(),
        placed.failed.len(),
        placed.handed_over
    );
    assert_end(&fleet.stack, &placed.orders).await;
    // Every stream is whole on every node again, with three replicas.
    for context in messaging::BoundedContext::ALL {
        let stream = fleet.stack.orders.ns.stream(context);
        fleet.nats.assert_replicated(&stream).await;
    }
}
