//! Entry point of the inventory service.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings =
        inventory::settings(&runtime::env::Env::from_process()).context("reading settings")?;
    let _telemetry = runtime::telemetry::init("inventory", &settings.log);
    runtime::metrics::install("inventory");
    runtime::failpoint::arm(&settings.failpoints);
    let shutdown = runtime::shutdown::on_signal();
    let app = inventory::app(&settings).await?;
    tracing::info!(addr = %app.local_addr(), "inventory service listening");
    app.run(shutdown).await
}
