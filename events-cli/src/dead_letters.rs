//! `events dead-letters`: an operator's list, replay and discard of the projections' dead
//! letters, through the projections service's API (so a replay runs the deployed projection
//! code, the one that carries the fix).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the projections service answers, and what to do.
#[derive(Debug, Args)]
pub struct DeadLetterArgs {
    /// The projections service (the local stack's, by default).
    #[arg(
        long,
        env = "PROJECTIONS_URL",
        default_value_t = topology::PROJECTIONS.local_url()
    )]
    pub projections_url: String,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Print dead letters as JSON lines, oldest first.
    List {
        /// Only this projection's.
        #[arg(long)]
        projection: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Apply a dead letter again, with its aggregate's later events held behind it, in order.
    Replay { id: i64 },
    /// Remove a dead letter for good: the read model goes without that event.
    Discard { id: i64 },
}

/// Runs `action`; an operator's certificate (`operator.crt` in `tls_dir`) is shown when a TLS
/// folder is given, as the internal services ask for one.
pub async fn run(
    args: &DeadLetterArgs,
    tls_dir: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let client = client(tls_dir)?;
    let base = args.projections_url.trim_end_matches('/');
    let request = match &args.action {
        Action::List { projection, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(p) = projection {
                query.push(("projection", p.clone()));
            }
            client.get(format!("{base}/dead-letters")).query(&query)
        }
        Action::Replay { id } => client.post(format!("{base}/dead-letters/{id}/replay")),
        Action::Discard { id } => client.delete(format!("{base}/dead-letters/{id}")),
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("calling the projections service at {base}"))?;
    let status = response.status();
    let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
        Value::Null
    } else {
        response.json().await.context("reading the answer")?
    };
    if !status.is_success() {
        anyhow::bail!("{status}: {}", describe(&body));
    }
    match &args.action {
        Action::List { .. } => {
            let items = body["items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                println!("{item}");
            }
            eprintln!("{} dead letters", items.len());
        }
        Action::Replay { id } => {
            let letters = body["letters"].as_array().map_or(0, Vec::len);
            println!("{body}");
            eprintln!("dead letter {id} replayed: {letters} events applied in order");
        }
        Action::Discard { id } => eprintln!("dead letter {id} discarded"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A problem+json body in one line: its title and detail.
fn describe(body: &Value) -> String {
    match (body["title"].as_str(), body["detail"].as_str()) {
        (Some(title), Some(detail)) => format!("{title}: {detail}"),
        (Some(title), None) => title.to_owned(),
        _ => body.to_string(),
    }
}

fn client(tls_dir: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(dir) = tls_dir {
        let tls = service_kit::tls::TlsSettings::new(dir, "operator");
        builder = builder.use_preconfigured_tls(
            tls.client_config()
                .context("the operators' certificate (operator.crt in the TLS folder)")?,
        );
    }
    builder.build().context("an HTTP client")
}
