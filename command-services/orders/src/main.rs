//! Entry point of the orders service.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings =
        orders::settings(&runtime::env::Env::from_process()).context("reading settings")?;
    let _telemetry = runtime::telemetry::init("orders", &settings.log);
    runtime::metrics::install("orders");
    runtime::failpoint::arm(&settings.failpoints);
    let shutdown = runtime::shutdown::on_signal();
    let app = orders::app(&settings).await?;
    tracing::info!(addr = %app.local_addr(), "orders service listening");
    app.run(shutdown).await
}
