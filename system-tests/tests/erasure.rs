//! A customer erased (crypto-shredding), on the real stack: their payment tokens are sealed
//! under a data key of their own in every event, the operator's erase deletes that key, and
//! then nothing opens them again (not `events replay --include-sensitive`, not orders for
//! payments) while every event still folds: a rebuild of every projection succeeds and
//! `events verify` finds nothing amiss. An authorisation still in flight for them is
//! declined, and they place no more orders. Another customer is untouched.

use std::time::Duration;

use contracts::keys::OpenAnswer;
use messaging::{BoundedContext, Identity};
use serde_json::{json, Value};
use testkit::stack::Stack;
use uuid::Uuid;

async fn placed(s: &Stack, customer: Uuid, token: &str) -> Uuid {
    let answer = s.post_order(customer, &[("ERASE-1", 1)], token).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    Uuid::parse_str(answer.body["order_id"].as_str().unwrap()).unwrap()
}

/// `events --include-sensitive replay` of the whole namespace, as the analysts run it.
async fn replay_with_sensitive_fields(s: &Stack) -> Vec<Value> {
    let out = testkit::analyst_events(&s.orders.ns, &["replay"]).await;
    out.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// Asks orders to open `token` of `order`, as `identity` does.
async fn open_as(
    s: &Stack,
    identity: Identity,
    order: Uuid,
    token: &str,
) -> Result<OpenAnswer, String> {
    let subject = s.orders.ns.open_subject(BoundedContext::Orders);
    testkit::open_as(identity, &subject, order, token).await
}

/// The sealed payment token of `order` in its `OrderPlaced`, from the replay.
fn sealed_token_of(events: &[Value], order: Uuid) -> String {
    let placed = events
        .iter()
        .find(|e| {
            e["type"] == "streamshop.orders.OrderPlaced.v3" && e["subject"] == order.to_string()
        })
        .unwrap_or_else(|| panic!("the OrderPlaced of {order}"));
    let token = placed["data"]["payment_token"].as_str().unwrap().to_owned();
    assert!(service_kit::sealing::is_sealed(&token), "{placed}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_customer_s_tokens_open_nowhere_and_every_event_still_folds() {
    let mut s = Stack::start_all(600).await;
    s.product("ERASE-1", 20).await;
    let (erased, kept) = (Uuid::now_v7(), Uuid::now_v7());
    let token = |who: &str| format!("tok_ok_{who}_{}", Uuid::new_v4().simple());
    let (erased_token, kept_token, in_flight_token) =
        (token("erased"), token("kept"), token("inflight"));

    // Both customers buy; the orders confirm, so payments opened both sealed tokens.
    let paid = placed(&s, erased, &erased_token).await;
    let other = placed(&s, kept, &kept_token).await;
    for order in [paid, other] {
        assert_eq!(s.finished(order).await["outcome"], "confirmed");
    }
    // One more order of theirs waits for payments, which is down.
    s.stop_payments();
    let waiting = placed(&s, erased, &in_flight_token).await;
    testkit::eventually(Duration::from_secs(20), "the saga to authorise", || async {
        let saga = s.saga(waiting).await;
        (saga["steps"]["authorise"]["attempts"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    // The operator erases the customer.
    let answer = testkit::http()
        .post(format!("{}/customers/{erased}/erase", s.urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body,
        json!({"customer_id": erased, "erased": true, "had_key": true})
    );

    // The authorisation in flight meets a token that no longer opens: declined, compensated.
    s.start_payments().await;
    let saga = s.finished(waiting).await;
    assert_eq!(saga["outcome"], "rejected", "{saga}");
    let declined = s
        .payments
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{waiting}' \
             AND event_type = 'PaymentDeclined' AND payload::text LIKE '%payment_token_erased%'"
        ))
        .await;
    assert_eq!(declined, 1, "declined because the token was erased");
    // And they place no more orders (nothing could pay for them).
    let refused = s
        .post_order(erased, &[("ERASE-1", 1)], &token("after"))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(
        refused.body["reason"], "customer_erased",
        "{:?}",
        refused.body
    );

    // The log, as the analysts' tool shows it with the sensitive fields: no clear token of
    // anyone's (every one is sealed), and the erased customer's sealed tokens open nowhere.
    let events = replay_with_sensitive_fields(&s).await;
    let text = serde_json::to_string(&events).unwrap();
    for clear in [&erased_token, &kept_token, &in_flight_token] {
        assert!(!text.contains(clear.as_str()), "a clear token in the log");
    }
    for order in [paid, waiting] {
        let sealed = sealed_token_of(&events, order);
        assert_eq!(
            open_as(&s, Identity::PAYMENTS, order, &sealed).await,
            Ok(OpenAnswer::Erased),
            "orders opens nothing of an erased customer"
        );
    }
    // The other customer's token still opens, for payments only: the orchestrator carries
    // the sealed token in its saga but may not ask for it to be opened.
    let sealed = sealed_token_of(&events, other);
    assert_eq!(
        open_as(&s, Identity::PAYMENTS, other, &sealed).await,
        Ok(OpenAnswer::Token(kept_token.clone()))
    );
    for identity in [
        Identity::ORCHESTRATOR,
        Identity::GATEWAY,
        Identity::PROJECTIONS,
    ] {
        let answer = open_as(&s, identity, other, &sealed).await;
        assert!(
            answer.is_err(),
            "{identity:?} may not open a token: {answer:?}"
        );
    }
    // The sagas stream holds the sealed token too, never the clear one.
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "streamshop.sagas.SagaStarted.v1")
        .collect();
    assert_eq!(started.len(), 3);
    for saga in started {
        let token = saga["data"]["payment_token"].as_str().unwrap();
        assert!(service_kit::sealing::is_sealed(token), "{saga}");
    }
    let keys = s
        .orders
        .count(&format!(
            "SELECT count(*) FROM customer_keys WHERE customer_id = '{erased}' AND wrapped IS NOT NULL"
        ))
        .await;
    assert_eq!(keys, 0, "the erased customer's key is gone");

    // Every event still folds: every projection rebuilds from the start of the log, and the
    // streams, the event stores and the read models agree.
    let rebuilt = s.rebuild_projections().await;
    assert!(rebuilt.iter().all(|r| r.events > 0), "{rebuilt:?}");
    s.assert_consistent().await;
    let view = testkit::get_json(&format!("{}/customers/{erased}/orders", s.reads[1])).await;
    assert_eq!(
        view["items"].as_array().map(Vec::len),
        Some(2),
        "their orders are still in the read model: {view}"
    );
}
