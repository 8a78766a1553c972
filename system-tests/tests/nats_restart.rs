//! `nats-server` SIGKILLed while orders flow and started again ten seconds later on its
//! store: every service reconnects and resumes its consumers, the relays publish what
//! waited in their outboxes, and every order ends where it would have ended.

use std::time::Duration;

use testkit::outage::{assert_end, orders_through, patient_stack};
use testkit::private::PrivateNats;

#[tokio::test]
async fn nats_killed_and_restarted_while_orders_flow() {
    // This test's own server: killing the shared one would break every other test.
    let mut nats = PrivateNats::start().await;
    testkit::use_infra(testkit::Infra {
        nats_url: nats.url(),
        ..testkit::Infra::from_env()
    });
    let s = patient_stack().await;
    let (orders, nats) = orders_through(&s, async move {
        nats.kill9().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        nats.restart().await;
        nats
    })
    .await;
    assert_end(&s, &orders).await;
    drop(nats);
}
