//! Entry point of the inventory service.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings =
        command_kit::settings::<inventory::InventorySpec>(&env).context("reading settings")?;
    let spec = inventory::InventorySpec::from_env(&env).context("reading settings")?;
    let process = service_kit::service::Process::start("inventory", &settings.basics, None);
    let build = || {
        command_kit::CommandApp::build(&settings, spec, |_| Ok(command_kit::Parts::services(())))
    };
    process
        .serve(&settings.basics, build, command_kit::CommandApp::run)
        .await
}
