//! The gateway's edge protections on every answer: request ids, CORS from the allow-list,
//! the body limit and the request time limit, each as a client sees it.

use std::time::{Duration, Instant};

use testkit::front::{gateway, Recorder, Upstreams};
use testkit::oidc::Oidc;
use uuid::Uuid;

#[tokio::test]
async fn request_ids_cors_body_and_time_limits() {
    let oidc = Oidc::start().await;
    // An upstream that takes two seconds: longer than the gateway allows a request.
    let slow = Recorder::start(Duration::from_secs(2)).await;
    let (url, _stop) = gateway(
        &oidc,
        &testkit::unique_namespace(),
        Upstreams::all(&slow.url),
        &[
            ("CORS_ALLOWED_ORIGINS", "https://shop.example".into()),
            ("BODY_LIMIT_BYTES", "1024".into()),
            ("REQUEST_TIMEOUT_MS", "300".into()),
        ],
    )
    .await;
    let client = testkit::http();
    let token = oidc.customer_token(Uuid::now_v7()).await;

    // A request id is made when the client sends none, and the client's is kept.
    let made = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert!(made.headers().contains_key("x-request-id"));
    let kept = client
        .get(format!("{url}/api/nowhere"))
        .header("x-request-id", "client-chosen-1")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 404);
    assert_eq!(kept.headers()["x-request-id"], "client-chosen-1");

    // CORS: the allowed origin's preflight is answered, another origin's is not.
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{url}/api/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));

    // A body over the limit is 413 problem+json and reaches nothing.
    let big = format!(r#"{{"lines":[],"payment_token":"{}"}}"#, "x".repeat(2048));
    let too_large = client
        .post(format!("{url}/api/orders"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(
        too_large.headers()["content-type"],
        "application/problem+json"
    );
    assert!(slow.seen().is_empty(), "{:?}", slow.seen());

    // A request that takes longer than the limit is 504, answered at the limit.
    let started = Instant::now();
    let late = client
        .get(format!("{url}/api/products"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(late.status(), 504);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(late.headers().contains_key("retry-after"));
    let body: serde_json::Value = late.json().await.unwrap();
    assert_eq!(body["type"], "urn:streamshop:problem:timeout");
}
