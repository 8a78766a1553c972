//! Entry point of the projections worker.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = projections::Settings::from_env(&runtime::env::Env::from_process())
        .context("reading settings")?;
    runtime::telemetry::init("projections", &settings.log);
    runtime::failpoint::arm(&settings.failpoints);
    let shutdown = runtime::shutdown::on_signal();
    let app = projections::App::build(&settings).await?;
    tracing::info!(addr = %app.local_addr(), "projections worker listening");
    app.run(shutdown).await
}
