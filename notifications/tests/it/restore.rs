//! The durable consumer lost under a running service (deleted by an operator's slip, or a
//! JetStream server restored from an older backup): it is made again after the checkpoint
//! recorded with the last batch, so nothing recorded is sent again and nothing published
//! meanwhile is skipped.

use std::time::Duration;

use messaging::{durables, BoundedContext};
use uuid::Uuid;

use crate::{Service, LIFE};
use testkit::webhooks::{types_for, Answer, Receiver};

#[tokio::test]
async fn a_deleted_consumer_is_made_again_after_the_checkpoint() {
    let s = Service::start(&[]).await;
    let receiver = Receiver::start(Answer::Ok).await;
    s.register(&receiver.url, &["*"]).await;
    let before = Uuid::now_v7();
    for (sequence, event_type) in LIFE.iter().enumerate() {
        s.publish(before, sequence as u64 + 1, event_type).await;
    }
    receiver.wait_for(3, Duration::from_secs(30)).await;

    let stream = s
        .world
        .js
        .get_stream(s.world.ns.stream(BoundedContext::Orders))
        .await
        .unwrap();
    stream
        .delete_consumer(durables::NOTIFICATIONS)
        .await
        .unwrap();
    // Published while the consumer is gone, and after it is back.
    let after = Uuid::now_v7();
    for (sequence, event_type) in LIFE.iter().enumerate() {
        s.publish(after, sequence as u64 + 1, event_type).await;
    }
    let got = receiver.wait_for(6, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.got().len(), 6, "each event once");
    // Each order's events once, in sequence (their CloudEvent types end in the version).
    let life: Vec<String> = LIFE
        .iter()
        .zip(["v3", "v1", "v1"])
        .map(|(event, version)| format!("streamshop.orders.{event}.{version}"))
        .collect();
    for order in [before, after] {
        assert_eq!(types_for(&got, &order.to_string()), life, "{order}");
    }
    // The consumer is the service's again, as declared.
    let consumer = stream
        .consumer_info(durables::NOTIFICATIONS)
        .await
        .expect("the consumer is made again");
    assert_eq!(
        consumer.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: 4 }
    );
}
