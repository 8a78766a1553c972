//! The attacks of a client inside the network, against the real stack on a NATS server that
//! enforces every identity's permissions: none of them does harm any more.
//!
//! The attacker holds a real identity's key (a compromised service, or a stolen key), or none.

use std::time::Duration;

use contracts::payments::PaymentAnswer;
use contracts::{Command, Reply};
use futures::StreamExt;
use messaging::{BoundedContext, Envelope, Identity};
use serde_json::json;
use testkit::stack::Stack;
use uuid::Uuid;

/// How many messages the context's stream holds, as the administrator reads it.
async fn stored(s: &Stack, context: BoundedContext) -> u64 {
    s.orders
        .js
        .get_stream(s.orders.ns.stream(context))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Publishes `payload` on `subject` through JetStream as `identity`; whether the stream
/// stored it (a denied publish is never acknowledged).
async fn publish_as(identity: Identity, subject: String, payload: Vec<u8>) -> bool {
    let js = async_nats::jetstream::new(testkit::nats_as(Some(identity)).await);
    let Ok(ack) = js.publish(subject, payload.into()).await else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), ack).await,
        Ok(Ok(_))
    )
}

/// Connect options over TLS with a real certificate of the local CA (the operators'), so a
/// refusal below is about the login, not the certificate.
fn certified(options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
    match testkit::tls_as("operator") {
        Some(tls) => messaging::settings::with_tls(options, &tls).unwrap(),
        None => options,
    }
}

