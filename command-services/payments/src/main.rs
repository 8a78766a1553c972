//! Entry point of the payments service.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings =
        payments::settings(&runtime::env::Env::from_process()).context("reading settings")?;
    let _telemetry = runtime::telemetry::init("payments", &settings.service.log);
    runtime::metrics::install("payments");
    runtime::failpoint::arm(&settings.service.failpoints);
    let shutdown = runtime::shutdown::on_signal();
    let app = payments::app(&settings).await?;
    tracing::info!(addr = %app.local_addr(), "payments service listening");
    app.run(shutdown).await
}
