//! The README's "Try it" block, run as written (only the ports changed to this stack's)
//! against every service, so the first thing a newcomer pastes works.

use std::time::Duration;

use serde_json::Value;
use testkit::stack::Stack;

/// The first ```sh block after the `## Try it` heading.
fn try_it_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let section = readme
        .split("\n## Try it\n")
        .nth(1)
        .expect("a Try it section");
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("\n```").expect("the block ends");
    section[start..end].to_owned()
}

/// `localhost:<port>` of the local stack, replaced by this stack's address of that service.
fn with_ports(block: &str, stack: &Stack) -> String {
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    [
        ("localhost:8080", host(&stack.reads[1])),
        ("localhost:8081", host(&stack.urls[0])),
        ("localhost:8082", host(&stack.urls[1])),
        ("localhost:8083", host(&stack.urls[2])),
        ("localhost:8084", host(&stack.urls[3])),
        ("localhost:8085", host(&stack.reads[0])),
    ]
    .iter()
    .fold(block.to_owned(), |text, (from, to)| text.replace(from, to))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_try_it_block_works_as_written() {
    let stack = Stack::start_all(5).await;
    let block = with_ports(&try_it_block(), &stack);
    assert!(
        !block.contains("localhost:80"),
        "a port the test does not map:\n{block}"
    );
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the block failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    let query = stack.reads[1].clone();
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
}
