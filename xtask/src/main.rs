//! `cargo xtask`: runs the whole stack locally and the test suite, with nothing installed by
//! hand beyond Rust, Python 3 with pip and the Postgres server binaries.
#![forbid(unsafe_code)]

mod layout;
mod nats;
mod postgres;
mod proc;
mod services;

#[cfg(test)]
mod compose_check;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::layout::Layout;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Run streamshop locally and test it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start Postgres, NATS and every service (idempotent); print the URLs.
    Up {
        /// Build and run the services in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Stop every service, NATS and Postgres (state is kept).
    Down,
    /// Show what is running.
    Status,
    /// Stop everything and delete all local state (databases, streams, logs).
    Reset,
    /// Start fresh test infrastructure and run the whole test suite.
    Test {
        /// Leave the test Postgres and NATS running afterwards.
        #[arg(long)]
        keep: bool,
        /// Arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up { release } => up(release),
        Command::Down => down(),
        Command::Status => status(),
        Command::Reset => reset(),
        Command::Test { keep, cargo_args } => test(keep, &cargo_args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(release: bool) -> anyhow::Result<ExitCode> {
    let layout = Layout::dev()?;
    postgres::start(&layout)?;
    postgres::provision(&layout)?;
    nats::start(&layout)?;
    let bins = services::build(&layout, release)?;
    services::start_all(&layout, &bins)?;
    services::print_urls(&layout);
    Ok(ExitCode::SUCCESS)
}

fn down() -> anyhow::Result<ExitCode> {
    let layout = Layout::dev()?;
    services::stop_all(&layout);
    nats::stop(&layout);
    postgres::stop(&layout);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn status() -> anyhow::Result<ExitCode> {
    let layout = Layout::dev()?;
    postgres::status(&layout);
    nats::status(&layout);
    services::status(&layout);
    Ok(ExitCode::SUCCESS)
}

fn reset() -> anyhow::Result<ExitCode> {
    let dev = Layout::dev()?;
    let test = Layout::test()?;
    for layout in [&dev, &test] {
        services::stop_all(layout);
        nats::stop(layout);
        postgres::stop(layout);
        layout.remove_state()?;
    }
    println!("all local state removed");
    Ok(ExitCode::SUCCESS)
}

fn test(keep: bool, cargo_args: &[String]) -> anyhow::Result<ExitCode> {
    let layout = Layout::test()?;
    // A fresh cluster and NATS store every run: no state leaks between runs.
    nats::stop(&layout);
    postgres::stop(&layout);
    layout.remove_state()?;
    postgres::start(&layout)?;
    nats::start(&layout)?;

    println!("xtask: cargo fmt --check");
    let fmt = std::process::Command::new(layout::cargo())
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(&layout.workspace)
        .status()
        .context("running cargo fmt")?;
    let mut code = if fmt.success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: cargo fmt --check failed: run `cargo fmt --all`");
        ExitCode::FAILURE
    };

    // `-p NAME` narrows the run; otherwise the whole workspace is tested.
    let narrowed = cargo_args
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package"));
    let mut cargo_test = std::process::Command::new(layout::cargo());
    cargo_test.arg("test");
    if !narrowed {
        cargo_test.arg("--workspace");
    }
    println!("xtask: {cargo_test:?}");
    let tests = cargo_test
        .args(cargo_args)
        .env("STREAMSHOP_TEST_PG_URL", layout.pg_admin_url())
        .env("STREAMSHOP_TEST_NATS_URL", layout.nats_url())
        .current_dir(&layout.workspace)
        .status()
        .context("running cargo test")?;
    if !tests.success() {
        code = ExitCode::FAILURE;
    }
    if !keep {
        nats::stop(&layout);
        postgres::stop(&layout);
    }
    Ok(code)
}
