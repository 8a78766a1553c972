//! Entry point of the payments service.
#![forbid(unsafe_code)]

use anyhow::Context;
use runtime::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = runtime::env::Env::from_process();
    let settings = payments::settings(&env).context("reading settings")?;
    let common = &settings.service;
    let process = Process::start("payments", &common.log, &common.failpoints, None);
    payments::app(&settings)
        .await?
        .run(process.shutdown.clone())
        .await
}
