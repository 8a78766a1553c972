//! Entry point of the notification service.
#![forbid(unsafe_code)]

use anyhow::Context;
use service_kit::service::Process;

fn main() -> anyhow::Result<()> {
    let env = service_kit::env::Env::from_process();
    let settings = notifications::Settings::from_env(&env).context("reading settings")?;
    // Before the runtime starts its threads: on Linux niceness is a thread's, and a new
    // thread takes its creator's.
    let lowered = rustix::process::setpriority_process(None, settings.niceness);
    let mut runtime = if settings.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(settings.worker_threads);
        builder
    };
    runtime
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(async {
            let process = Process::start("notifications", &settings.basics, None);
            match lowered {
                Ok(()) => tracing::info!(niceness = settings.niceness, "CPU priority lowered"),
                Err(e) => tracing::warn!(niceness = settings.niceness, error = %e, "the CPU priority could not be lowered; running at the inherited one"),
            }
            process
                .serve(
                    &settings.basics,
                    || notifications::App::build(&settings),
                    notifications::App::run,
                )
                .await
        })
}
