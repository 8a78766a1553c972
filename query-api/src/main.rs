//! Entry point of the query API.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = query_api::Settings::from_env(&env).context("reading settings")?;
    let process = Process::start("query-api", &settings.basics, None);
    let basics = &settings.basics;
    let app = process
        .build(basics.http_addr, basics.tls.as_ref(), || {
            query_api::App::build(&settings)
        })
        .await?;
    app.run(process.shutdown.clone()).await
}
