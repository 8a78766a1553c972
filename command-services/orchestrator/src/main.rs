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
    process
        .serve(
            &settings.basics,
            || orchestrator::App::build(&settings),
            orchestrator::App::run,
        )
        .await
}
