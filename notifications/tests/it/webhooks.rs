//! Deliveries: every subscribed event once, in order per order, signed as Standard Webhooks
//! says; retries with backoff; a dead endpoint paused while another is served; the address
//! guard at delivery time.

use std::time::Duration;

use uuid::Uuid;

use crate::{Service, LIFE};
use testkit::webhooks::{verify_with_the_reference_library, Answer, Receiver};

#[tokio::test]
async fn every_subscribed_event_arrives_once_in_order_per_order_and_verifies() {
    let s = Service::start(&[]).await;
    let all = Receiver::start(Answer::Ok).await;
    let confirmed = Receiver::start(Answer::Ok).await;
    let (_, all_secret) = s.register(&all.url, &["*"]).await;
    let (_, confirmed_secret) = s.register(&confirmed.url, &["OrderConfirmed"]).await;

    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    for (sequence, event_type) in LIFE.iter().enumerate() {
        for order in &orders {
            s.publish(*order, sequence as u64 + 1, event_type).await;
        }
    }
    // A relay that published again after a crash: the same event, dropped.
    s.publish(orders[0], 2, "OrderPriced").await;

    let got = all.wait_for(15, Duration::from_secs(30)).await;
    let only_confirmed = confirmed.wait_for(5, Duration::from_secs(30)).await;
    // Nothing more arrives than was subscribed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(all.got().len(), 15, "each event once");
    assert_eq!(confirmed.got().len(), 5);

    for order in &orders {
        let types = testkit::webhooks::types_for(&got, &order.to_string());
        assert_eq!(
            types,
            [
                "streamshop.orders.OrderPlaced.v3",
                "streamshop.orders.OrderPriced.v1",
                "streamshop.orders.OrderConfirmed.v1"
            ],
            "{order}: in sequence"
        );
    }
    assert!(only_confirmed
        .iter()
        .all(|g| g.json()["type"] == "streamshop.orders.OrderConfirmed.v1"));
    // What the log keeps sealed for the saga never leaves for a partner.
    for g in &got {
        let body = String::from_utf8_lossy(&g.body);
        assert!(!body.contains("sealed-token-partners-never-see"), "{body}");
        assert!(
            !body.contains("sealed-address-partners-never-see"),
            "{body}"
        );
    }
    let placed = got
        .iter()
        .find(|g| g.json()["type"] == "streamshop.orders.OrderPlaced.v3");
    assert_eq!(
        placed.unwrap().json()["data"]["payment_token"],
        "[redacted]"
    );

    let verified = verify_with_the_reference_library(&got, &all_secret).await;
    assert_eq!(verified.len(), 15);
    let verified = verify_with_the_reference_library(&only_confirmed, &confirmed_secret).await;
    assert_eq!(verified.len(), 5);
}

