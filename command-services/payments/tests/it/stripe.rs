//! The Stripe adapter against a real Stripe-compatible server (localstripe, started per test):
//! every payment command, declines, 3-D Secure, a refused capture, answers lost at each step
//! and resolved from the PaymentIntent, retries that never charge twice, and the circuit that
//! the provider's own timeouts open. After each, the server's records (listed through its
//! API) are compared with what the payment recorded.

use crate::common;

use common::{authorise, capture, refund};
use contracts::payments::{PaymentAnswer, VoidPayment};
use contracts::Reply;
use domain::payment::PaymentStatus;
use messaging::BoundedContext;
use testkit::stripe::LocalStripe;
use testkit::world::{post_command, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn start(world: &World, stripe: &LocalStripe) -> (String, CancellationToken) {
    let mut env = world.env();
    env.extend(stripe.env());
    env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "5000".into()));
    let settings = payments::settings(&service_kit::env::Env::from_pairs(env)).unwrap();
    let served = testkit::world::serve(payments::app(&settings).await.unwrap());
    world.serving(BoundedContext::Payments).await;
    served
}

/// What an intent's record says was captured: `amount_received`, or (localstripe leaves it
/// out) its charge's amount once captured.
fn captured_of(intent: &serde_json::Value) -> Option<i64> {
    intent["amount_received"].as_i64().or_else(|| {
        (intent["latest_charge"]["captured"] == true)
            .then(|| intent["latest_charge"]["amount"].as_i64())
            .flatten()
    })
}

/// The one PaymentIntent of `order` that was confirmed (ever charged or held money), with
/// the count of those that were not.
async fn confirmed_intent(stripe: &LocalStripe, order: Uuid) -> (serde_json::Value, usize) {
    let intents = stripe.intents_of(order).await;
    let (confirmed, never): (Vec<_>, Vec<_>) = intents
        .into_iter()
        .partition(|pi| pi["status"] != "requires_confirmation");
    assert_eq!(
        confirmed.len(),
        1,
        "one authorisation per order: {confirmed:#?}"
    );
    (confirmed[0].clone(), never.len())
}

fn accepted(reply: &Reply<PaymentAnswer>) -> &PaymentAnswer {
    reply
        .accepted()
        .map(|(_, answer)| answer)
        .unwrap_or_else(|| panic!("accepted, not {reply:?}"))
}

