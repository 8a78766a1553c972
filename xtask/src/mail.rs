//! The local SMTP sink (`xtask/mail`: maildev from npm) that `up` runs: it takes the order
//! emails the notification service sends on port 1025 and shows them on a web page on port
//! 1080 (and its REST API at `/api/email`), keeping them in the state folder between runs.

use std::process::Command;

use crate::layout::Layout;
use crate::proc;

/// The SMTP port, the notification service's `SMTP_URL`.
pub const SMTP_PORT: u16 = 1025;

/// maildev under `cargo xtask up`: `url()` is its web page.
pub const HELPER: proc::Helper = proc::Helper {
    name: "mail",
    port: 1080,
    ready_path: "/api/healthz",
};

/// Installs maildev (and the HTML validator the tests use) from the lock file.
pub fn install(layout: &Layout) -> anyhow::Result<()> {
    crate::npm::install(&layout.workspace.join("xtask/mail"), "mail")
}

/// The notification service's `SMTP_URL`.
pub fn smtp_url() -> String {
    format!("smtp://127.0.0.1:{SMTP_PORT}")
}

/// Starts the sink unless it runs, and waits for its web page.
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    if HELPER.already_running(layout) {
        return Ok(());
    }
    install(layout)?;
    let store = HELPER.state(layout).join("messages");
    std::fs::create_dir_all(&store)?;
    let mut cmd = Command::new("node");
    cmd.arg(
        layout
            .workspace
            .join("xtask/mail/node_modules/maildev/dist/bin/maildev.js"),
    )
    .args(["--smtp", &SMTP_PORT.to_string(), "--ip", "127.0.0.1"])
    .args(["--web", &HELPER.port.to_string(), "--web-ip", "127.0.0.1"])
    .arg("--mail-directory")
    .arg(store);
    HELPER.launch(layout, cmd)
}

pub fn status(layout: &Layout) {
    HELPER.status(
        layout,
        &format!("{} (SMTP on {})", HELPER.url(), smtp_url()),
    );
}
