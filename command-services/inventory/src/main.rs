//! Entry point of the inventory service.
#![forbid(unsafe_code)]

use anyhow::Context;
use runtime::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = runtime::env::Env::from_process();
    let settings = inventory::settings(&env).context("reading settings")?;
    let process = Process::start("inventory", &settings.log, &settings.failpoints, None);
    inventory::app(&settings)
        .await?
        .run(process.shutdown.clone())
        .await
}
