//! The node that leads the orders stream, found from the servers' monitoring endpoint, is
//! SIGKILLed while 300 orders flow through the gateways: the other two elect a new leader,
//! the relays' publishes and the consumers go on through it, and every order ends where it
//! would have ended. The node comes back at the end and catches up.

use std::time::Duration;

use messaging::BoundedContext;
use testkit::fleet::Fleet;
use testkit::outage::assert_end;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_stream_leaders_node_killed_while_300_orders_flow() {
    let (mut fleet, load) = Fleet::start_under_load().await;
    let stream = fleet.stack.orders.ns.stream(BoundedContext::Orders);

    load.reached(60).await;
    let leader = fleet
        .nats
        .leader_of(&stream)
        .await
        .expect("the orders stream has a leader");
    fleet.nats.kill9(leader).await;
    eprintln!("killed node {} (it led {stream})", leader + 1);
    let new_leader = testkit::eventually(
        Duration::from_secs(30),
        "a new leader of the orders stream",
        || async { fleet.nats.leader_of(&stream).await.filter(|l| *l != leader) },
    )
    .await;
    eprintln!("node {} leads {stream} now", new_leader + 1);

    let placed = load.finish().await;
    assert_end(&fleet.stack, &placed.orders).await;
    fleet.nats.restart(leader).await;
    for context in BoundedContext::ALL {
        fleet
            .nats
            .assert_replicated(&fleet.stack.orders.ns.stream(context))
            .await;
    }
}
