//! The payments service SIGKILLed for a minute while 200 orders flow (their sagas reach the
//! authorisation and wait there), then started again: none gives up or is parked, and every
//! order ends where it would have ended with payments up all along (`testkit::outage` checks
//! the end).

use testkit::outage::{kill_for_a_minute_under_200_orders, Victim};

#[tokio::test]
async fn payments_killed_for_a_minute_at_the_authorisation_while_200_orders_flow() {
    kill_for_a_minute_under_200_orders(Victim {
        index: 2,
        binary: std::path::Path::new(env!("CARGO_BIN_EXE_payments")),
        env: &[
            ("PAYMENT_PROVIDER_TIMEOUT_MS", "300"),
            testkit::TEST_PAYMENT_PROVIDER[0],
            testkit::TEST_PAYMENT_PROVIDER[1],
        ],
    })
    .await;
}
