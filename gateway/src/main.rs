//! The gateway binary: reads its settings, serves until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::env::Env;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = gateway::Settings::from_env(&Env::from_process()).context("reading settings")?;
    let process = Process::start_with("gateway", &settings.log, "", None);
    // Its public side is plain HTTP (a load balancer terminates TLS in front).
    let app = process
        .build(settings.http_addr, None, || gateway::App::build(&settings))
        .await?;
    app.run(process.shutdown.clone()).await
}
