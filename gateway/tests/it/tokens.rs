//! Bad tokens never pass the gateway: each is a 401 problem with `WWW-Authenticate: Bearer
//! error="invalid_token"`, and the service behind it sees no request. Good tokens, from the
//! real OpenID provider or signed with its keys, pass; keys rotate without a restart; rate
//! limits hold per caller.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::front::{Recorder, Stopper};
use testkit::oidc::{unix_now, Oidc};
use uuid::Uuid;

async fn front(oidc: &Oidc, extra: &[(&'static str, String)]) -> (Recorder, String, Stopper) {
    testkit::front::recorded(oidc, Duration::ZERO, extra).await
}

/// `GET /api/me/orders` with `authorization` (a whole header value), status and body.
async fn my_orders(
    url: &str,
    authorization: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = testkit::http().get(format!("{url}/api/me/orders"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// An access token as RFC 9068 types it (`typ: at+jwt`), signed with `key`.
fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    sign_typed(alg, kid, key, claims, Some("at+jwt"))
}

fn sign_typed(
    alg: Algorithm,
    kid: &str,
    key: &EncodingKey,
    claims: &Value,
    typ: Option<&str>,
) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn every_bad_token_is_401_and_reaches_nothing() {
    let oidc = Oidc::start().await;
    // Refetch on every unknown kid: "unknown after a refresh" is then really after one.
    let (recorder, url, _stop) = front(&oidc, &[("OIDC_KEYS_REFRESH_MIN_MS", "0".into())]).await;
    let customer = Uuid::now_v7();
    let (rs_kid, rs_pem) = oidc.key("RS256");
    let rs = EncodingKey::from_rsa_pem(rs_pem.as_bytes()).unwrap();
    let good = oidc.customer_token(customer).await;
    let mut claims = oidc.claims(&customer.to_string());

    let tampered = {
        let (head, signature) = good.rsplit_once('.').unwrap();
        let mut sig: Vec<char> = signature.chars().collect();
        let middle = sig.len() / 2;
        sig[middle] = if sig[middle] == 'A' { 'B' } else { 'A' };
        format!("{head}.{}", sig.into_iter().collect::<String>())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": rs_kid})),
        b64(&claims)
    );
    // The HMAC confusion: an HS256 token keyed with what the issuer publishes.
    let jwks = testkit::text(testkit::http().get(format!("{}/jwks", oidc.issuer))).await;
    let hmac = sign(
        Algorithm::HS256,
        &rs_kid,
        &EncodingKey::from_secret(jwks.as_bytes()),
        &claims,
    );
    let now = unix_now();
    let with = |claims: &Value, key: &str, value: Value| {
        let mut c = claims.clone();
        c[key] = value;
        sign(Algorithm::RS256, &rs_kid, &rs, &c)
    };
    let expired = {
        let mut c = claims.clone();
        c["iat"] = json!(now - 7200);
        c["exp"] = json!(now - 3600);
        sign(Algorithm::RS256, &rs_kid, &rs, &c)
    };
    let not_yet = with(&claims, "nbf", json!(now + 3600));
    let wrong_issuer = with(&claims, "iss", json!("http://127.0.0.1:1/evil"));
    let wrong_audience = with(&claims, "aud", json!("another-api"));
    let unknown_kid = sign(Algorithm::RS256, "not-a-key-of-the-issuer", &rs, &claims);
    // Another JWT of the issuer for the same audience, an ID token's header: not an access
    // token (RFC 9068), however valid its signature and claims.
    let id_token = sign_typed(Algorithm::RS256, &rs_kid, &rs, &claims, Some("JWT"));
    let untyped = sign_typed(Algorithm::RS256, &rs_kid, &rs, &claims, None);
    claims["exp"] = json!(now + 600);

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("not a bearer", Some("Basic dXNlcjpwYXNz".into())),
        ("malformed", Some("Bearer not.a-jwt".into())),
        ("wrong signature", Some(format!("Bearer {tampered}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("HMAC with the public key", Some(format!("Bearer {hmac}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("not yet valid", Some(format!("Bearer {not_yet}"))),
        ("wrong issuer", Some(format!("Bearer {wrong_issuer}"))),
        ("wrong audience", Some(format!("Bearer {wrong_audience}"))),
        ("unknown kid", Some(format!("Bearer {unknown_kid}"))),
        ("typ JWT (an ID token)", Some(format!("Bearer {id_token}"))),
        ("no typ", Some(format!("Bearer {untyped}"))),
    ];
    for (case, authorization) in &cases {
        let (status, headers, body) = my_orders(&url, authorization.as_deref()).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(
            headers["www-authenticate"], r#"Bearer realm="streamshop", error="invalid_token""#,
            "{case}"
        );
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{case}"
        );
        assert_eq!(
            body["type"], "urn:streamshop:problem:unauthorized",
            "{case}"
        );
        assert!(headers.contains_key("x-request-id"), "{case}");
    }
    assert!(recorder.seen().is_empty(), "proxied: {:?}", recorder.seen());

    // The same route passes with good tokens: the provider's, and ES256 and RS256 ones
    // signed with its keys.
    let (es_kid, es_pem) = oidc.key("ES256");
    let es = EncodingKey::from_ec_pem(es_pem.as_bytes()).unwrap();
    for token in [
        good,
        sign(Algorithm::ES256, &es_kid, &es, &claims),
        sign(Algorithm::RS256, &rs_kid, &rs, &claims),
    ] {
        let (status, _, body) = my_orders(&url, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let expected = format!("/customers/{customer}/orders");
    assert_eq!(recorder.seen(), vec![expected; 3]);
}

#[tokio::test]
async fn rotated_keys_are_accepted_without_a_restart_and_old_tokens_still_verify() {
    let oidc = Oidc::start().await;
    let (recorder, url, _stop) = front(&oidc, &[("OIDC_KEYS_REFRESH_MIN_MS", "1000".into())]).await;
    let customer = Uuid::now_v7();
    let before = oidc.customer_token(customer).await;
    assert_eq!(
        my_orders(&url, Some(&format!("Bearer {before}"))).await.0,
        200
    );

    let new_kid = oidc.rotate().await;
    let after = oidc.customer_token(customer).await;
    let header = jsonwebtoken::decode_header(&after).unwrap();
    assert_eq!(
        header.typ.as_deref(),
        Some("at+jwt"),
        "the provider types its access tokens (RFC 9068)"
    );
    assert_eq!(
        header.kid.as_deref(),
        Some(new_kid.as_str()),
        "signed with the new key"
    );
    // Past the refetch interval, the first token with the new kid is accepted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        my_orders(&url, Some(&format!("Bearer {after}"))).await.0,
        200
    );
    assert_eq!(
        my_orders(&url, Some(&format!("Bearer {before}"))).await.0,
        200
    );
    assert_eq!(recorder.seen().len(), 3);
}

#[tokio::test]
async fn a_burst_over_the_limit_is_429_and_other_callers_are_not_slowed() {
    let oidc = Oidc::start().await;
    let (_recorder, url, _stop) = front(
        &oidc,
        &[
            ("RATE_LIMIT_PER_MINUTE", "60".into()),
            ("RATE_LIMIT_BURST", "5".into()),
            // One every 10 s: the address's bucket, once empty, stays empty for the rest of
            // the test however slow the machine.
            ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "6".into()),
            ("RATE_LIMIT_ANONYMOUS_BURST", "3".into()),
        ],
    )
    .await;
    let a = format!("Bearer {}", oidc.customer_token(Uuid::now_v7()).await);
    let b = format!("Bearer {}", oidc.customer_token(Uuid::now_v7()).await);
    let c = format!("Bearer {}", oidc.customer_token(Uuid::now_v7()).await);

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, headers, body) = my_orders(&url, Some(&a)).await;
        statuses.push(status);
        if status == 429 {
            assert_eq!(body["type"], "urn:streamshop:problem:rate-limited");
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert_eq!(headers["ratelimit-remaining"], "0");
            assert_eq!(headers["ratelimit-limit"], "5");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);

    // Another customer has a bucket of their own.
    let (status, headers, _) = my_orders(&url, Some(&b)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-remaining"], "4");

    // Anonymous calls share their address's bucket (3), which also paid for verifying each
    // customer's token the first time (a, b): one call is left.
    let mut anonymous = Vec::new();
    for _ in 0..3 {
        let r = testkit::get(format!("{url}/api/products")).await;
        anonymous.push(r.status().as_u16());
    }
    assert_eq!(anonymous, [200, 429, 429]);
    // With the address's bucket empty, a token is not even verified: a forged one and a new
    // customer's good one are both refused 429 (not 401, not 200).
    assert_eq!(my_orders(&url, Some("Bearer garbage")).await.0, 429);
    assert_eq!(my_orders(&url, Some(&c)).await.0, 429);
    // A token verified a moment ago spends only its own bucket.
    assert_eq!(my_orders(&url, Some(&b)).await.0, 200);
}

#[tokio::test]
async fn only_a_trusted_proxy_says_who_the_client_is() {
    let oidc = Oidc::start().await;
    let limits = [
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "6".to_owned()),
        ("RATE_LIMIT_ANONYMOUS_BURST", "2".to_owned()),
    ];
    let calls = |url: String, from: &'static str| async move {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let r = testkit::http()
                .get(format!("{url}/api/products"))
                .header("x-forwarded-for", from)
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        statuses
    };
    // Behind a trusted proxy (the tests connect from 127.0.0.1), each client has its bucket,
    // and a client cannot choose another's by writing the header's left end.
    let mut trusting = limits.to_vec();
    trusting.push(("TRUSTED_PROXIES", "127.0.0.1/32".into()));
    let (_r, url, _stop) = front(&oidc, &trusting).await;
    assert_eq!(calls(url.clone(), "198.51.100.1").await, [200, 200, 429]);
    assert_eq!(calls(url.clone(), "198.51.100.2").await, [200, 200, 429]);
    assert_eq!(
        calls(url.clone(), "198.51.100.9, 198.51.100.2").await,
        [429, 429, 429],
        "the proxy's own entry (rightmost) is the client"
    );
    // Without it, the header is anyone's say-so: every caller is its TCP peer.
    let (_r, url, _stop) = front(&oidc, &limits).await;
    assert_eq!(calls(url.clone(), "198.51.100.1").await, [200, 200, 429]);
    assert_eq!(calls(url, "198.51.100.2").await, [429, 429, 429]);
}

#[tokio::test]
async fn a_valid_token_for_neither_a_customer_nor_an_operator_is_403() {
    let oidc = Oidc::start().await;
    let (recorder, url, _stop) = front(&oidc, &[]).await;
    let (kid, pem) = oidc.key("RS256");
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let token = sign(
        Algorithm::RS256,
        &kid,
        &key,
        &oidc.claims("a-service-account"),
    );
    let (status, _, body) = my_orders(&url, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "urn:streamshop:problem:forbidden");
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn an_unreachable_issuer_is_503_not_a_bad_token() {
    let oidc = Oidc::start().await;
    // The gateway looks for its keys where no provider answers.
    let nowhere = format!("https://127.0.0.1:{}", testkit::free_port());
    let (recorder, url, _stop) = front(&oidc, &[("OIDC_ISSUER_URL", nowhere)]).await;
    let token = oidc.customer_token(Uuid::now_v7()).await;
    let (status, headers, body) = my_orders(&url, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:streamshop:problem:unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(recorder.seen().is_empty());
}
