//! Entry point of the payments service.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = payments::settings(&env).context("reading settings")?;
    let process = Process::start("payments", &settings.service.basics, None);
    process
        .serve(
            &settings.service.basics,
            || payments::app(&settings),
            command_kit::CommandApp::run,
        )
        .await
}
