//! The gateway's edge protections on every answer: request ids, CORS from the allow-list,
//! the body limit and the request time limit, each as a client sees it.

use std::time::{Duration, Instant};

use testkit::front::{recorded, Recorder, Upstreams};
use testkit::oidc::Oidc;
use uuid::Uuid;

#[tokio::test]
async fn request_ids_cors_body_and_time_limits() {
    let oidc = Oidc::start().await;
    // An upstream that takes two seconds: longer than the gateway allows a request.
    let (slow, url, _stop) = recorded(
        &oidc,
        Duration::from_secs(2),
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

/// What a raw connection saw: the status line of an answer (if one came) and how long the
/// server kept it open.
async fn trickle(addr: std::net::SocketAddr, stop_after: Duration) -> (Option<String>, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return (None, started.elapsed());
    };
    let head = "POST /api/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return (None, started.elapsed());
    }
    // One more byte a second, never the whole body; read whatever the server says.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if started.elapsed() > stop_after || tcp.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .map(str::to_owned);
    (status, started.elapsed())
}

/// 25 connections that send a request's head and then one body byte a second: past the cap
/// per client (10 here) the gateway closes a connection at once, and each one it took is
/// answered 408 and closed when its body has not arrived within the time limit (1 s here).
/// On a28c6f9 every one stayed open for as long as the client trickled.
#[tokio::test]
async fn trickled_bodies_and_too_many_connections_do_not_hold_the_gateway() {
    let oidc = Oidc::start().await;
    let (_recorder, url, _stop) = recorded(
        &oidc,
        Duration::ZERO,
        &[
            ("BODY_READ_TIMEOUT_MS", "1000".into()),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "10".into()),
            ("RATE_LIMIT_ANONYMOUS_BURST", "1000".into()),
        ],
    )
    .await;
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let attempts: Vec<_> = (0..25)
        .map(|_| tokio::spawn(trickle(addr, Duration::from_secs(20))))
        .collect();
    let mut timed_out = 0;
    for attempt in attempts {
        let (status, open) = attempt.await.unwrap();
        assert!(
            open < Duration::from_secs(5),
            "a connection was held {open:?}"
        );
        match status.as_deref() {
            Some(line) if line.contains(" 408 ") => timed_out += 1,
            None => {}
            Some(other) => panic!("unexpected answer {other}"),
        }
    }
    assert_eq!(timed_out, 10, "the cap per client, each answered 408");
    // The client is served normally once its connections are gone.
    let ok = testkit::get(format!("{url}/api/products")).await;
    assert_eq!(ok.status(), 200);
}

/// `/metrics` is not on the public side (on a28c6f9 it answered there, to anyone); it is on
/// the gateway's internal listener, to the scraper's and operators' certificates only.
#[tokio::test]
async fn metrics_are_served_apart_from_the_public_side() {
    let oidc = Oidc::start().await;
    let recorder = Recorder::start(Duration::ZERO).await;
    let (url, metrics, _stop) = testkit::front::gateway_with_metrics(
        &oidc,
        &testkit::unique_namespace(),
        Upstreams::all(&recorder.url),
        &[],
    )
    .await;
    let public = testkit::get(format!("{url}/metrics")).await;
    assert_eq!(public.status(), 404);
    let scheme = if testkit::tls_as("operator").is_some() {
        "https"
    } else {
        "http"
    };
    let inside = testkit::get(format!("{scheme}://{metrics}/metrics")).await;
    assert_eq!(inside.status(), 200);
    if scheme == "https" {
        let stranger = testkit::http_as(None)
            .get(format!("https://{metrics}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(stranger.status(), 401, "no certificate, no metrics");
    }
}

/// A client's `traceparent` is not the parent of what the gateway does: the services behind
/// it see a trace of the gateway's own (on a28c6f9 they saw the client's trace id).
#[tokio::test]
async fn a_clients_trace_context_does_not_reach_the_services() {
    let oidc = Oidc::start().await;
    let (recorder, url, _stop) = recorded(&oidc, Duration::ZERO, &[]).await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = testkit::http()
        .get(format!("{url}/api/products"))
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen = recorder.traceparents();
    assert_eq!(seen.len(), 1);
    let upstream = seen[0].clone().expect("the gateway sends a traceparent");
    assert!(
        !upstream.contains(client_trace),
        "the client chose the trace: {upstream}"
    );
    if let Some(answered) = answer.headers().get("traceparent") {
        assert!(!answered.to_str().unwrap().contains(client_trace));
    }
}
