//! Entry point of the query API.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = query_api::Settings::from_env(&runtime::env::Env::from_process())
        .context("reading settings")?;
    let _telemetry = runtime::telemetry::init("query-api", &settings.log);
    runtime::metrics::install("query-api");
    let shutdown = runtime::shutdown::on_signal();
    let app = query_api::App::build(&settings).await?;
    tracing::info!(addr = %app.local_addr(), "query API listening");
    app.run(shutdown).await
}
