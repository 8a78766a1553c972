//! The saga's payment paths through the Stripe adapter against a real Stripe-compatible server
//! (localstripe): paid, declined, refunded after confirmation, and a refused capture whose
//! authorisation is voided, with the provider's answer lost once at each step (create,
//! confirm, capture, cancel, refund: the server acted, the service heard nothing). Each ends as
//! it would have, with one authorisation per order, and the server's own records (listed
//! through its API) match the payment read model.
//!
//! The failpoints are process-wide, so this file holds one test, its orders one after another.

use contracts::payments::RefundPayment;
use domain::Currency;
use serde_json::Value;
use testkit::stack::{steps_failed, Options, Stack};
use testkit::stripe::LocalStripe;
use uuid::Uuid;

/// The intents the server holds for `order` that were confirmed (held or moved money), and
/// how many were never confirmed.
async fn intents(stripe: &LocalStripe, order: Uuid) -> (Vec<Value>, usize) {
    let all = stripe.intents_of(order).await;
    let (confirmed, never): (Vec<Value>, Vec<Value>) = all
        .into_iter()
        .partition(|pi| pi["status"] != "requires_confirmation");
    (confirmed, never.len())
}

/// What the server says was captured of an intent (localstripe leaves `amount_received` out:
/// its charge's amount once captured).
fn captured(intent: &Value) -> i64 {
    intent["amount_received"].as_i64().unwrap_or_else(|| {
        if intent["latest_charge"]["captured"] == true {
            intent["latest_charge"]["amount"].as_i64().unwrap_or(0)
        } else {
            0
        }
    })
}

/// The payment read model's row of `order`, once it shows `status`.
async fn payment_read(s: &Stack, order: Uuid, status: &str) -> Value {
    let url = format!("{}/payments/{order}", s.reads[1]);
    testkit::eventually(
        std::time::Duration::from_secs(30),
        "the payment read model",
        || async {
            let read = testkit::get_json(&url).await;
            (read["status"] == status).then_some(read)
        },
    )
    .await
}

#[tokio::test]
async fn every_payment_path_of_the_saga_goes_through_stripe_and_its_records_match_the_reads() {
    service_kit::failpoint::arm(
        "stripe.lose.create@1:refuse,stripe.lose.confirm@1:refuse,stripe.lose.capture@1:refuse,\
         stripe.lose.cancel@1:refuse,stripe.lose.refund@1:refuse,\
         nats.refuse.CapturePayment@3:refuse",
    );
    let stripe = LocalStripe::start().await;
    let s = Stack::start_with(Options {
        reads: true,
        business_deadline_secs: 60,
        payments_env: stripe.env().into(),
        ..Options::default()
    })
    .await;
    s.product("STRIPE-1", 10).await;

    // Paid: the answers of the create, the confirm and the capture are each lost once.
    let paid = s.place(&[("STRIPE-1", 2)], "pm_card_visa").await;
    let saga = s.finished(paid).await;
    assert_eq!(saga["outcome"], "confirmed", "{saga}");
    assert!(steps_failed(&saga, "authorise") >= 2, "{saga}");
    // Two capture commands: the lost one and its retry; the third (below) is refused.
    assert_eq!(steps_failed(&saga, "capture"), 1, "{saga}");
    let (confirmed, unconfirmed) = intents(&stripe, paid).await;
    assert_eq!(confirmed.len(), 1, "one authorisation: {confirmed:#?}");
    assert_eq!(unconfirmed, 1, "the lost create's intent, never confirmed");
    let intent = &confirmed[0];
    assert_eq!(
        (intent["status"].as_str(), captured(intent)),
        (Some("succeeded"), 500)
    );
    let read = payment_read(&s, paid, "captured").await;
    assert_eq!(
        (read["authorised"].as_i64(), read["captured"].as_i64()),
        (Some(500), Some(500)),
        "{read}"
    );

    // Declined by the card: rejected, nothing held.
    let declined = s
        .place(&[("STRIPE-1", 1)], "pm_card_chargeCustomerFail")
        .await;
    let saga = s.finished(declined).await;
    assert_eq!(saga["outcome"], "rejected", "{saga}");
    let (confirmed, _) = intents(&stripe, declined).await;
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0]["status"], "requires_payment_method");
    payment_read(&s, declined, "declined").await;

    // An operator refunds part of the paid order; the first answer is lost, and the same
    // request again (its Idempotency-Key) is answered without a second refund.
    let refund = RefundPayment {
        order_id: paid,
        amount: 200,
        currency: Currency::parse("EUR").unwrap(),
    };
    let lost = testkit::world::post_command(&s.urls[2], &refund, Some("refund-1")).await;
    assert_eq!(lost.status, 503, "{:?}", lost.body);
    let done = testkit::world::post_command(&s.urls[2], &refund, Some("refund-1")).await;
    assert_eq!(done.status, 202, "{:?}", done.body);
    let refunds: Vec<i64> = stripe
        .refunds_of(intent["id"].as_str().unwrap())
        .await
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(refunds, vec![200], "one refund at the server");
    let url = format!("{}/payments/{paid}", s.reads[1]);
    let read = testkit::eventually(
        std::time::Duration::from_secs(30),
        "the refund in the read model",
        || async {
            let read = testkit::get_json(&url).await;
            (read["refunded"].as_i64() == Some(200)).then_some(read)
        },
    )
    .await;
    assert_eq!(read["captured"].as_i64(), Some(500), "{read}");

    // The capture is refused for good: the saga voids the authorisation (the cancel's answer
    // lost once) and rejects the order.
    let refused = s.place(&[("STRIPE-1", 1)], "pm_card_visa").await;
    let saga = s.finished(refused).await;
    assert_eq!(saga["outcome"], "rejected", "{saga}");
    let (confirmed, _) = intents(&stripe, refused).await;
    assert_eq!(confirmed.len(), 1);
    assert_eq!(
        (confirmed[0]["status"].as_str(), captured(&confirmed[0])),
        (Some("canceled"), 0)
    );
    payment_read(&s, refused, "voided").await;
    s.assert_consistent().await;
}
