//! Order emails on the real stack, behind the gateway: a customer signs in at the real OpenID
//! provider (their token carries their address), orders, and the real SMTP sink (maildev)
//! receives exactly one email per outcome (confirmed, rejected, cancelled), naming the order
//! and its total, its HTML part valid (html-validate). A customer who turned emails off gets
//! none. An erased customer's address is sealed in the log and opens nowhere after the erase,
//! and they get no further email. A replica killed between the mail server taking an email and
//! recording it loses none: another sends it again, with the same message id.

use std::time::Duration;

use contracts::keys::OpenAnswer;
use messaging::{BoundedContext, Identity};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::front::Front;
use testkit::mail::{validate_html, MailSink, Received};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn sink(front: &Front) -> &MailSink {
    front.mail.as_ref().expect("the stack sends to a sink")
}

/// Places an order of `quantity` × `sku` as `token`'s customer; its id.
async fn order(front: &Front, token: &str, sku: &str, quantity: u32, card: &str) -> Uuid {
    let body = json!({"lines": [{"sku": sku, "quantity": quantity}], "payment_token": card});
    let (status, placed) = front
        .call(token, Method::POST, "/api/orders", Some(body))
        .await;
    assert_eq!(status, 202, "{placed}");
    placed["order_id"].as_str().unwrap().parse().unwrap()
}

/// The one email of `order` among `emails`.
fn about(emails: &[Received], order: Uuid) -> &Received {
    let of: Vec<&Received> = emails
        .iter()
        .filter(|m| m.text.contains(&order.to_string()))
        .collect();
    assert_eq!(of.len(), 1, "one email about {order}: {emails:#?}");
    of[0]
}

/// The notification service's database, as its owner.
async fn notifications_db(front: &Front) -> sqlx::PgPool {
    let db = front
        .stack
        .notifications_db
        .as_ref()
        .expect("notifications run");
    sqlx::PgPool::connect(&db.owner).await.unwrap()
}

