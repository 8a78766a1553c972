//! The `events` binary on bad input: every mistake a user can make ends with a message that
//! says what is wrong and exit code 2, never a panic or a hang.

use std::process::Output;

async fn events(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_events"))
        .args(args)
        .env("NATS_URL", testkit::nats_analyst_url())
        .envs(testkit::tls_as("analyst").map(|tls| ("TLS_DIR", tls.dir)))
        .output()
        .await
        .unwrap()
}

fn refused(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn mistakes_are_refused_with_a_reason() {
    // A namespace whose streams do not exist: the message names the stream and the setting.
    let ns = testkit::unique_namespace();
    let out = events(&["--namespace", ns.as_str(), "replay", "--stream", "orders"]).await;
    refused(&out, "NATS_NAMESPACE");
    refused(&out, &ns.stream(messaging::BoundedContext::Orders));

    // End points a command cannot honour, and arguments that do not parse.
    refused(&events(&["tail", "--to-seq", "5"]).await, "use replay");
    refused(
        &events(&["export", "--format", "csv", "-o", "/tmp/x.csv", "--follow"]).await,
        "--follow never ends",
    );
    refused(
        &events(&["replay", "--stream", "shipping"]).await,
        "shipping",
    );
    refused(&events(&["replay", "--from-seq", "x"]).await, "--from-seq");
    refused(
        &events(&["verify", "--store", "orders"]).await,
        "context=URL",
    );
    refused(
        &events(&[
            "state",
            "--stream",
            "orders",
            "--aggregate",
            "a",
            "--at-time",
            "yesterday",
        ])
        .await,
        "--at-time",
    );

    // NATS that does not answer.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_events"))
        .args(["--nats-url", "nats://127.0.0.1:1", "replay"])
        .output()
        .await
        .unwrap();
    refused(&out, "connecting to NATS at nats://127.0.0.1:1");
}
