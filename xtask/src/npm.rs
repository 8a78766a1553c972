//! The npm packages of the local helpers written for Node.js (`xtask/oidc`, `xtask/mail`):
//! installed with `npm ci` from their lock files, again only when a lock file changed.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Installs the packages of `dir` (`npm ci`) unless its lock file is unchanged since the last
/// install; installs Node.js from Debian's packages when it is missing.
pub fn install(dir: &Path, what: &str) -> anyhow::Result<()> {
    if Command::new("node").arg("--version").output().is_err() {
        println!("{what}: Node.js is missing; installing Debian's nodejs and npm");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nodejs", "npm"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("Node.js (node and npm) is needed for the {what}; install it");
        }
    }
    let lock = std::fs::read_to_string(dir.join("package-lock.json"))
        .with_context(|| format!("reading {}/package-lock.json", dir.display()))?;
    let marker = dir.join("node_modules/.streamshop-installed");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(lock.as_str()) {
        return Ok(());
    }
    println!("{what}: installing its packages (npm ci)");
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("running npm ci")?;
    if !status.success() {
        bail!("npm ci failed in {}", dir.display());
    }
    std::fs::write(&marker, lock)?;
    Ok(())
}
