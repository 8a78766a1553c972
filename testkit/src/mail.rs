//! A real SMTP sink for a test: maildev (`xtask/mail`, from npm) in a child process on free
//! ports with its own folder, what it received read through its REST API, and the HTML
//! validator (`html-validate`, from the same packages) that checks an email's HTML part.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

/// A running sink.
pub struct MailSink {
    _child: Child,
    /// The notification service's `SMTP_URL`.
    pub smtp_url: String,
    /// Its web page and REST API.
    pub url: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Drop for MailSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `cargo xtask test` installed the packages.
fn packages() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/mail/node_modules");
    assert!(
        dir.join("maildev").is_dir(),
        "{} is missing: run the tests with `cargo xtask test` (it runs `npm ci` there)",
        dir.display()
    );
    dir
}

/// One email as the sink shows it.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

impl MailSink {
    /// Starts a sink and waits until its API answers.
    pub async fn start() -> Self {
        let (smtp, web) = (crate::free_port(), crate::free_port());
        let dir =
            std::env::temp_dir().join(format!("streamshop-mail-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("the sink's folder");
        let child = Command::new("node")
            .arg(packages().join("maildev/dist/bin/maildev.js"))
            .args(["--smtp", &smtp.to_string(), "--ip", "127.0.0.1"])
            .args(["--web", &web.to_string(), "--web-ip", "127.0.0.1"])
            .arg("--mail-directory")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node maildev (node must be installed)");
        let sink = Self {
            _child: child,
            smtp_url: format!("smtp://127.0.0.1:{smtp}"),
            url: format!("http://127.0.0.1:{web}"),
            dir,
            http: reqwest::Client::new(),
        };
        crate::eventually(Duration::from_secs(30), "maildev to start", || async {
            let answer = sink
                .http
                .get(format!("{}/api/healthz", sink.url))
                .send()
                .await
                .ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        sink
    }

    /// Every email received so far, oldest first.
    pub async fn received(&self) -> Vec<Received> {
        let all: Value = self
            .http
            .get(format!("{}/api/email", self.url))
            .send()
            .await
            .expect("maildev answers")
            .json()
            .await
            .expect("maildev's list is JSON");
        all.as_array()
            .into_iter()
            .flatten()
            .map(|m| Received {
                to: m["to"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["address"].as_str().map(str::to_owned))
                    .collect(),
                subject: m["subject"].as_str().unwrap_or_default().to_owned(),
                text: m["text"].as_str().unwrap_or_default().to_owned(),
                html: m["html"].as_str().unwrap_or_default().to_owned(),
                message_id: m["messageId"]
                    .as_str()
                    .or(m["headers"]["message-id"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect()
    }

    /// The emails to `address`.
    pub async fn to(&self, address: &str) -> Vec<Received> {
        self.received()
            .await
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Waits up to `timeout` until `address` has received `n` emails; those emails.
    pub async fn wait_for(&self, address: &str, n: usize, timeout: Duration) -> Vec<Received> {
        crate::eventually(timeout, &format!("{n} emails to {address}"), || async {
            let got = self.to(address).await;
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Checks `html` with html-validate (the HTML standard's rules and the accessibility ones, as
/// `xtask/mail/.htmlvalidate.json` sets them); the validator's report when it finds anything.
pub async fn validate_html(html: &str) -> Result<(), String> {
    let file = std::env::temp_dir().join(format!(
        "streamshop-email-{}.html",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, html).expect("write the HTML to check");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/mail/.htmlvalidate.json");
    let out = Command::new("node")
        .arg(packages().join("html-validate/bin/html-validate.mjs"))
        .arg("--config")
        .arg(config)
        .arg(&file)
        .output()
        .await
        .expect("run html-validate");
    let _ = std::fs::remove_file(&file);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
