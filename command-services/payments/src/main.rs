//! Entry point of the payments service.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = payments::settings(&env).context("reading settings")?;
    let process = Process::start("payments", &settings.service.basics, None);
    let basics = &settings.service.basics;
    process
        .build(basics.http_addr, basics.tls.as_ref(), || {
            payments::app(&settings)
        })
        .await?
        .run(process.shutdown.clone())
        .await
}
