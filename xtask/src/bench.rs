//! `cargo xtask bench`: release builds of every service and of the load generator, a fresh
//! durable Postgres cluster and NATS server of their own, then `loadgen run`, which writes the
//! report to `.state/bench-report/` (git-ignored).

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context;

use crate::layout::Layout;
use crate::{nats, oidc, postgres, services};

pub fn run(loadgen_args: &[String]) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let layout = Layout::bench()?;
    // Fresh servers and data every run: no run inherits another's tables or streams.
    nats::stop(&layout);
    postgres::stop(&layout);
    layout.remove_state()?;
    let layout = layout.with_free_ports()?;
    let bins = services::build(
        &layout,
        true,
        &[("loadgen", "loadgen"), ("events-cli", "events")],
    )?;
    // The gateway figure gets its customers' tokens from the local OpenID provider.
    oidc::install(&layout)?;
    println!(
        "bench: release build ready after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    postgres::start(&layout)?;
    let result = nats::start(&layout).and_then(|()| drive(&layout, &bins, loadgen_args));
    nats::stop(&layout);
    postgres::stop(&layout);
    let code = result?;
    println!(
        "bench: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

fn drive(
    layout: &Layout,
    bins: &std::path::Path,
    loadgen_args: &[String],
) -> anyhow::Result<ExitCode> {
    let mut cmd = loadgen_command(layout, bins, &crate::nats::binary(layout)?)?;
    if let Some(pid) = postgres::postmaster_pid(layout) {
        cmd.args(["--pg-pid", &pid.to_string()]);
    }
    if let Some(pid) = nats::pid(layout) {
        cmd.args(["--nats-pid", &pid.to_string()]);
    }
    let status = cmd
        .args(loadgen_args)
        .current_dir(&layout.workspace)
        .status()
        .context("running loadgen")?;
    if !status.success() {
        eprintln!(
            "bench: loadgen failed; the services' logs are in {}",
            layout.logs().display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `loadgen run` on this layout's servers. URLs with passwords go in its environment: a
/// process's arguments are readable by every user of the machine.
fn loadgen_command(
    layout: &Layout,
    bins: &std::path::Path,
    nats_server: &std::path::Path,
) -> anyhow::Result<Command> {
    let out = layout.workspace.join(".state/bench-report");
    let mut cmd = Command::new(bins.join("loadgen"));
    cmd.arg("run")
        .env("LOADGEN_PG_ADMIN_URL", layout.pg_admin_url()?)
        .env(
            "LOADGEN_NATS_ANALYST_URL",
            crate::nats::analyst_url(layout)?,
        )
        .args(["--nats-url", &layout.nats_url()])
        .arg("--nats-credentials")
        .arg(crate::nats::credentials_dir(layout))
        .arg("--tls-dir")
        .arg(crate::tls::dir(layout))
        .arg("--nats-server")
        .arg(nats_server)
        .arg("--nats-config")
        .arg(crate::nats::config_path(layout))
        .arg("--bins")
        .arg(bins)
        .arg("--out")
        .arg(&out)
        .arg("--logs")
        .arg(layout.logs())
        .args(["--commit", &commit(layout)]);
    Ok(cmd)
}

/// The commit measured, marked when the work tree has changes.
fn commit(layout: &Layout) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&layout.workspace)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain"]) {
        Some(changes) if !changes.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_password_is_in_loadgen_s_arguments() {
        let scratch = std::env::temp_dir().join(format!("xtask-bench-{}", uuid::Uuid::new_v4()));
        let mut layout = Layout::bench().unwrap();
        layout.root = scratch.clone();
        let cmd = loadgen_command(
            &layout,
            std::path::Path::new("/bins"),
            std::path::Path::new("/nats-server"),
        )
        .unwrap();
        let passwords = [
            crate::secrets::password(&layout, "postgres").unwrap(),
            crate::secrets::password(&layout, "nats-analyst").unwrap(),
        ];
        for arg in cmd.get_args() {
            let arg = arg.to_string_lossy();
            assert!(passwords.iter().all(|p| !arg.contains(p.as_str())), "{arg}");
        }
        let env: Vec<String> = cmd
            .get_envs()
            .filter_map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
            .collect();
        for password in &passwords {
            assert!(
                env.iter().any(|v| v.contains(password.as_str())),
                "passed in the environment"
            );
        }
        let _ = std::fs::remove_dir_all(scratch);
    }
}
