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
    let before = s.stored(BoundedContext::Orders).await;

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
        for attacker in Identity::all()
            .into_iter()
            .filter(|i| *i != Identity::ORDERS)
        {
            if attacker == Identity::ANALYST {
                continue; // logs in with a password, below
            }
            assert!(
                !publish_as(attacker, subject.clone(), forged.to_vec()).await,
                "{attacker:?} published an orders event"
            );
        }
    }
    assert_eq!(
        s.stored(BoundedContext::Orders).await,
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
    let attacker = testkit::nats_as(Some(Identity::INVENTORY)).await;
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
        Identity::GATEWAY,
        Identity::INVENTORY,
        Identity::PROJECTIONS,
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
        .custom_inbox_prefix(Identity::ANALYST.inbox_prefix());
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
    let before = s.stored(BoundedContext::Inventory).await;
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
    assert_eq!(s.stored(BoundedContext::Inventory).await, before);
}

/// A connection to `url` as `identity` (the administrator for `None`; the analysts by
/// `password`), with its own reply prefix and certificate, reporting every permission
/// violation the server sends it.
async fn login(
    url: &str,
    identity: Option<Identity>,
    password: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let name = identity.map_or("admin", Identity::name);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut options = match identity {
        Some(Identity::ANALYST) => {
            async_nats::ConnectOptions::with_user_and_password("analyst".into(), password.into())
        }
        _ => {
            let keys = testkit::infra().nats_credentials.clone().unwrap();
            async_nats::ConnectOptions::with_nkey(
                messaging::settings::seed_in(&keys, name).unwrap(),
            )
        }
    }
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(e)) = event {
                let _ = tx.send(e);
            }
        }
    });
    if let Some(identity) = identity {
        options = options.custom_inbox_prefix(identity.inbox_prefix());
    }
    if let Some(tls) = testkit::tls_as(identity.map_or("operator", Identity::name)) {
        options = messaging::settings::with_tls(options, &tls).unwrap();
    }
    let client = messaging::settings::connect_to(options, url)
        .await
        .unwrap_or_else(|e| panic!("{name} logs in: {e}"));
    (client, rx)
}

/// Every JetStream API subject, for each stream and for each consumer name that matters: the
/// durables on that stream, a reader's, and one nobody uses.
fn jetstream_api() -> Vec<String> {
    let mut all = vec![
        "$JS.API.INFO".to_owned(),
        "$JS.API.STREAM.NAMES".to_owned(),
        "$JS.API.STREAM.LIST".to_owned(),
        "$JS.API.META.LEADER.STEPDOWN".to_owned(),
        "$JS.API.SERVER.REMOVE".to_owned(),
        "$JS.API.ACCOUNT.PURGE.ACC".to_owned(),
    ];
    for context in BoundedContext::ALL {
        let s = context.stream_base();
        for op in [
            "CREATE",
            "UPDATE",
            "DELETE",
            "INFO",
            "PURGE",
            "MSG.GET",
            "MSG.DELETE",
            "SNAPSHOT",
            "RESTORE",
            "PEER.REMOVE",
            "LEADER.STEPDOWN",
        ] {
            all.push(format!("$JS.API.STREAM.{op}.{s}"));
        }
        all.extend([
            format!("$JS.API.DIRECT.GET.{s}"),
            format!("$JS.API.DIRECT.GET.{s}.events.x.y"),
            format!("$JS.API.CONSUMER.CREATE.{s}"),
            format!("$JS.API.CONSUMER.LIST.{s}"),
            format!("$JS.API.CONSUMER.NAMES.{s}"),
        ]);
        let mut names: Vec<String> = messaging::durables::on(context).map(|d| d.name).collect();
        names.extend([
            "analyst_1".to_owned(),
            "gateway_1".to_owned(),
            "x".to_owned(),
        ]);
        for c in names {
            for op in [
                "CREATE",
                "INFO",
                "DELETE",
                "MSG.NEXT",
                "LEADER.STEPDOWN",
                "PAUSE",
                "UNPIN",
            ] {
                all.push(format!("$JS.API.CONSUMER.{op}.{s}.{c}"));
            }
            all.extend([
                format!("$JS.API.CONSUMER.CREATE.{s}.{c}.events.x.y"),
                format!("$JS.API.CONSUMER.DURABLE.CREATE.{s}.{c}"),
                format!("$JS.ACK.{s}.{c}.1.1.1.1.0"),
                format!("$JS.FC.{s}.{c}.x"),
            ]);
        }
    }
    all
}

