//! A partner's webhook behind the gateway: an operator registers it, a customer's order runs
//! its real saga, and the partner receives the order's events, signed, in order, verified with
//! the Standard Webhooks reference library. Customers may not touch webhooks.

use std::time::Duration;

use serde_json::json;
use testkit::front::Front;
use testkit::webhooks::{verify_with_the_reference_library, Answer, Receiver};
use uuid::Uuid;

#[tokio::test]
async fn a_partner_receives_a_real_orders_events_through_a_webhook_registered_at_the_gateway() {
    use reqwest::Method;
    let front = Front::start(&[]).await;
    let admin = front.oidc.admin_token().await;
    let customer = front.oidc.customer_token(Uuid::now_v7()).await;
    let partner = Receiver::start(Answer::Ok).await;

    let endpoint = json!({"url": partner.url, "event_types": ["OrderPlaced", "OrderConfirmed"]});
    let (status, refused) = front
        .call(
            &customer,
            Method::POST,
            "/api/webhooks",
            Some(endpoint.clone()),
        )
        .await;
    assert_eq!(
        status, 403,
        "customers may not register webhooks: {refused}"
    );
    let (status, registered) = front
        .call(&admin, Method::POST, "/api/webhooks", Some(endpoint))
        .await;
    assert_eq!(status, 201, "{registered}");
    let secret = registered["secret"].as_str().unwrap().to_owned();
    let id = registered["id"].as_str().unwrap().to_owned();

    let product = json!({"sku": "HOOK-1", "name": "Mug", "unit_price": 1250, "currency": "EUR", "initial_stock": 5});
    let (status, body) = front
        .call(&admin, Method::POST, "/api/products", Some(product))
        .await;
    assert_eq!(status, 202, "{body}");
    let order = json!({"lines": [{"sku": "HOOK-1", "quantity": 2}], "payment_token": "tok_ok"});
    let (status, placed) = front
        .call(&customer, Method::POST, "/api/orders", Some(order))
        .await;
    assert_eq!(status, 202, "{placed}");
    let order_id = placed["order_id"].as_str().unwrap().to_owned();

    let got = partner.wait_for(2, Duration::from_secs(60)).await;
    let types = testkit::webhooks::types_for(&got, order_id.as_str());
    assert_eq!(types.len(), 2, "{types:?}");
    assert!(
        types[0].contains("OrderPlaced") && types[1].contains("OrderConfirmed"),
        "{types:?}"
    );
    let placed_event = got[0].json();
    assert_eq!(
        placed_event["data"]["payment_token"], "[redacted]",
        "{placed_event}"
    );
    assert_eq!(
        verify_with_the_reference_library(&got, &secret).await.len(),
        2
    );

    // The operators' delivery log through the gateway (a delivery taken is recorded as
    // delivered just after the partner's answer).
    let path = format!("/api/webhooks/{id}/deliveries");
    testkit::eventually(
        Duration::from_secs(20),
        "both deliveries recorded",
        || async {
            let (status, deliveries) = front.call(&admin, Method::GET, &path, None).await;
            assert_eq!(status, 200, "{deliveries}");
            let items = deliveries["items"].as_array().unwrap().clone();
            (items.len() == 2
                && items
                    .iter()
                    .all(|d| d["status"] == "delivered" && d["last_status_code"] == 200))
            .then_some(())
        },
    )
    .await;
    let (status, _) = front
        .call(
            &customer,
            Method::GET,
            &format!("/api/webhooks/{id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(status, 403);
}
