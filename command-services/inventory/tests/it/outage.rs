//! The inventory service SIGKILLed for a minute while 200 orders flow, then started again: the
//! sagas wait for it instead of giving up, none is parked, and every order ends where it
//! would have ended with inventory up all along (`testkit::outage` checks the end).

use testkit::outage::{kill_for_a_minute_under_200_orders, Victim};

#[tokio::test]
async fn inventory_killed_for_a_minute_while_200_orders_flow() {
    kill_for_a_minute_under_200_orders(Victim {
        index: 1,
        binary: std::path::Path::new(env!("CARGO_BIN_EXE_inventory")),
        env: &[],
    })
    .await;
}