/// What each identity may use of the JetStream API, said here in words of the design rather
/// than read from `messaging::identity`, so the test checks the code against the intent.
fn may(identity: Identity, subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    if subject == "$JS.API.INFO" {
        return true;
    }
    let stream_of = |s: &str| {
        BoundedContext::ALL
            .into_iter()
            .find(|c| c.stream_base() == s)
    };
    let durable = |context: BoundedContext, name: &str| {
        messaging::durables::on(context).find(|d| d.name == name)
    };
    match tokens.as_slice() {
        // A context's service makes and checks its own stream; nothing else of streams.
        ["$JS", "API", "STREAM", op @ ("CREATE" | "INFO"), s] => {
            let context = stream_of(s).unwrap();
            let owner = Identity::of_context(context) == identity;
            let reader = *op == "INFO"
                && match identity {
                    Identity::ORCHESTRATOR => context != BoundedContext::Sagas,
                    Identity::NOTIFICATIONS => context == BoundedContext::Orders,
                    Identity::PROJECTIONS | Identity::ANALYST => true,
                    Identity::GATEWAY => {
                        matches!(context, BoundedContext::Orders | BoundedContext::Sagas)
                    }
                    _ => false,
                };
            owner || reader
        }
        ["$JS", "API", "STREAM", "NAMES" | "LIST"] => identity == Identity::ANALYST,
        // Readers look single messages up.
        ["$JS", "API", "STREAM", "MSG", "GET", s] | ["$JS", "API", "DIRECT", "GET", s, ..] => {
            reads(identity, stream_of(s).unwrap())
        }
        // A durable's owner alone creates, reads, acknowledges, restores it; readers use
        // any other name, never the one the server would take from the body.
        ["$JS", "API", "CONSUMER", ..] => {
            let consumer_op = ["CREATE", "INFO", "DELETE", "MSG.NEXT"]
                .into_iter()
                .find_map(|op| {
                    subject
                        .strip_prefix(&format!("$JS.API.CONSUMER.{op}."))
                        .map(|rest| (op, rest))
                });
            let Some((op, rest)) = consumer_op else {
                return false;
            };
            let parts: Vec<&str> = rest.splitn(3, '.').collect();
            // The stream and a name: a filter may follow a creation only.
            let [s, c, more @ ..] = parts.as_slice() else {
                return false;
            };
            if !more.is_empty() && op != "CREATE" {
                return false;
            }
            let context = stream_of(s).unwrap();
            match durable(context, c) {
                Some(d) => d.owner == identity,
                None => reads(identity, context),
            }
        }
        ["$JS", "ACK", s, c, ..] => {
            durable(stream_of(s).unwrap(), c).is_some_and(|d| d.owner == identity)
        }
        // Flow control answers a push consumer's deliveries: readers, on their own.
        ["$JS", "FC", s, c, ..] => {
            let context = stream_of(s).unwrap();
            durable(context, c).is_none() && reads(identity, context)
        }
        _ => false,
    }
}

/// Whether `identity` reads `context`'s stream with ordered consumers.
fn reads(identity: Identity, context: BoundedContext) -> bool {
    match identity {
        Identity::ANALYST => true,
        Identity::GATEWAY => matches!(context, BoundedContext::Orders | BoundedContext::Sagas),
        _ => false,
    }
}

