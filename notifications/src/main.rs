//! Entry point of the notification service.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = notifications::Settings::from_env(&env).context("reading settings")?;
    let process = Process::start("notifications", &settings.basics, None);
    process
        .serve(
            &settings.basics,
            || notifications::App::build(&settings),
            notifications::App::run,
        )
        .await
}
