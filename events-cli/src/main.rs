//! Entry point of `events`, the analysts' tool over the event streams.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = events_cli::cli::Cli::parse();
    match events_cli::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("events: {e:#}");
            ExitCode::from(2)
        }
    }
}
