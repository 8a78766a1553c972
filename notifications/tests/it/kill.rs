//! Two replicas share the work; one is killed mid-batch (its batch recorded, not yet
//! acknowledged), and the receiver still gets every event once, in order per order.

use std::time::Duration;

use uuid::Uuid;

use crate::{order_event, LIFE};
use testkit::webhooks::{verify_with_the_reference_library, Answer, Receiver};

#[tokio::test]
async fn a_replica_killed_mid_batch_loses_nothing_and_sends_nothing_twice_to_a_partner() {
    let world = crate::world().await;
    let binary = testkit::binary("notifications");
    let common = [
        ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("WEBHOOK_TIMEOUT_MS", "1000"),
        ("NOTIFY_BATCH_SIZE", "10"),
        ("NOTIFY_RETRY_DELAY_MS", "100"),
        ("WEBHOOK_POLL_INTERVAL_MS", "50"),
    ];
    let mut doomed_env = common.to_vec();
    doomed_env.push(("FAILPOINTS", "notifications.after_record@2"));
    let doomed = world.start_process(&binary, &doomed_env).await;
    let survivor = world.start_process(&binary, &common).await;
    let receiver = Receiver::start(Answer::Ok).await;
    let (_, secret) = crate::register(&survivor.base_url, &receiver.url, &["*"]).await;

    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for (sequence, event_type) in LIFE.iter().enumerate() {
        for order in &orders {
            world
                .publish(&order_event(*order, sequence as u64 + 1, event_type))
                .await;
        }
    }

    let status = doomed.wait_exit(Duration::from_secs(60)).await;
    assert!(!status.success(), "the failpoint killed it: {status}");
    let taken = receiver.wait_for(60, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.taken().len(),
        60,
        "each event once, by its webhook-id"
    );
    for order in &orders {
        let types = testkit::webhooks::types_for(&taken, &order.to_string());
        assert_eq!(types.len(), 3, "{order}");
        assert!(
            types[0].contains("OrderPlaced")
                && types[1].contains("OrderPriced")
                && types[2].contains("OrderConfirmed"),
            "{order}: {types:?}"
        );
    }
    assert_eq!(
        verify_with_the_reference_library(&receiver.got(), &secret)
            .await
            .len(),
        receiver.got().len()
    );
    // Recorded once each: no event was recorded twice for the endpoint.
    let recorded = world.count("SELECT count(*) FROM deliveries").await;
    assert_eq!(recorded, 60);
    drop(survivor);
}
