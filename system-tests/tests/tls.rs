//! TLS inside: every NATS connection and every call to an internal service is mutual TLS with
//! the local CA. A caller without a certificate, with another process's, or with one the CA
//! never signed gets nothing, whatever else it holds (a valid nkey, a guessed URL).

use std::path::{Path, PathBuf};
use std::time::Duration;

use messaging::Identity;
use orders::OrdersSpec;
use serde_json::{json, Value};
use service_kit::tls::TlsSettings;
use testkit::world::World;

/// The tests' TLS folder; these tests mean nothing without it.
fn tls_dir() -> PathBuf {
    testkit::infra()
        .tls_dir
        .clone()
        .expect("STREAMSHOP_TEST_TLS_DIR: run the tests with `cargo xtask test`")
}

/// A folder with the real CA (so the client trusts the real server) and a self-signed
/// certificate that claims to be `name`, which the local CA never signed.
fn impostor(name: &str) -> TlsSettings {
    let dir = std::env::temp_dir().join(format!("impostor-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tls_dir().join("ca.pem"), dir.join("ca.pem")).unwrap();
    let forged = rcgen::generate_simple_self_signed(vec![
        name.to_owned(),
        "localhost".into(),
        "127.0.0.1".into(),
    ])
    .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), forged.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        forged.signing_key.serialize_pem(),
    )
    .unwrap();
    TlsSettings::new(&dir, name)
}

/// The status and problem type of `GET url` as a client showing `tls`'s certificate (none
/// for `None`); `None` when the connection itself is refused.
async fn get_as(tls: Option<TlsSettings>, url: &str) -> Option<(u16, Value)> {
    let response = testkit::http_as(tls).get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn the_internal_apis_admit_only_the_gateway_and_operators() {
    let w = World::new("tls_http").await;
    let (base, _stop) = w.spawn_orders(OrdersSpec::default()).await;
    assert!(base.starts_with("https://"), "{base}");
    let api = format!("{base}/openapi.json");
    let as_holder = |name: &str| Some(TlsSettings::new(tls_dir(), name));

    // Operators are let in everywhere; the gateway only on the routes it forwards to.
    assert_eq!(get_as(as_holder("operator"), &api).await.unwrap().0, 200);
    assert_eq!(get_as(as_holder("gateway"), &api).await.unwrap().0, 403);
    let post_as = |holder: &str, path: String, body: Value| {
        let client = testkit::http_as(as_holder(holder));
        let url = format!("{base}{path}");
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let placed = post_as(
        "gateway",
        "/orders".into(),
        json!({
            "customer_id": uuid::Uuid::new_v4(),
            "lines": [{"sku": "TLS-1", "quantity": 1}],
            "payment_token": "tok_ok"
        }),
    )
    .await;
    assert_eq!(placed.0, 202, "the gateway places orders: {}", placed.1);
    let order = placed.1["order_id"].as_str().unwrap().to_owned();
    // A gateway taken over cannot confirm an unpaid order (on a28c6f9 it could): every
    // saga-internal command refuses its certificate, and nothing is written.
    let before = w.count("SELECT count(*) FROM events").await;
    let (status, body) = post_as(
        "gateway",
        format!("/orders/{order}/confirm"),
        json!({"order_id": order}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "urn:streamshop:problem:caller-not-allowed");
    assert_eq!(w.count("SELECT count(*) FROM events").await, before);
    // An operator is not limited by it (the order is not priced yet: the aggregate says no).
    let (status, _) = post_as(
        "operator",
        format!("/orders/{order}/confirm"),
        json!({"order_id": order}),
    )
    .await;
    assert_ne!(status, 403);
    // No certificate: 401, as problem+json that says what is missing.
    let (status, body) = get_as(None, &api).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        body["type"],
        "urn:streamshop:problem:client-certificate-required"
    );
    // Another process of the system (a compromised projection worker, say): 403.
    let (status, body) = get_as(as_holder("projections"), &api).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(body["type"], "urn:streamshop:problem:caller-not-allowed");
    // The scraper reads metrics and nothing else.
    assert_eq!(
        get_as(as_holder("prometheus"), &format!("{base}/metrics"))
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(get_as(as_holder("prometheus"), &api).await.unwrap().0, 403);
    // A command without a certificate changes nothing.
    let order = json!({
        "customer_id": uuid::Uuid::new_v4(),
        "lines": [{"sku": "TLS-1", "quantity": 1}],
        "payment_token": "tok_ok"
    });
    let refused = testkit::http_as(None)
        .post(format!("{base}/orders"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(w.count("SELECT count(*) FROM events").await, before);
    // Health and readiness stay open: a probe has no certificate.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            get_as(None, &format!("{base}{path}")).await.unwrap().0,
            200,
            "{path}"
        );
    }
    // A self-signed certificate that names itself the gateway: the handshake fails.
    assert!(get_as(Some(impostor("gateway")), &api).await.is_none());
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = base.replacen("https://", "http://", 1);
    assert!(
        get_as(None, &format!("{plain}/healthz")).await.is_none(),
        "plain HTTP is not served"
    );
}

/// Connects as the orders service with its real key, and `tls` for TLS (none for `None`).
async fn connect_nats(tls: Option<&TlsSettings>) -> Result<async_nats::Client, String> {
    let credentials = testkit::infra()
        .nats_credentials
        .clone()
        .expect("the tests' NATS keys");
    let seed = messaging::settings::seed_in(&credentials, "orders").unwrap();
    let mut options = async_nats::ConnectOptions::new()
        .nkey(seed)
        .custom_inbox_prefix(Identity::ORDERS.inbox_prefix())
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(Some(1));
    if let Some(tls) = tls {
        options = messaging::settings::with_tls(options, tls).map_err(|e| e.to_string())?;
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        options.connect(&testkit::infra().nats_url),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn nats_needs_tls_and_a_certificate_of_the_local_ca_besides_a_key() {
    let own = TlsSettings::new(tls_dir(), "orders");
    let client = connect_nats(Some(&own))
        .await
        .expect("the orders service connects");
    client.flush().await.unwrap();

    // The right key in plain text: refused.
    assert!(connect_nats(None).await.is_err(), "plain text is refused");
    // The right key over TLS, but no client certificate: refused.
    let no_certificate =
        Path::new(&std::env::temp_dir()).join(format!("no-certificate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&no_certificate).unwrap();
    std::fs::copy(tls_dir().join("ca.pem"), no_certificate.join("ca.pem")).unwrap();
    let mut options = async_nats::ConnectOptions::new()
        .nkey(
            messaging::settings::seed_in(
                testkit::infra().nats_credentials.as_ref().unwrap(),
                "orders",
            )
            .unwrap(),
        )
        .connection_timeout(Duration::from_secs(3))
        .require_tls(true)
        .add_root_certificates(no_certificate.join("ca.pem"));
    options = options.max_reconnects(Some(1));
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        options.connect(&testkit::infra().nats_url),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "TLS without a client certificate is refused"
    );
    // The right key with a certificate the CA never signed: refused.
    assert!(
        connect_nats(Some(&impostor("orders"))).await.is_err(),
        "a self-signed certificate is refused"
    );
}
