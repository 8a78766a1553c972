//! The local Stripe-compatible server (localstripe, from PyPI) that `up` runs on port 8420 and
//! points the payments service at: its packages, its secret key (a random `sk_test_` key in
//! the state folder, readable by its owner only) and its records, kept between runs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::layout::Layout;
use crate::proc;

/// localstripe under `cargo xtask up`; `url()` is the services' `STRIPE_API_BASE`.
pub const HELPER: proc::Helper = proc::Helper {
    name: "stripe",
    port: 8420,
    ready_path: "/js.stripe.com/v3/",
};

/// The file holding the environment's secret key, made on first use.
pub fn secret_key_file(layout: &Layout) -> anyhow::Result<PathBuf> {
    let path = HELPER.state(layout).join("secret-key");
    if !path.exists() {
        crate::secrets::private_dir(&HELPER.state(layout))?;
        let key = format!("sk_test_{}", uuid::Uuid::new_v4().simple());
        crate::secrets::write_private(&path, key.as_bytes())?;
    }
    Ok(path)
}

/// Starts the server unless it runs, and waits until it answers.
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    if HELPER.already_running(layout) {
        return Ok(());
    }
    let packages = crate::python::stripe_packages(layout)?;
    crate::secrets::private_dir(&HELPER.state(layout))?;
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("python3 is needed for the local Stripe-compatible server")?;
    let mut cmd = Command::new(python);
    cmd.arg(
        layout
            .workspace
            .join("command-services/payments/local-stripe/run.py"),
    )
    .args(["--port", &HELPER.port.to_string(), "--state"])
    .arg(HELPER.state(layout).join("records.pickle"))
    .env("PYTHONPATH", packages);
    HELPER.launch(layout, cmd)
}

pub fn status(layout: &Layout) {
    HELPER.status(layout, &format!("{} (localstripe)", HELPER.url()));
}
