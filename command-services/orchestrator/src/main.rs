//! Entry point of the orchestrator.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = orchestrator::Settings::from_env(&runtime::env::Env::from_process())
        .context("reading settings")?;
    let _telemetry = runtime::telemetry::init("orchestrator", &settings.log);
    runtime::metrics::install("orchestrator");
    runtime::failpoint::arm_with_markers(
        &settings.failpoints,
        settings.failpoint_marker_dir.clone(),
    );
    let shutdown = runtime::shutdown::on_signal();
    let app = orchestrator::App::build(&settings).await?;
    tracing::info!(addr = %app.local_addr(), "orchestrator listening");
    app.run(shutdown).await
}
