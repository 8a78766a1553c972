//! Entry point of the orders service.
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = command_kit::settings::<orders::OrdersSpec>(&env).context("reading settings")?;
    let spec = orders::OrdersSpec::from_env(&env).context("reading settings")?;
    let master = orders::keys::master_key(&env)?;
    let process = service_kit::service::Process::start("orders", &settings.basics, None);
    let build = || {
        let master = master.clone();
        command_kit::CommandApp::build(&settings, spec, move |resources| {
            Ok(orders::parts(resources, master))
        })
    };
    process
        .serve(&settings.basics, build, command_kit::CommandApp::run)
        .await
}
