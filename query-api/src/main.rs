//! Entry point of the query API.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = query_api::Settings::from_env(&env).context("reading settings")?;
    let process = Process::start("query-api", &settings.basics, None);
    process
        .serve(
            &settings.basics,
            || query_api::App::build(&settings),
            query_api::App::run,
        )
        .await
}