#[tokio::test]
async fn every_payment_command_goes_through_stripe_and_its_records_match() {
    let world = World::new("payments").await;
    let stripe = LocalStripe::start().await;
    let (base, shutdown) = start(&world, &stripe).await;

    // Paid, captured, refunded in two parts.
    let paid = Uuid::now_v7();
    let answer = accepted(
        &world
            .nats_send("auth-paid", &authorise(paid, "pm_card_visa", 2500))
            .await,
    )
    .clone();
    assert_eq!(
        (answer.payment_status, answer.authorised),
        (PaymentStatus::Authorised, 2500)
    );
    let (intent, _) = confirmed_intent(&stripe, paid).await;
    assert_eq!(
        (intent["status"].as_str(), intent["amount"].as_i64()),
        (Some("requires_capture"), Some(2500))
    );
    assert_eq!(intent["capture_method"], "manual");
    assert_eq!(intent["currency"], "eur");
    assert_eq!(
        accepted(&world.nats_send("cap-paid", &capture(paid, 2500)).await).captured,
        2500
    );
    let r1 = post_command(&base, &refund(paid, 1000), None).await;
    assert_eq!(r1.status, 202, "{r1:?}");
    let r2 = world.nats_send("ref-paid-2", &refund(paid, 500)).await;
    assert_eq!(accepted(&r2).refunded, 1500);
    let (intent, _) = confirmed_intent(&stripe, paid).await;
    assert_eq!(
        (intent["status"].as_str(), captured_of(&intent)),
        (Some("succeeded"), Some(2500))
    );
    let id = intent["id"].as_str().unwrap();
    let mut refunded: Vec<i64> = stripe
        .refunds_of(id)
        .await
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    refunded.sort();
    assert_eq!(refunded, vec![500, 1000], "the server's refunds");
    let state: domain::payment::Payment = world.aggregate(&paid.to_string()).await;
    assert_eq!(state.reference.as_deref(), Some(id));

    // Declined by the card: an answer, recorded; the intent awaits another card.
    let declined = Uuid::now_v7();
    let answer = accepted(
        &world
            .nats_send(
                "auth-declined",
                &authorise(declined, "pm_card_chargeCustomerFail", 900),
            )
            .await,
    )
    .clone();
    assert_eq!(
        (answer.payment_status, answer.decline_reason.as_deref()),
        (PaymentStatus::Declined, Some("card_declined"))
    );
    let (intent, _) = confirmed_intent(&stripe, declined).await;
    assert_eq!(intent["status"], "requires_payment_method");

    // A token that names no PaymentMethod: declined, and nothing held.
    let unknown = Uuid::now_v7();
    let answer = accepted(
        &world
            .nats_send("auth-unknown", &authorise(unknown, "pm_nosuchmethod", 900))
            .await,
    )
    .clone();
    assert_eq!(answer.payment_status, PaymentStatus::Declined, "{answer:?}");
    assert!(stripe.intents_of(unknown).await.is_empty());

    // Voided: the intent is cancelled.
    let voided = Uuid::now_v7();
    accepted(
        &world
            .nats_send("auth-void", &authorise(voided, "pm_card_visa", 700))
            .await,
    );
    let void = VoidPayment { order_id: voided };
    assert_eq!(
        accepted(&world.nats_send("void-1", &void).await).payment_status,
        PaymentStatus::Voided
    );
    let (intent, _) = confirmed_intent(&stripe, voided).await;
    assert_eq!(intent["status"], "canceled");

    // Cancelled behind the service's back: its capture is refused for good, nothing stored.
    let refused = Uuid::now_v7();
    accepted(
        &world
            .nats_send("auth-refused", &authorise(refused, "pm_card_visa", 400))
            .await,
    );
    let (intent, _) = confirmed_intent(&stripe, refused).await;
    stripe
        .post(
            &format!(
                "/v1/payment_intents/{}/cancel",
                intent["id"].as_str().unwrap()
            ),
            &[],
        )
        .await;
    let answer = world.nats_send("cap-refused", &capture(refused, 400)).await;
    assert!(
        matches!(&answer, Reply::Rejected { reason, retryable: false, .. } if reason == "provider_refused"),
        "{answer:?}"
    );
    let state: domain::payment::Payment = world.aggregate(&refused.to_string()).await;
    assert_eq!(state.captured, None);

    // 3-D Secure asked for: declined until orders can wait for the customer, intent cancelled.
    let card = stripe
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4000000000003220"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        )
        .await;
    let secure = Uuid::now_v7();
    let answer = accepted(
        &world
            .nats_send(
                "auth-3ds",
                &authorise(secure, card["id"].as_str().unwrap(), 1200),
            )
            .await,
    )
    .clone();
    assert_eq!(
        answer.decline_reason.as_deref(),
        Some("authentication_required")
    );
    let (intent, _) = confirmed_intent(&stripe, secure).await;
    assert_eq!(intent["status"], "canceled");
    shutdown.cancel();
}

