//! Entry point of the orchestrator.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = orchestrator::Settings::from_env(&env).context("reading settings")?;
    let markers = settings.failpoint_marker_dir.clone();
    let process = Process::start("orchestrator", &settings.basics, markers);
    let basics = &settings.basics;
    let app = process
        .build(basics.http_addr, basics.tls.as_ref(), || {
            orchestrator::App::build(&settings)
        })
        .await?;
    app.run(process.shutdown.clone()).await
}
