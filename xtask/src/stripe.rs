//! The local Stripe-compatible server (localstripe, from PyPI) that `up` runs on port 8420 and
//! points the payments service at: its packages, its secret key (a random `sk_test_` key in
//! the state folder, readable by its owner only) and its records, kept between runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::layout::Layout;
use crate::proc;

/// The server's port under `cargo xtask up`.
pub const PORT: u16 = 8420;

pub fn api_base() -> String {
    format!("http://127.0.0.1:{PORT}")
}

fn state(layout: &Layout) -> PathBuf {
    layout.root.join("stripe")
}

fn pid_file(layout: &Layout) -> PathBuf {
    layout.run_dir().join("stripe.pid")
}

/// The file holding the environment's secret key, made on first use.
pub fn secret_key_file(layout: &Layout) -> anyhow::Result<PathBuf> {
    let path = state(layout).join("secret-key");
    if !path.exists() {
        crate::secrets::private_dir(&state(layout))?;
        let key = format!("sk_test_{}", uuid::Uuid::new_v4().simple());
        crate::secrets::write_private(&path, key.as_bytes())?;
    }
    Ok(path)
}

/// Starts the server unless it runs, and waits until it answers.
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    if let Some(pid) = proc::running_pid(&pid_file(layout)) {
        println!("stripe: already running on port {PORT} (pid {pid})");
        return Ok(());
    }
    let packages = crate::python::stripe_packages(layout)?;
    crate::secrets::private_dir(&state(layout))?;
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
    .args(["--port", &PORT.to_string(), "--state"])
    .arg(state(layout).join("records.pickle"))
    .env("PYTHONPATH", packages);
    let log = layout.logs().join("stripe.log");
    let pid = proc::spawn_detached(cmd, &log, &pid_file(layout))?;
    // Its one page that needs no key: the answer says it serves.
    proc::wait_http_ok(
        "stripe",
        PORT,
        "/js.stripe.com/v3/",
        None,
        Duration::from_secs(30),
        &log,
        Some(pid),
    )?;
    println!("stripe: localstripe running on port {PORT} (pid {pid})");
    Ok(())
}

/// Whether this environment's server runs.
pub fn running(layout: &Layout) -> bool {
    proc::running_pid(&pid_file(layout)).is_some()
}

pub fn stop(layout: &Layout) {
    proc::stop_helper("stripe", &pid_file(layout));
}

pub fn status(layout: &Layout) {
    proc::helper_status(
        "stripe",
        &pid_file(layout),
        &format!("{} (localstripe)", api_base()),
    );
}