#[tokio::test]
async fn an_answer_lost_at_each_step_is_resolved_from_the_intent_and_never_charges_twice() {
    let world = World::new("payments").await;
    let stripe = LocalStripe::start().await;
    let mut env: Vec<(&'static str, String)> = stripe.env().into();
    env.push(("PAYMENT_PROVIDER_TIMEOUT_MS", "5000".into()));
    // The first answer of each call is dropped after the server acted on it.
    env.push((
        "FAILPOINTS",
        [
            "stripe.lose.create@1:refuse",
            "stripe.lose.confirm@1:refuse",
            "stripe.lose.capture@1:refuse",
            "stripe.lose.refund@1:refuse",
            "stripe.lose.cancel@1:refuse",
        ]
        .join(","),
    ));
    let extra: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _process = world
        .start_process(std::path::Path::new(env!("CARGO_BIN_EXE_payments")), &extra)
        .await;

    /// Sends `command` under one command id until it is accepted, as the saga does.
    async fn until_accepted<C>(world: &World, id: &str, command: &C, losses: usize) -> PaymentAnswer
    where
        C: contracts::Command<Answer = PaymentAnswer>,
    {
        for _ in 0..losses {
            let lost = world.nats_send(id, command).await;
            assert!(
                matches!(&lost, Reply::Rejected { retryable: true, reason, .. } if reason == "provider_timeout"),
                "a lost answer is a retryable timeout: {lost:?}"
            );
        }
        accepted(&world.nats_send(id, command).await).clone()
    }

    let order = Uuid::now_v7();
    // The create's answer is lost (an intent is made but never confirmed), then the
    // confirm's (the intent holds the money): the third attempt reads it back.
    let answer = until_accepted(&world, "auth", &authorise(order, "pm_card_visa", 3000), 2).await;
    assert_eq!(answer.payment_status, PaymentStatus::Authorised);
    let (intent, unconfirmed) = confirmed_intent(&stripe, order).await;
    assert_eq!(intent["status"], "requires_capture");
    assert_eq!(unconfirmed, 1, "the lost create's intent holds nothing");

    let answer = until_accepted(&world, "cap", &capture(order, 3000), 1).await;
    assert_eq!(answer.captured, 3000);
    let (intent, _) = confirmed_intent(&stripe, order).await;
    assert_eq!(
        (intent["status"].as_str(), captured_of(&intent)),
        (Some("succeeded"), Some(3000))
    );

    let answer = until_accepted(&world, "ref", &refund(order, 1200), 1).await;
    assert_eq!(answer.refunded, 1200);
    let refunds = stripe.refunds_of(intent["id"].as_str().unwrap()).await;
    assert_eq!(refunds.len(), 1, "one refund, not two: {refunds:#?}");
    assert_eq!(refunds[0]["amount"], 1200);

    let held = Uuid::now_v7();
    until_accepted(
        &world,
        "auth-held",
        &authorise(held, "pm_card_visa", 800),
        0,
    )
    .await;
    let answer = until_accepted(&world, "void", &VoidPayment { order_id: held }, 1).await;
    assert_eq!(answer.payment_status, PaymentStatus::Voided);
    let (intent, _) = confirmed_intent(&stripe, held).await;
    assert_eq!(intent["status"], "canceled");
}

#[tokio::test]
async fn the_provider_s_own_timeouts_open_the_circuit_and_declines_do_not() {
    let world = World::new("payments").await;
    // A provider that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut env = world.env();
    env.extend([
        ("PAYMENT_PROVIDER", "stripe".to_owned()),
        ("STRIPE_API_BASE", silent_url),
        ("STRIPE_SECRET_KEY", "sk_test_silent".to_owned()),
        ("PAYMENT_PROVIDER_TIMEOUT_MS", "200".to_owned()),
        ("PAYMENT_PROVIDER_CIRCUIT_FAILURES", "3".to_owned()),
        ("PAYMENT_PROVIDER_CIRCUIT_OPEN_MS", "60000".to_owned()),
    ]);
    let settings = payments::settings(&service_kit::env::Env::from_pairs(env)).unwrap();
    let (_base, shutdown) = testkit::world::serve(payments::app(&settings).await.unwrap());
    world.serving(BoundedContext::Payments).await;
    for n in 0..3 {
        let answer = world
            .nats_send(
                &format!("t-{n}"),
                &authorise(Uuid::now_v7(), "pm_card_visa", 100),
            )
            .await;
        assert_eq!(answer.reason(), Some("provider_timeout"), "{answer:?}");
    }
    // Open: answered by the circuit, without asking the provider.
    let answer = world
        .nats_send("t-open", &authorise(Uuid::now_v7(), "pm_card_visa", 100))
        .await;
    assert!(
        matches!(&answer, Reply::Rejected { reason, retryable: true, message } if reason == "provider_unavailable" && message.contains("circuit is open")),
        "{answer:?}"
    );
    shutdown.cancel();
}

/// A Stripe event about `object`, signed with `secret` at `t` as Stripe signs.
fn signed_event(
    secret: &str,
    t: i64,
    id: &str,
    kind: &str,
    object: &serde_json::Value,
) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id,
        "object": "event",
        "type": kind,
        "data": {"object": object},
    }))
    .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&body);
    let hex: String = ring::hmac::sign(&key, &signed)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (body, format!("t={t},v1={hex}"))
}

