//! A saga that meets an input it did not cause stops and says why; an operator finds it in
//! the list of parked sagas and resumes it with a reason, which the saga records.

use std::time::Duration;

use contracts::orders::ConfirmOrder;
use serde_json::{json, Value};
use testkit::stack::Stack;

async fn parked(s: &Stack) -> Value {
    testkit::get_json(&format!("{}/sagas?status=needs_attention", s.urls[3])).await
}

async fn retry(s: &Stack, order: uuid::Uuid, body: Value) -> (u16, Value) {
    let response = testkit::http()
        .post(format!("{}/sagas/{order}/retry", s.urls[3]))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_order_confirmed_behind_the_sagas_back_parks_it_until_an_operator_resumes_it() {
    let s = Stack::start(600).await;
    s.product("PARK-1", 5).await;
    // The payment provider never answers: the saga waits at the authorisation.
    let order = s.place(&[("PARK-1", 1)], "tok_timeout").await;
    testkit::eventually(Duration::from_secs(30), "the authorisation", || async {
        let saga = s.saga(order).await;
        (saga["steps"]["authorise"]["attempts"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    // Someone confirms the unpaid order straight on the orders service.
    let confirmed =
        testkit::world::post_command(&s.urls[0], &ConfirmOrder { order_id: order }, None).await;
    assert_eq!(confirmed.status, 202, "{:?}", confirmed.body);

    // The saga does not record that as its success: it stops, naming the contradiction.
    let saga = testkit::eventually(Duration::from_secs(30), "the saga to park", || async {
        let saga = s.saga(order).await;
        (saga["status"] == "needs_attention").then_some(saga)
    })
    .await;
    assert!(saga["outcome"].is_null(), "{saga}");
    let list = parked(&s).await;
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["order_id"] == order.to_string())
        .unwrap_or_else(|| panic!("{order} is not listed: {list}"))
        .clone();
    assert_eq!(item["step"], "confirm");
    assert!(
        item["reason"]
            .as_str()
            .unwrap()
            .starts_with("contradiction:"),
        "{item}"
    );

    // A resumption needs a reason, and records it.
    assert_eq!(retry(&s, order, json!({"reason": " "})).await.0, 422);
    assert_eq!(retry(&s, order, json!({"why": "x"})).await.0, 422);
    let not_json = testkit::http()
        .post(format!("{}/sagas/{order}/retry", s.urls[3]))
        .header("content-type", "application/json")
        .body("{reason")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    let (status, body) = retry(
        &s,
        order,
        json!({"reason": "checked with the payment provider"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "running");
    let saga = s.saga(order).await;
    let resumed = saga["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["event"].get("SagaResumed").cloned())
        .unwrap_or_else(|| panic!("no SagaResumed: {saga}"));
    assert_eq!(resumed["reason"], "checked with the payment provider");
    assert!(!parked(&s).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["order_id"] == order.to_string()));
    // It is running again: a second retry is refused, and so is one for no saga.
    assert_eq!(retry(&s, order, json!({"reason": "again"})).await.0, 409);
    assert_eq!(
        retry(&s, uuid::Uuid::now_v7(), json!({"reason": "none"}))
            .await
            .0,
        404
    );
    assert_eq!(
        testkit::get(format!("{}/sagas?status=running", s.urls[3]))
            .await
            .status()
            .as_u16(),
        400
    );
}
