//! A three-node JetStream cluster with two replicas of every service: one NATS node is
//! SIGKILLed while 300 orders flow through the gateways and started again ten seconds later.
//! The clients on it move to the other nodes, the streams keep a quorum and go on, the node
//! catches up when it is back, and every order ends where it would have ended. The nodes'
//! routes are mutual TLS.

use std::time::Duration;

use testkit::fleet::Fleet;
use testkit::outage::assert_end;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_and_restarted_while_300_orders_flow() {
    let (mut fleet, load) = Fleet::start_under_load().await;

    load.reached(60).await;
    // The second node: it holds some replicas' first connection (each replica's list starts
    // at a node of its own), and they move to the other two.
    fleet.nats.kill9(1).await;
    fleet.assert_reconnected().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    fleet.nats.restart(1).await;

    let placed = load.finish().await;
    assert_end(&fleet.stack, &placed.orders).await;
    // Every stream is whole on every node again, with three replicas, and so is every
    // durable consumer of the projections and the orchestrator.
    let mut durables = 0;
    for context in messaging::BoundedContext::ALL {
        let stream = fleet.stack.orders.ns.stream(context);
        fleet.nats.assert_replicated(&stream).await;
        for (name, replicas) in fleet.nats.durable_consumers(&stream).await {
            assert_eq!(replicas, 3, "{stream}'s consumer {name}");
            durables += 1;
        }
    }
    assert!(
        durables >= 4,
        "only {durables} durable consumers were found"
    );
    // The nodes, the restarted one included, speak to one another over mutual TLS only, as
    // in the Kubernetes values. Checked after the load, since each probe waits for silence.
    fleet.nats.assert_routes_need_tls().await;
}