async fn deliver(base: &str, body: Vec<u8>, signature: &str) -> (u16, serde_json::Value) {
    let response = testkit::http()
        .post(format!("{base}{}", payments::webhook::PATH))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn signed_webhooks_bring_in_what_happened_out_of_band_once_and_forgeries_are_refused() {
    let world = World::new("payments").await;
    let stripe = LocalStripe::start().await;
    let secret = format!("whsec_{}", Uuid::new_v4().simple());
    let mut env = world.env();
    env.extend(stripe.env());
    env.push(("STRIPE_WEBHOOK_SECRET", secret.clone()));
    let settings = payments::settings(&service_kit::env::Env::from_pairs(env)).unwrap();
    let (base, shutdown) = testkit::world::serve(payments::app(&settings).await.unwrap());
    world.serving(BoundedContext::Payments).await;

    let order = Uuid::now_v7();
    accepted(
        &world
            .nats_send("auth-hook", &authorise(order, "pm_card_visa", 1800))
            .await,
    );
    let (intent, _) = confirmed_intent(&stripe, order).await;
    let id = intent["id"].as_str().unwrap().to_owned();
    // Captured in Stripe's dashboard, say: the service did not ask.
    stripe
        .post(&format!("/v1/payment_intents/{id}/capture"), &[])
        .await;
    let succeeded = stripe
        .get(&format!("/v1/payment_intents/{id}"))
        .await
        .unwrap();
    assert_eq!(succeeded["status"], "succeeded");
    let now = chrono::Utc::now().timestamp();

    // Forgeries first: nothing changes.
    let (body, signature) = signed_event(
        &secret,
        now,
        "evt_1",
        "payment_intent.succeeded",
        &succeeded,
    );
    let (status, problem) = deliver(&base, body.clone(), &signature.replace("v1=", "v1=0")).await;
    assert_eq!(status, 400, "{problem}");
    let (forged_body, _) =
        signed_event(&secret, now, "evt_1", "payment_intent.canceled", &succeeded);
    assert_eq!(
        deliver(&base, forged_body, &signature).await.0,
        400,
        "another body under the signature"
    );
    let (_, wrong_secret) = signed_event(
        "whsec_other",
        now,
        "evt_1",
        "payment_intent.succeeded",
        &succeeded,
    );
    assert_eq!(deliver(&base, body.clone(), &wrong_secret).await.0, 400);
    let (stale_body, stale) = signed_event(
        &secret,
        now - 600,
        "evt_1",
        "payment_intent.succeeded",
        &succeeded,
    );
    let (status, problem) = deliver(&base, stale_body, &stale).await;
    assert_eq!(
        status, 400,
        "a signature ten minutes old is a replay: {problem}"
    );
    let state: domain::payment::Payment = world.aggregate(&order.to_string()).await;
    assert_eq!(state.captured, None);

    // The real one: the capture becomes the payment's.
    let (status, answer) = deliver(&base, body.clone(), &signature).await;
    assert_eq!(
        (status, &answer["applied"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    let state: domain::payment::Payment = world.aggregate(&order.to_string()).await;
    assert_eq!(state.captured.map(|m| m.amount_minor), Some(1800));
    let events = world
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{order}'"
        ))
        .await;
    // Delivered again (Stripe retries until it hears 2xx): the first answer, nothing new.
    let (status, answer) = deliver(&base, body, &signature).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    // A new event that repeats known facts adds nothing either.
    let (body, signature) = signed_event(
        &secret,
        now,
        "evt_2",
        "payment_intent.succeeded",
        &succeeded,
    );
    assert_eq!(deliver(&base, body, &signature).await.0, 200);
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM events WHERE aggregate_id = '{order}'"
            ))
            .await,
        events
    );

    // Refunded out of band: charge.refunded names the intent; the recorded intent, the order.
    stripe
        .post("/v1/refunds", &[("payment_intent", &id), ("amount", "300")])
        .await;
    let charge_id = succeeded["latest_charge"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| succeeded["latest_charge"]["id"].as_str().map(str::to_owned))
        .expect("the intent's charge");
    let mut charge = stripe
        .get(&format!("/v1/charges/{charge_id}"))
        .await
        .unwrap();
    assert_eq!(charge["amount_refunded"], 300, "{charge}");
    // A charge's metadata does not name the order.
    charge["metadata"] = serde_json::json!({});
    let (body, signature) = signed_event(&secret, now, "evt_3", "charge.refunded", &charge);
    let (status, answer) = deliver(&base, body, &signature).await;
    assert_eq!(
        (status, &answer["applied"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    let state: domain::payment::Payment = world.aggregate(&order.to_string()).await;
    assert_eq!(state.refunded.map(|m| m.amount_minor), Some(300));

    // An event about no payment of ours is acknowledged and ignored.
    let stranger = serde_json::json!({"id": "pi_unknown", "object": "payment_intent", "amount": 5, "currency": "eur", "status": "succeeded", "amount_received": 5, "metadata": {}});
    let (body, signature) =
        signed_event(&secret, now, "evt_4", "payment_intent.succeeded", &stranger);
    let (status, answer) = deliver(&base, body, &signature).await;
    assert_eq!(
        (status, &answer["applied"]),
        (200, &serde_json::json!(false)),
        "{answer}"
    );
    shutdown.cancel();
}

#[test]
fn the_service_refuses_to_start_with_the_test_provider_unless_told_it_is_development() {
    let run = |extra: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_payments"))
            .env_clear()
            .env("TLS", "off")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .envs(extra.iter().copied())
            .output()
            .expect("run the payments binary")
    };
    let refused = run(&[("PAYMENT_PROVIDER", "test")]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("PAYMENT_PROVIDER") && stderr.contains("ALLOW_TEST_PAYMENT_PROVIDER"),
        "a clear error: {stderr}"
    );
    // Stripe, the default, without its key: refused as clearly.
    let keyless = run(&[]);
    assert!(!keyless.status.success());
    let stderr = String::from_utf8_lossy(&keyless.stderr);
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
}
