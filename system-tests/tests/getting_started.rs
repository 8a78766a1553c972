//! Runs the getting-started page's commands as a reader runs them: `cargo xtask up` starts the
//! local stack, `status` shows it, `token` signs in against it, an order goes through its
//! gateway to confirmed, `up` again changes nothing, and `down` stops it; then the same with
//! `up --cluster`. (`cargo xtask test` is what CI runs, `.ci/run`; the "Try it" block runs in
//! `readme.rs`.)

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use system_tests::{sh_block, workspace};

/// The gateway of `cargo xtask up`.
const GATEWAY: &str = "http://localhost:8000";
/// The local SMTP sink's page (and API), as `up` prints it.
const MAIL: &str = "http://127.0.0.1:1080";

/// `line` in bash from the workspace root, as a reader types it, with none of the test
/// runner's variables (the stack it starts is `up`'s own, not the suite's) and none of the
/// package variables `cargo run` exported (build scripts fingerprint them).
fn typed(line: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", line])
        .current_dir(workspace());
    for (name, _) in std::env::vars() {
        if name.starts_with("STREAMSHOP_")
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_str(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs `line` ([`typed`]); its stdout, or the test fails with what it said.
async fn run(line: &str) -> String {
    let mut command = tokio::process::Command::from(typed(line));
    testkit::stdout_of(&mut command, &format!("`{line}`")).await
}

/// The lines of the page's first block under `heading`, without their comments.
fn commands(file: &str, heading: &str) -> Vec<String> {
    sh_block(file, heading)
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// Stops the stack the test started, even when the test fails halfway.
struct Down(bool);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0
            && !typed("cargo xtask down")
                .status()
                .is_ok_and(|s| s.success())
        {
            // Not a panic: this may run while the test is failing already.
            eprintln!("`cargo xtask down` failed: stop the stack by hand");
        }
    }
}

/// Signed in as the page says (`cargo xtask token`), an operator creates a product and a
/// customer orders it through `gateway`; the order goes through stock and payment
/// (localstripe) to confirmed, and its email reaches the local SMTP sink's page. Returns the
/// order and the customer's token.
async fn an_order_is_confirmed(gateway: &str) -> (String, String) {
    let admin = run("cargo xtask token --admin").await.trim().to_owned();
    let customer_id = uuid::Uuid::now_v7();
    let customer = run(&format!("cargo xtask token --customer {customer_id}"))
        .await
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let sku = format!("GS-{}", &customer_id.simple().to_string()[20..]).to_uppercase();
    let product = json!({"sku": sku, "name": "Mug", "unit_price": 1250, "currency": "EUR",
                         "initial_stock": 5});
    let created = http
        .post(format!("{gateway}/api/products"))
        .bearer_auth(&admin)
        .json(&product)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let placed = http
        .post(format!("{gateway}/api/orders"))
        .bearer_auth(&customer)
        .json(&json!({"lines": [{"sku": sku, "quantity": 2}], "payment_token": "pm_card_visa"}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    let placed: Value = placed.json().await.unwrap();
    let order = placed["order_id"].as_str().unwrap().to_owned();
    let view = confirmed(gateway, &order, &customer).await;
    assert_eq!(view["total"]["amount_minor"], 2500, "{view}");
    let anonymous = http
        .get(format!("{gateway}/api/orders/{order}"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    emailed(&customer_id, &order).await;
    (order, customer)
}

/// Waits for the order's confirmation email on the page `up` prints for the SMTP sink.
async fn emailed(customer: &uuid::Uuid, order: &str) {
    let to = format!("{customer}@customers.example");
    testkit::eventually(
        Duration::from_secs(60),
        "the order's email on the mail page",
        || async {
            let all: Value = reqwest::get(format!("{MAIL}/api/email"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            all.as_array()?
                .iter()
                .any(|m| {
                    m["to"][0]["address"] == to.as_str()
                        && m["text"].as_str().is_some_and(|t| t.contains(order))
                })
                .then_some(())
        },
    )
    .await;
}

/// The order as its customer reads it through `gateway`, once it is confirmed.
async fn confirmed(gateway: &str, order: &str, customer: &str) -> Value {
    let http = reqwest::Client::new();
    testkit::eventually(
        Duration::from_secs(60),
        "the order to be confirmed through the gateway",
        || async {
            let read = http.get(format!("{gateway}/api/orders/{order}"));
            let answer = read.bearer_auth(customer).send().await.ok()?;
            let view: Value = answer.json().await.ok()?;
            (view["status"] == "confirmed").then_some(view)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_getting_started_commands_run_the_local_stack_and_cluster() {
    let two = commands("docs/getting-started.md", "## The two commands");
    assert_eq!(two, ["cargo xtask up", "cargo xtask test"]);
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l == format!("exec {}", two[1])),
        ".ci/run runs the page's test command"
    );

    // A reader's own stack, already up, is used as it is and left running.
    let ours = TcpStream::connect("127.0.0.1:8000").is_err();
    let down = Down(ours);

    let up = run(&two[0]).await;
    assert!(up.contains("streamshop is up:"), "{up}");
    for service in topology::SERVICES {
        assert!(
            up.contains(service.name),
            "`up` names {}: {up}",
            service.name
        );
    }
    assert!(up.contains(MAIL), "`up` prints the mail page: {up}");
    let status = run("cargo xtask status").await;
    assert!(
        status.contains("gateway") && status.contains("mail"),
        "{status}"
    );
    let (order, customer) = an_order_is_confirmed(GATEWAY).await;

    // `up` is safe to run again: everything runs its current binary, so nothing restarts.
    let again = run(&two[0]).await;
    assert!(again.contains("streamshop is up:"), "{again}");
    confirmed(GATEWAY, &order, &customer).await;
    if !ours {
        eprintln!("a stack of yours runs: `up --cluster` is not tried beside it");
        return;
    }
    drop(down);
    assert!(
        TcpStream::connect("127.0.0.1:8000").is_err(),
        "`cargo xtask down` stopped the gateway"
    );

    // `up --cluster`: three NATS nodes as one JetStream cluster and two replicas of every
    // service; an order through the second gateway, whose services are the second replicas
    // and the first alike.
    let down = Down(true);
    let up = run("cargo xtask up --cluster").await;
    for node in ["nats n1", "nats n2", "nats n3"] {
        assert!(up.contains(node), "{up}");
    }
    let status = run("cargo xtask status").await;
    assert!(status.contains("the cluster stack"), "{status}");
    an_order_is_confirmed("http://localhost:8100").await;
    drop(down);
    assert!(
        TcpStream::connect("127.0.0.1:8100").is_err(),
        "`cargo xtask down` stopped the cluster"
    );
}
