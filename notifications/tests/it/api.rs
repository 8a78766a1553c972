//! The operators' API: registration and its refusals, reads, pause and resume, a rotation
//! during which both secrets sign, and deletion.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::Service;
use testkit::webhooks::{verify_with_the_reference_library, Answer, Receiver};

#[tokio::test]
async fn endpoints_are_registered_read_paused_rotated_and_deleted() {
    let s = Service::start(&[]).await;
    let receiver = Receiver::start(Answer::Ok).await;
    let (id, secret) = s
        .register(&receiver.url, &["OrderPlaced", "OrderConfirmed"])
        .await;
    assert!(secret.starts_with("whsec_"));

    let (status, list) = s.call("GET", "/webhooks", None).await;
    assert_eq!(status, 200);
    let listed = &list["items"][0];
    assert_eq!(listed["id"], id.to_string());
    assert_eq!(listed["status"], "active");
    assert!(
        listed.get("secret").is_none(),
        "a secret is shown once: {listed}"
    );

    // Paused, nothing is sent; resumed, what waited goes out.
    let (status, paused) = s.call("POST", &format!("/webhooks/{id}/pause"), None).await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    let order = Uuid::now_v7();
    s.publish(order, 1, "OrderPlaced").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(receiver.got().is_empty(), "a paused endpoint gets nothing");
    let (status, _) = s
        .call("POST", &format!("/webhooks/{id}/resume"), None)
        .await;
    assert_eq!(status, 200);
    let first = receiver.wait_for(1, Duration::from_secs(20)).await;
    verify_with_the_reference_library(&first, &secret).await;

    // After a rotation both secrets sign, so a partner can switch at leisure.
    let (status, rotated) = s
        .call("POST", &format!("/webhooks/{id}/rotate"), None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_valid_until"].is_string());
    s.publish(order, 2, "OrderConfirmed").await;
    let both = receiver.wait_for(2, Duration::from_secs(20)).await;
    let second = &both[1..];
    assert_eq!(
        second[0]
            .headers
            .iter()
            .find(|(k, _)| k == "webhook-signature")
            .unwrap()
            .1
            .split(' ')
            .count(),
        2
    );
    assert_eq!(
        verify_with_the_reference_library(second, &new_secret)
            .await
            .len(),
        1
    );
    assert_eq!(
        verify_with_the_reference_library(second, &secret)
            .await
            .len(),
        1
    );

    let (status, _) = s.call("DELETE", &format!("/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, gone) = s.call("GET", &format!("/webhooks/{id}"), None).await;
    assert_eq!(
        (status, gone["type"].as_str()),
        (404, Some("urn:streamshop:problem:not-found"))
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_problems() {
    let s = Service::start(&[]).await;
    let receiver = Receiver::start(Answer::Ok).await;
    for (body, status) in [
        (
            json!({"url": receiver.url, "event_types": ["NoSuchEvent"]}),
            422,
        ),
        (json!({"url": receiver.url, "event_types": []}), 422),
        (json!({"url": receiver.url}), 422),
        (
            json!({"url": "ftp://example.com/", "event_types": ["*"]}),
            422,
        ),
        (
            json!({"url": receiver.url, "event_types": ["*"], "extra": 1}),
            422,
        ),
        (json!([1, 2]), 422),
    ] {
        let (got, problem) = s.call("POST", "/webhooks", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert!(problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:streamshop:problem:"));
    }
    let malformed = testkit::http()
        .post(format!("{}/webhooks", s.url))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    for (method, path, status) in [
        ("GET", "/webhooks/not-a-uuid".to_owned(), 400),
        ("GET", format!("/webhooks/{}", Uuid::now_v7()), 404),
        ("POST", format!("/webhooks/{}/pause", Uuid::now_v7()), 404),
        ("POST", format!("/webhooks/{}/rotate", Uuid::now_v7()), 404),
        ("DELETE", format!("/webhooks/{}", Uuid::now_v7()), 404),
        (
            "GET",
            format!("/webhooks/{}/deliveries?limit=0", Uuid::now_v7()),
            400,
        ),
        (
            "GET",
            format!("/webhooks/{}/deliveries", Uuid::now_v7()),
            404,
        ),
        (
            "POST",
            format!(
                "/webhooks/{}/deliveries/{}/resend",
                Uuid::now_v7(),
                Uuid::now_v7()
            ),
            404,
        ),
        ("PUT", "/webhooks".to_owned(), 405),
    ] {
        let (got, problem) = s.call(method, &path, None).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
    }
}

#[tokio::test]
async fn delivered_deliveries_leave_the_log_after_their_retention_and_others_stay() {
    let s = Service::start(&[]).await;
    let receiver = Receiver::start(Answer::Ok).await;
    let (id, _) = s.register(&receiver.url, &["*"]).await;
    s.publish(Uuid::now_v7(), 1, "OrderPlaced").await;
    s.publish(Uuid::now_v7(), 1, "OrderPlaced").await;
    receiver.wait_for(2, Duration::from_secs(20)).await;
    // Taken is not yet recorded: wait until both are marked delivered.
    testkit::eventually(
        Duration::from_secs(20),
        "both recorded as delivered",
        || async {
            let delivered = s
                .world
                .count("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await;
            (delivered == 2).then_some(())
        },
    )
    .await;
    // One delivered long ago, one pending: only the first goes, as the service's own role
    // prunes it (the grant is what the schema gives).
    sqlx::query(
        "UPDATE deliveries SET delivered_at = now() - interval '40 days' \
         WHERE ctid = (SELECT ctid FROM deliveries LIMIT 1)",
    )
    .execute(&s.world.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO deliveries (id, endpoint_id, event_id, event_type, aggregate_id, sequence, \
         payload, next_attempt_at) VALUES ($1, $2, 'pending-one', 'OrderPlaced', 'x', 1, '{}', \
         now() + interval '1 day')",
    )
    .bind(Uuid::now_v7())
    .bind(id)
    .execute(&s.world.pool)
    .await
    .unwrap();
    let settings =
        notifications::Settings::from_env(&service_kit::env::Env::from_pairs(s.world.env()))
            .unwrap();
    let as_service = sqlx::PgPool::connect(&s.world.db_url).await.unwrap();
    let pruned = service_kit::retention::prune(
        &as_service,
        &notifications::app::retention(&settings.webhooks)[0],
    )
    .await
    .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(s.world.count("SELECT count(*) FROM deliveries").await, 2);
}
