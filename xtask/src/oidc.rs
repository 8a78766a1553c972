//! The local OpenID provider (`xtask/oidc`, panva's oidc-provider on Node.js): its npm
//! packages, the process `up` runs on port 8090 with its signing keys and the operator
//! client's secret under the state folder, and the tokens `cargo xtask token` prints.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::layout::Layout;
use crate::proc;

fn scripts(layout: &Layout) -> PathBuf {
    layout.workspace.join("xtask/oidc")
}

/// Installs the provider's npm packages from its lock file (`crate::npm`).
pub fn install(layout: &Layout) -> anyhow::Result<()> {
    crate::npm::install(&scripts(layout), "oidc")
}

/// The provider under `cargo xtask up`; `url()` is its issuer, the gateway's default
/// `OIDC_ISSUER_URL`.
pub const HELPER: proc::Helper = proc::Helper {
    name: "oidc",
    port: 8090,
    ready_path: "/.well-known/openid-configuration",
};

/// Where the operator client's secret is kept.
fn operator_secret_file(layout: &Layout) -> PathBuf {
    HELPER.state(layout).join("operator-secret")
}

/// The operator client's secret, made on first use and kept with the keys, in a file created
/// readable by its owner only (never written first and narrowed after).
fn operator_secret(layout: &Layout) -> anyhow::Result<String> {
    use std::io::Read;
    let path = operator_secret_file(layout);
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().to_owned());
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::secrets::private_dir(&HELPER.state(layout))?;
    crate::secrets::write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// Starts the provider unless it runs, and waits for its discovery document.
pub fn start(layout: &Layout) -> anyhow::Result<()> {
    if HELPER.already_running(layout) {
        return Ok(());
    }
    std::fs::create_dir_all(HELPER.state(layout))?;
    let mut cmd = Command::new("node");
    cmd.arg(scripts(layout).join("provider.mjs"))
        .env("OIDC_PORT", HELPER.port.to_string())
        .env("OIDC_KEYS", HELPER.state(layout).join("keys.json"))
        .env("OIDC_OPERATOR_SECRET", operator_secret(layout)?);
    HELPER.launch(layout, cmd)
}

pub fn status(layout: &Layout) {
    HELPER.status(layout, &HELPER.url());
}

/// Prints an access token from the running provider: a customer's (authorization code
/// flow with PKCE, as a frontend gets one) or an operator's (client credentials).
pub fn token(layout: &Layout, customer: Option<&str>, admin: bool) -> anyhow::Result<()> {
    if !HELPER.running(layout) {
        bail!("the OpenID provider is not running: start the stack with `cargo xtask up`");
    }
    if !login_command(layout, customer, admin)?
        .status()
        .context("running node login.mjs")?
        .success()
    {
        bail!("no token: see the message above");
    }
    Ok(())
}

/// `node login.mjs` for a customer or the operator. The operator's secret stays in its file
/// (login.mjs reads it): a process's arguments are readable by every user of the machine.
fn login_command(layout: &Layout, customer: Option<&str>, admin: bool) -> anyhow::Result<Command> {
    let mut cmd = Command::new("node");
    cmd.arg(scripts(layout).join("login.mjs"))
        .args(["--issuer", &HELPER.url()]);
    match (customer, admin) {
        (Some(id), false) => {
            cmd.args(["--customer", id]);
        }
        (None, true) => {
            operator_secret(layout)?;
            cmd.arg("--admin")
                .arg("--secret-file")
                .arg(operator_secret_file(layout));
        }
        _ => bail!("say either --customer <uuid> or --admin"),
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_operator_s_secret_is_in_a_private_file_and_never_an_argument() {
        let scratch = std::env::temp_dir().join(format!("xtask-oidc-{}", uuid::Uuid::new_v4()));
        let mut layout = Layout::test().unwrap();
        layout.root = scratch.clone();
        let cmd = login_command(&layout, None, true).unwrap();
        let secret = operator_secret(&layout).unwrap();
        assert!(cmd
            .get_args()
            .all(|a| !a.to_string_lossy().contains(&secret)));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&operator_secret_file(&layout)), 0o600);
        assert_eq!(mode(&HELPER.state(&layout)), 0o700);
        let _ = std::fs::remove_dir_all(scratch);
    }
}
