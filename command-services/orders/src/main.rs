//! Entry point of the orders service.
#![forbid(unsafe_code)]

use anyhow::Context;
use runtime::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = runtime::env::Env::from_process();
    let settings = orders::settings(&env).context("reading settings")?;
    let process = Process::start("orders", &settings.log, &settings.failpoints, None);
    orders::app(&settings)
        .await?
        .run(process.shutdown.clone())
        .await
}