#[tokio::test]
async fn a_failing_endpoint_gets_it_after_backoff_and_a_dead_one_is_paused_apart() {
    let s = Service::start(&[
        ("WEBHOOK_TIMEOUT_MS", "2000"),
        ("WEBHOOK_RETRY_FOR_SECS", "6"),
    ])
    .await;
    let flaky = Receiver::start(Answer::FailFirst(3)).await;
    let dead = Receiver::start(Answer::Never).await;
    let fine = Receiver::start(Answer::Ok).await;
    let (flaky_id, _) = s.register(&flaky.url, &["*"]).await;
    let (dead_id, _) = s.register(&dead.url, &["*"]).await;
    s.register(&fine.url, &["*"]).await;

    let order = Uuid::now_v7();
    s.publish(order, 1, "OrderPlaced").await;
    s.publish(order, 2, "OrderPriced").await;

    // The fine endpoint is served while the dead one's first attempt still hangs.
    let served = fine.wait_for(2, Duration::from_secs(20)).await;
    let hung = dead.wait_for_request(Duration::from_secs(20)).await;
    assert!(
        served[1].at < hung.at + Duration::from_secs(2),
        "the fine endpoint waited for the dead one"
    );

    // The flaky one: 500 three times, then the fourth attempt is taken.
    flaky.wait_for(2, Duration::from_secs(30)).await;
    let first = s.first_delivery(flaky_id).await;
    assert_eq!(first["status"], "delivered", "{first}");
    assert_eq!(first["attempts"], 4, "{first}");
    let (status, log) = s
        .call(
            "GET",
            &format!(
                "/webhooks/{flaky_id}/deliveries/{}",
                first["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let attempts = log["log"].as_array().unwrap();
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 500, 200], "{log}");
    // The waits between attempts grow (base 200 ms, doubling, jittered by at most half).
    let at: Vec<chrono::DateTime<chrono::Utc>> = attempts
        .iter()
        .map(|a| a["at"].as_str().unwrap().parse().unwrap())
        .collect();
    let gaps: Vec<i64> = at
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    assert!(
        gaps[0] >= 100 && gaps[1] >= 200 && gaps[2] >= 400,
        "{gaps:?}"
    );
    // The second event waited for the first: in order per order.
    let order_of_types: Vec<String> = flaky
        .taken()
        .iter()
        .map(|g| g.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        order_of_types,
        [
            "streamshop.orders.OrderPlaced.v3",
            "streamshop.orders.OrderPriced.v1"
        ]
    );

    // The dead one: retried until its window is over, then failed and paused.
    let paused = testkit::eventually(
        Duration::from_secs(30),
        "the dead endpoint paused",
        || async {
            let (_, endpoint) = s.call("GET", &format!("/webhooks/{dead_id}"), None).await;
            (endpoint["status"] == "paused").then_some(endpoint)
        },
    )
    .await;
    assert!(
        paused["paused_reason"]
            .as_str()
            .unwrap()
            .contains("failed after"),
        "{paused}"
    );
    let first = s.first_delivery(dead_id).await;
    assert_eq!(first["status"], "failed", "{first}");
    assert!(first["attempts"].as_i64().unwrap() >= 2, "{first}");
    assert!(
        first["last_error"].as_str().unwrap().contains("timed out"),
        "{first}"
    );
    assert!(dead.got().len() >= 2, "it was retried");

    // Resumed and resent, a delivery is tried again at once.
    let (status, _) = s
        .call(
            "POST",
            &format!(
                "/webhooks/{dead_id}/deliveries/{}/resend",
                first["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, resumed) = s
        .call("POST", &format!("/webhooks/{dead_id}/resume"), None)
        .await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("active")));
}

#[tokio::test]
async fn a_private_address_is_refused_at_registration_and_at_delivery() {
    let s = Service::start(&[("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "false")]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
    ] {
        let (status, problem) = s
            .call(
                "POST",
                "/webhooks",
                Some(serde_json::json!({"url": url, "event_types": ["*"]})),
            )
            .await;
        assert_eq!(status, 422, "{url}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not a public address"),
            "{url}: {problem}"
        );
    }

    // An endpoint whose name came to resolve to a private address after it was registered
    // (here written into the table as such): every attempt is refused before any request.
    let receiver = Receiver::start(Answer::Ok).await;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, event_types, status, secret) \
         VALUES ($1, $2, '{*}', 'active', $3)",
    )
    .bind(id)
    .bind(receiver.url.replace("127.0.0.1", "localhost"))
    .bind(notifications::signing::new_secret())
    .execute(&s.world.pool)
    .await
    .unwrap();
    s.publish(Uuid::now_v7(), 1, "OrderPlaced").await;
    let delivery = testkit::eventually(Duration::from_secs(20), "an attempt refused", || async {
        let (_, list) = s
            .call("GET", &format!("/webhooks/{id}/deliveries"), None)
            .await;
        list["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
            .filter(|d| d["attempts"].as_i64() >= Some(1) && !d["last_error"].is_null())
    })
    .await;
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{delivery}"
    );
    assert!(receiver.got().is_empty(), "nothing was sent");
}