#[tokio::test]
async fn an_anonymous_client_is_refused() {
    let url = &testkit::infra().nats_url;
    assert!(
        async_nats::connect(url).await.is_err(),
        "a client with neither certificate nor credentials must not connect"
    );
    let anonymous = certified(async_nats::ConnectOptions::new())
        .connect(url)
        .await;
    assert!(
        matches!(&anonymous, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
        "a client without credentials must not connect, even with a certificate: {anonymous:?}"
    );
    // A key the server does not know, and the analysts' user with a wrong password.
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let unknown = certified(async_nats::ConnectOptions::with_nkey(stranger))
        .connect(url)
        .await;
    assert!(
        matches!(&unknown, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
        "an unknown key must not connect: {unknown:?}"
    );
    let guessed = certified(async_nats::ConnectOptions::with_user_and_password(
        "analyst".into(),
        "guess".into(),
    ))
    .connect(url)
    .await;
    assert!(guessed.is_err(), "a wrong password must not connect");
}

#[tokio::test]
async fn no_identity_but_a_contexts_own_publishes_its_events() {
    let s = Stack::start(3).await;
    s.product("FORGE-1", 5).await;
    let order = s.place(&[("FORGE-1", 1)], "tok_ok").await;
    s.finished(order).await;
    let before = stored(&s, BoundedContext::Orders).await;

    // A valid-looking OrderConfirmed (with a sequence far ahead, and one just ahead) from
    // every identity that is not the orders service.
    let subject =
        s.orders
            .ns
            .event_subject(BoundedContext::Orders, &order.to_string(), "OrderConfirmed");
    for sequence in [1_000_000_000u64, before + 1] {
        let forged = Envelope::from_stored(&messaging::envelope::StoredEvent {
            context: BoundedContext::Orders,
            aggregate_type: "Order".into(),
            aggregate_id: order.to_string(),
            sequence,
            event_type: "OrderConfirmed".into(),
            event_version: "1".into(),
            payload: json!({"OrderConfirmed": {"order_id": order}}),
            correlation_id: None,
            causation_id: None,
            recorded_at: chrono::Utc::now(),
        });
        for attacker in Identity::ALL.into_iter().filter(|i| *i != Identity::Orders) {
            if attacker == Identity::Analyst {
                continue; // logs in with a password, below
            }
            assert!(
                !publish_as(attacker, subject.clone(), forged.to_vec()).await,
                "{attacker:?} published an orders event"
            );
        }
    }
    assert_eq!(
        stored(&s, BoundedContext::Orders).await,
        before,
        "nothing forged was stored"
    );
}

#[tokio::test]
async fn a_forged_authorisation_cannot_pay_for_a_declined_order() {
    let s = Stack::start(3).await;
    s.product("FORGE-2", 5).await;
    // The attacker listens where payments takes its commands and answers first, as a
    // compromised inventory service would try to.
    let attacker = testkit::nats_as(Some(Identity::Inventory)).await;
    let subject = s.orders.ns.command_subject(
        BoundedContext::Payments,
        contracts::payments::AuthorisePayment::NAME,
    );
    let mut stolen = attacker.subscribe(subject).await.unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listening = tokio::spawn({
        let (attacker, answered) = (attacker.clone(), answered.clone());
        async move {
            while let Some(request) = stolen.next().await {
                let forged: Reply<PaymentAnswer> = Reply::Accepted {
                    aggregate_id: "forged".into(),
                    version: 1,
                    data: serde_json::from_value(json!({
                        "payment_status": "authorised",
                        "authorised": 250, "captured": 0, "refunded": 0
                    }))
                    .unwrap(),
                    replayed: false,
                };
                if let Some(reply) = request.reply {
                    let _ = attacker
                        .publish(reply, serde_json::to_vec(&forged).unwrap().into())
                        .await;
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });
    let order = s.place(&[("FORGE-2", 1)], "tok_decline").await;
    let saga = s.finished(order).await;
    listening.abort();
    assert_eq!(saga["outcome"], "rejected", "{saga}");
    assert_eq!(saga["compensation"]["rejected"], "payment_declined");
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the attacker never saw the command"
    );
}

#[tokio::test]
async fn only_the_orchestrator_sends_saga_commands() {
    let s = Stack::start(3).await;
    s.product("FORGE-3", 5).await;
    let order = s.place(&[("FORGE-3", 1)], "tok_timeout").await;
    // An identity that may not send commands asks orders to confirm the unpaid order (and
    // would pre-empt a saga's command id if it could).
    for attacker in [
        Identity::Gateway,
        Identity::Inventory,
        Identity::Projections,
    ] {
        let client = testkit::nats_as(Some(attacker)).await;
        let subject = s.orders.ns.command_subject(
            BoundedContext::Orders,
            contracts::orders::ConfirmOrder::NAME,
        );
        let body = json!({"command_id": Uuid::new_v4().to_string(), "order_id": order});
        let asked = tokio::time::timeout(
            Duration::from_secs(3),
            client.request(subject, serde_json::to_vec(&body).unwrap().into()),
        )
        .await;
        assert!(
            !matches!(asked, Ok(Ok(_))),
            "{attacker:?} had a command answered"
        );
    }
    let saga = s.finished(order).await;
    assert_ne!(saga["outcome"], "confirmed", "{saga}");
}

#[tokio::test]
async fn the_analysts_read_the_streams_and_can_write_nothing() {
    let s = Stack::start(3).await;
    s.product("FORGE-4", 5).await;
    let url = testkit::nats_analyst_url();
    let mut options = messaging::settings::options_for(&url)
        .custom_inbox_prefix(Identity::Analyst.inbox_prefix());
    if let Some(tls) = testkit::tls_as("analyst") {
        options = messaging::settings::with_tls(options, &tls).unwrap();
    }
    let analyst = options
        .connect(&url)
        .await
        .expect("the analysts log in with their password");
    let js = async_nats::jetstream::new(analyst);
    let stream = js
        .get_stream(s.orders.ns.stream(BoundedContext::Inventory))
        .await
        .expect("the analysts read the streams");
    assert!(stream.cached_info().state.messages >= 1);
    let before = stored(&s, BoundedContext::Inventory).await;
    let subject =
        s.orders
            .ns
            .event_subject(BoundedContext::Inventory, "FORGE-4", "ProductRestocked");
    if let Ok(ack) = js.publish(subject, b"{}".to_vec().into()).await {
        assert!(
            tokio::time::timeout(Duration::from_secs(3), ack)
                .await
                .map_or(true, |a| a.is_err()),
            "the analysts' publish was stored"
        );
    }
    assert!(
        tokio::time::timeout(
            Duration::from_secs(3),
            js.delete_stream(s.orders.ns.stream(BoundedContext::Inventory))
        )
        .await
        .map_or(true, |r| r.is_err()),
        "the analysts deleted a stream"
    );
    assert_eq!(stored(&s, BoundedContext::Inventory).await, before);
}
