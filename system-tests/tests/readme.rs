//! The README's "Try it" (which the book's getting-started page repeats) and the book's
//! frontends page, run as written against the gateway in front of every service (only its
//! address and the token command changed to this test's), so the first thing a newcomer
//! pastes works.

use std::time::Duration;

use serde_json::Value;
use testkit::front::Front;
use testkit::stripe::LocalStripe;

use system_tests::sh_block as block;

#[test]
fn the_getting_started_page_tries_what_the_readme_tries() {
    assert_eq!(
        block("docs/getting-started.md", "## Try it"),
        block("README.md", "## Try it"),
        "the two \"Try it\" blocks differ: a test runs only the README's"
    );
}

/// The block as it runs against `front`: the gateway's address for the local one, the test's
/// Stripe-compatible server (and a file with its key) for `up`'s, and tokens from the test's
/// OpenID provider where the block asks `cargo xtask token`.
fn against(block: &str, front: &Front, stripe: &LocalStripe, key_file: &str) -> String {
    let block = block
        .replace("localhost:8000", front.url.trim_start_matches("http://"))
        .replace("localhost:8420", stripe.url.trim_start_matches("http://"))
        .replace(".state/dev/stripe/secret-key", key_file)
        .replace("cargo xtask token --admin", &front.oidc.admin_command())
        .replace("cargo xtask token", &front.oidc.token_command());
    assert!(
        !block.contains("localhost:8"),
        "a port the test does not map:\n{block}"
    );
    block
}

async fn bash(block: &str) -> String {
    let mut bash = tokio::process::Command::new("bash");
    bash.args(["-euo", "pipefail", "-c", block]);
    testkit::stdout_of(&mut bash, "the block").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_blocks_work_as_written() {
    // As under `cargo xtask up`: payments go through the Stripe adapter to localstripe.
    let stripe = LocalStripe::start().await;
    let front = Front::start_paying_with(&[], stripe.env().into()).await;
    let key_file = std::env::temp_dir().join(format!("readme-stripe-key-{}", uuid::Uuid::new_v4()));
    std::fs::write(&key_file, &stripe.key).unwrap();
    let key_file = key_file.to_string_lossy().into_owned();
    // A block of a page, run as written against this stack.
    let run = |text: String| {
        let script = against(&text, &front, &stripe, &key_file);
        async move { bash(&script).await }
    };
    let stdout = run(block("README.md", "## Try it")).await;
    // Every line the block prints is a JSON answer; none is a problem.
    let answers: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    assert!(answers.len() >= 4, "{stdout}");
    for answer in &answers {
        assert!(
            answer.get("status").is_none_or(|s| !s.is_number()),
            "a problem: {answer}"
        );
    }
    assert_eq!(answers[0]["sku"], "SKU-1");
    assert_eq!(answers[1]["status"], "placed");
    let order = answers[1]["order_id"].as_str().unwrap().to_owned();
    assert_eq!(answers[2]["order_id"], order.as_str());

    // The block's last reads wait a bounded time; on a busy machine the saga may take longer,
    // so its outcome is then awaited here: the order ends confirmed and the stock committed.
    let query = front.stack.reads[1].clone();
    let read = |path: String| {
        let url = format!("{query}{path}");
        async move { testkit::get_json(&url).await }
    };
    testkit::eventually(
        Duration::from_secs(30),
        "the order to be confirmed",
        || async {
            let view = read(format!("/orders/{order}")).await;
            (view["status"] == "confirmed").then_some(())
        },
    )
    .await;
    testkit::eventually(
        Duration::from_secs(30),
        "the stock to be committed",
        || async {
            let product = read("/products/SKU-1".to_owned()).await;
            (product["on_hand"] == 8 && product["reserved"] == 0).then_some(())
        },
    )
    .await;

    // The frontends page: a second order, streamed live to its end (the product still has 8).
    // The server holds the order's one intent for its total, captured.
    let paid = uuid::Uuid::parse_str(&order).unwrap();
    testkit::eventually(
        Duration::from_secs(30),
        "the intent to be captured",
        || async {
            let intents = stripe.intents_of(paid).await;
            (intents.len() == 1
                && intents[0]["status"] == "succeeded"
                && intents[0]["amount"] == 2500)
                .then_some(())
        },
    )
    .await;
    assert!(
        answers.iter().any(|a| a[0][1] == 2500),
        "the block shows the order's intent: {stdout}"
    );

    let stream = run(block("docs/frontends.md", "")).await;
    assert!(stream.contains("event: order"), "{stream}");
    assert!(stream.contains(r#""status":"confirmed""#), "{stream}");
    assert!(stream.contains(r#""type":"SagaCompleted""#), "{stream}");
    assert!(!stream.contains("tok_ok"), "{stream}");
}