/// On a deployment's server (the streams named as in production), every identity sends
/// every JetStream API subject it may not use, and the server refuses each one: deleting,
/// pulling from, re-filtering or stepping down another identity's durable, naming a consumer
/// in the request's body, listing consumers, touching a stream it does not own. The
/// durables are unchanged afterwards.
#[tokio::test]
async fn every_identity_is_refused_every_jetstream_api_subject_it_may_not_use() {
    use async_nats::jetstream::consumer::pull;
    let password = Uuid::new_v4().simple().to_string();
    let nats = testkit::private::PrivateNats::start_deployment(&password).await;
    let url = nats.url();
    let ns = messaging::Namespace::default();

    // The streams, made by their services, and every durable, made by its owner.
    for context in BoundedContext::ALL {
        let (client, _) = login(&url, Some(Identity::of_context(context)), "").await;
        messaging::streams::ensure_stream(
            &async_nats::jetstream::new(client),
            &ns,
            context,
            &Default::default(),
        )
        .await
        .unwrap();
    }
    for durable in messaging::durables::all() {
        let (client, _) = login(&url, Some(durable.owner), "").await;
        let stream = async_nats::jetstream::new(client)
            .get_stream(ns.stream(durable.context))
            .await
            .unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some(durable.name.clone()),
                filter_subject: ns.events_filter(durable.context),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{:?} makes {}: {e}", durable.owner, durable.name));
    }
    let (admin, _) = login(&url, None, "").await;
    let admin = async_nats::jetstream::new(admin);
    let before = durable_configs(&admin, &ns).await;

    let api = jetstream_api();
    for identity in Identity::all() {
        let (client, mut violations) = login(&url, Some(identity), &password).await;
        let refused: Vec<&String> = api.iter().filter(|s| !may(identity, s)).collect();
        assert!(!refused.is_empty());
        let inbox = format!("{}.test", identity.inbox_prefix());
        let mut reported = std::collections::HashSet::new();
        // In small groups: the client keeps at most 128 unread server errors.
        for group in refused.chunks(50) {
            for subject in group {
                client
                    .publish_with_reply((*subject).clone(), inbox.clone(), "x".into())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !group.iter().all(|s| reported.contains(s.as_str())) {
                let Ok(Some(error)) = tokio::time::timeout_at(deadline, violations.recv()).await
                else {
                    break;
                };
                if let Some(subject) = error
                    .split_once("Publish to \"")
                    .and_then(|(_, rest)| rest.split('"').next())
                {
                    reported.insert(subject.to_owned());
                }
            }
        }
        let missed: Vec<&&String> = refused
            .iter()
            .filter(|s| !reported.contains(s.as_str()))
            .collect();
        assert!(
            missed.is_empty(),
            "{identity:?} was not refused {} subjects it may not use: {missed:#?}",
            missed.len()
        );
        // What it may use answers (so the refusals above are the permissions, not silence).
        let info = client
            .request("$JS.API.INFO", "".into())
            .await
            .unwrap_or_else(|e| panic!("{identity:?} asks $JS.API.INFO: {e}"));
        assert!(!info.payload.is_empty());
    }
    assert_eq!(
        durable_configs(&admin, &ns).await,
        before,
        "every durable is as its owner made it"
    );
}

/// Every durable's name, filter and push/pull kind, as the administrator reads them.
async fn durable_configs(
    admin: &async_nats::jetstream::Context,
    ns: &messaging::Namespace,
) -> Vec<(String, String, Option<String>)> {
    let mut all = Vec::new();
    for durable in messaging::durables::all() {
        let stream = admin.get_stream(ns.stream(durable.context)).await.unwrap();
        let info = stream.consumer_info(&durable.name).await.unwrap();
        all.push((
            info.name.clone(),
            info.config.filter_subject.clone(),
            info.config.deliver_subject.clone(),
        ));
    }
    all
}

/// The orchestrator's `/readyz`: its status and what its consumer check on `stream` says.
async fn consumer_readiness(s: &Stack, stream: &str) -> (u16, String) {
    let r = testkit::get(format!("{}/readyz", s.urls[3])).await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let check = body["checks"][format!("consumer:orchestrator:{stream}")]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, check)
}

/// What one request of the analysts did on a28c6f9 (no reader may now), done by the
/// administrator: the orchestrator's consumer on ORDERS deleted, then re-filtered to see
/// nothing, then its stream deleted and made again. The orchestrator notices each, is unready
/// while its consumer cannot be restored, and every order placed afterwards is confirmed.
#[tokio::test]
async fn the_orchestrator_restores_a_consumer_deleted_or_changed_behind_its_back() {
    let s = Stack::start(3).await;
    s.product("KEEP-1", 10).await;
    let first = s.place(&[("KEEP-1", 1)], "tok_ok").await;
    assert_eq!(s.finished(first).await["outcome"], "confirmed");
    let admin = async_nats::jetstream::new(testkit::nats_as(None).await);
    let name = s.orders.ns.stream(BoundedContext::Orders);
    let orders = admin.get_stream(&name).await.unwrap();

    orders
        .delete_consumer(messaging::durables::ORCHESTRATOR)
        .await
        .unwrap();
    let second = s.place(&[("KEEP-1", 1)], "tok_ok").await;
    assert_eq!(
        s.finished(second).await["outcome"],
        "confirmed",
        "after a delete"
    );

    let mut changed = orders
        .clone()
        .consumer_info(messaging::durables::ORCHESTRATOR)
        .await
        .unwrap()
        .config
        .clone();
    changed.filter_subject = format!("{}.events.orders.nothing.>", s.orders.ns.as_str());
    orders.update_consumer(changed).await.unwrap();
    let third = s.place(&[("KEEP-1", 1)], "tok_ok").await;
    assert_eq!(
        s.finished(third).await["outcome"],
        "confirmed",
        "after a re-filter"
    );

    admin.delete_stream(&name).await.unwrap();
    testkit::eventually(
        Duration::from_secs(20),
        "the orchestrator to be unready",
        || async {
            let (status, check) = consumer_readiness(&s, &name).await;
            (status == 503 && check.starts_with("error")).then_some(())
        },
    )
    .await;
    messaging::streams::ensure_stream(
        &admin,
        &s.orders.ns,
        BoundedContext::Orders,
        &Default::default(),
    )
    .await
    .unwrap();
    testkit::eventually(
        Duration::from_secs(20),
        "the consumer to be restored",
        || async {
            let (status, check) = consumer_readiness(&s, &name).await;
            (status == 200 && check == "ok").then_some(())
        },
    )
    .await;
    let fourth = s.place(&[("KEEP-1", 1)], "tok_ok").await;
    assert_eq!(
        s.finished(fourth).await["outcome"],
        "confirmed",
        "on the stream made again"
    );
}