/// The stack sending its emails to a sink, with 50 of `sku` at `unit_price`; the operator's
/// token.
async fn shop_selling(sku: &str, unit_price: i64) -> (Front, String) {
    let front = Front::start_mailing(&[]).await;
    let admin = front.oidc.admin_token().await;
    let product = json!({"sku": sku, "name": "Mug", "unit_price": unit_price, "currency": "EUR", "initial_stock": 50});
    let (status, body) = front
        .call(&admin, Method::POST, "/api/products", Some(product))
        .await;
    assert_eq!(status, 202, "{body}");
    (front, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_outcome_sends_one_email_and_a_customer_may_turn_them_off() {
    let (front, admin) = shop_selling("MAIL-1", 1250).await;

    let (ada, quiet) = (Uuid::now_v7(), Uuid::now_v7());
    let address = format!("ada.{}@shop-customers.example", ada.simple());
    let token = front.oidc.customer_token_with_email(ada, &address).await;
    let quiet_token = front.oidc.customer_token(quiet).await;
    let quiet_address = format!("{quiet}@customers.example");

    // Turning emails off is the customer's own: operators have no /api/me.
    let (status, prefs) = front
        .call(&quiet_token, Method::GET, "/api/me/notifications", None)
        .await;
    assert_eq!((status, &prefs["email"]), (200, &json!(true)), "{prefs}");
    let (status, prefs) = front
        .call(
            &quiet_token,
            Method::PUT,
            "/api/me/notifications",
            Some(json!({"email": false})),
        )
        .await;
    assert_eq!((status, &prefs["email"]), (200, &json!(false)), "{prefs}");
    let (status, refused) = front
        .call(
            &quiet_token,
            Method::PUT,
            "/api/me/notifications",
            Some(json!({"email": "no"})),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    let (status, _) = front
        .call(&admin, Method::GET, "/api/me/notifications", None)
        .await;
    assert_eq!(status, 403);

    // Confirmed: 2 × 12.50 EUR.
    let quiet_order = order(&front, &quiet_token, "MAIL-1", 1, "tok_ok").await;
    let confirmed = order(&front, &token, "MAIL-1", 2, "tok_ok").await;
    for o in [quiet_order, confirmed] {
        assert_eq!(front.stack.finished(o).await["outcome"], "confirmed");
    }
    let got = sink(&front).wait_for(&address, 1, WAIT).await;
    let mail = about(&got, confirmed);
    let short = &confirmed.simple().to_string()[..8];
    assert_eq!(mail.subject, format!("Order {short} confirmed: 25.00 EUR"));
    assert!(mail.text.contains("Total: 25.00 EUR"), "{}", mail.text);
    assert!(mail.text.contains("2 x MAIL-1"), "{}", mail.text);
    assert!(mail.html.contains("25.00 EUR"), "{}", mail.html);
    validate_html(&mail.html)
        .await
        .unwrap_or_else(|report| panic!("{report}\n{}", mail.html));

    // Rejected (the card is declined) and cancelled (before payment answers).
    let rejected = order(&front, &token, "MAIL-1", 1, "tok_decline").await;
    assert_eq!(front.stack.finished(rejected).await["outcome"], "rejected");
    let cancelled = order(&front, &token, "MAIL-1", 3, "tok_timeout").await;
    let (status, body) = front
        .call(
            &token,
            Method::POST,
            &format!("/api/orders/{cancelled}/cancel"),
            None,
        )
        .await;
    assert!(status == 202 || status == 200, "{status} {body}");
    front.stack.finished(cancelled).await;
    let got = sink(&front).wait_for(&address, 3, WAIT).await;
    let declined = about(&got, rejected);
    assert!(
        declined.subject.contains("could not take it"),
        "{}",
        declined.subject
    );
    assert!(
        declined.text.contains("Your payment was declined"),
        "{}",
        declined.text
    );
    let off = about(&got, cancelled);
    assert_eq!(
        off.subject,
        format!("Order {} cancelled", &cancelled.simple().to_string()[..8])
    );
    for mail in [declined, off] {
        validate_html(&mail.html)
            .await
            .unwrap_or_else(|report| panic!("{report}"));
    }
    // One each, however long we wait; each with its own message id.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = sink(&front).to(&address).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{got:#?}");

    // The quiet customer's order was confirmed before ada's last two, so its email would have
    // been recorded by now: none was, and none was sent.
    assert!(sink(&front).to(&quiet_address).await.is_empty());
    let db = notifications_db(&front).await;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM emails WHERE customer_id = $1")
        .bind(quiet)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, 0);
    // Turned on again, their next order has its email.
    let (status, _) = front
        .call(
            &quiet_token,
            Method::PUT,
            "/api/me/notifications",
            Some(json!({"email": true})),
        )
        .await;
    assert_eq!(status, 200);
    let again = order(&front, &quiet_token, "MAIL-1", 1, "tok_ok").await;
    let got = sink(&front).wait_for(&quiet_address, 1, WAIT).await;
    about(&got, again);
}

/// The `OrderPlaced` of `order` in JSON lines of events.
fn placed_of(lines: &str, order: Uuid) -> Value {
    lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|e| {
            e["type"] == "streamshop.orders.OrderPlaced.v3" && e["subject"] == order.to_string()
        })
        .unwrap_or_else(|| panic!("the OrderPlaced of {order}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_customers_address_opens_nowhere_and_they_get_no_more_email() {
    let (front, admin) = shop_selling("MAIL-2", 800).await;
    let erin = Uuid::now_v7();
    let address = format!("erin.{}@shop-customers.example", erin.simple());
    let token = front.oidc.customer_token_with_email(erin, &address).await;

    let first = order(&front, &token, "MAIL-2", 1, "tok_ok").await;
    assert_eq!(front.stack.finished(first).await["outcome"], "confirmed");
    sink(&front).wait_for(&address, 1, WAIT).await;

    // The address in the log is sealed; notifications alone may have it opened, and only as
    // an address (not on payments' subject, where it does not open as a token).
    let ns = front.stack.orders.ns.clone();
    let replayed = testkit::analyst_events(&ns, &["replay", "--stream", "orders"]).await;
    assert!(!replayed.contains(&address), "a clear address in the log");
    let sealed = placed_of(&replayed, first)["data"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(service_kit::sealing::is_sealed(&sealed), "{sealed}");
    let email_subject = ns.open_email_subject(BoundedContext::Orders);
    assert_eq!(
        testkit::open_as(Identity::NOTIFICATIONS, &email_subject, first, &sealed).await,
        Ok(OpenAnswer::Token(address.clone()))
    );
    for identity in [
        Identity::PAYMENTS,
        Identity::GATEWAY,
        Identity::ORCHESTRATOR,
    ] {
        let answer = testkit::open_as(identity, &email_subject, first, &sealed).await;
        assert!(
            answer.is_err(),
            "{identity:?} may not open an address: {answer:?}"
        );
    }
    assert_eq!(
        testkit::open_as(
            Identity::PAYMENTS,
            &ns.open_subject(BoundedContext::Orders),
            first,
            &sealed
        )
        .await,
        Ok(OpenAnswer::Invalid),
        "an address is no payment token"
    );

    // One more order of theirs, whose payment never answers: it ends (rejected, at the
    // saga's 3 s deadline or as its token no longer opens) after the erase below.
    let waiting = order(&front, &token, "MAIL-2", 1, "tok_timeout").await;
    // Erased: the address opens nowhere, in the stream or the export.
    let (status, body) = front
        .call(
            &admin,
            Method::POST,
            &format!("/api/customers/{erin}/erase"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        testkit::open_as(Identity::NOTIFICATIONS, &email_subject, first, &sealed).await,
        Ok(OpenAnswer::Erased)
    );
    let file = std::env::temp_dir().join(format!(
        "streamshop-export-{}.jsonl",
        Uuid::new_v4().simple()
    ));
    let path = file.to_str().unwrap();
    testkit::analyst_events(
        &ns,
        &[
            "export", "--format", "jsonl", "--output", path, "--stream", "orders",
        ],
    )
    .await;
    let exported = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        !exported.contains(&address),
        "a clear address in the export"
    );
    assert_eq!(placed_of(&exported, first)["data"]["email"], json!(sealed));

    // The order in flight ends: no email is sent for it.
    assert_eq!(front.stack.finished(waiting).await["outcome"], "rejected");
    let db = notifications_db(&front).await;
    let settled: (String, Option<String>) =
        testkit::eventually(WAIT, "the rejection's email to be settled", || async {
            sqlx::query_as(
                "SELECT status, last_error FROM emails WHERE order_id = $1 AND status <> 'pending'",
            )
            .bind(waiting)
            .fetch_optional(&db)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(
        settled,
        (
            "skipped".to_owned(),
            Some("the customer was erased".to_owned())
        )
    );
    assert_eq!(
        sink(&front).to(&address).await.len(),
        1,
        "only the email before the erase"
    );
}

/// One of two notification replicas is a process that aborts right after the mail server took
/// its first email, before recording it. The other sends that email again once the dead one's
/// lease runs out, with the same `Message-ID` (so a receiver can drop the copy); the events the
/// dead one had fetched come to the other after the ack wait, each after its predecessor (an
/// order's confirmation never goes ahead of its placing, whose address it needs). Every order
/// gets its email, and only the one in flight at the crash twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_after_sending_loses_no_email_and_the_copy_keeps_its_id() {
    let (front, _admin) = shop_selling("MAIL-K", 400).await;
    let mut env = front.stack.notifications_env.clone();
    env.extend([
        ("FAILPOINTS", "notifications.after_email@1".to_owned()),
        // One email in flight at the crash, leased for 2 × 1 s + 5 s.
        ("MAIL_MAX_IN_FLIGHT", "1".to_owned()),
        ("MAIL_TIMEOUT_MS", "1000".to_owned()),
    ]);
    let doomed = testkit::process::ServiceProcess::start(
        &testkit::binary("notifications"),
        testkit::free_port(),
        &env,
    )
    .await;

    let customer = Uuid::now_v7();
    let address = format!("kim.{}@shop-customers.example", customer.simple());
    let token = front
        .oidc
        .customer_token_with_email(customer, &address)
        .await;
    // Enough orders that the two replicas, taking events as they come, both get some (in two
    // rounds: a customer holds at most 10 open orders).
    let mut orders = Vec::new();
    for _ in 0..2 {
        let mut round = Vec::new();
        for _ in 0..6 {
            round.push(order(&front, &token, "MAIL-K", 1, "tok_ok").await);
        }
        for o in &round {
            assert_eq!(front.stack.finished(*o).await["outcome"], "confirmed");
        }
        orders.extend(round);
    }

    let status = doomed.wait_exit(WAIT).await;
    assert!(!status.success(), "the failpoint aborted it: {status}");
    let db = notifications_db(&front).await;
    // Events the dead replica held unacknowledged come again after the ack wait (30 s).
    testkit::eventually(
        Duration::from_secs(90),
        "every email recorded as sent",
        || async {
            let sent: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM emails WHERE customer_id = $1 AND status = 'sent'",
            )
            .bind(customer)
            .fetch_one(&db)
            .await
            .unwrap();
            (sent == orders.len() as i64).then_some(())
        },
    )
    .await;
    let got = sink(&front).to(&address).await;
    let mut twice = 0;
    for o in &orders {
        let copies: Vec<&Received> = got
            .iter()
            .filter(|m| m.text.contains(&o.to_string()))
            .collect();
        assert!(!copies.is_empty(), "{o} got its email");
        assert!(
            copies.iter().all(|m| m.message_id == copies[0].message_id),
            "{o}: every copy keeps the email's id: {copies:#?}"
        );
        if copies.len() > 1 {
            twice += 1;
        }
    }
    assert_eq!(twice, 1, "only the email in flight at the crash came twice");
    let attempts: i32 =
        sqlx::query_scalar("SELECT max(attempts) FROM emails WHERE customer_id = $1")
            .bind(customer)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        attempts, 2,
        "the crashed attempt, then the one that recorded it"
    );
}
