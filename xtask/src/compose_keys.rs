//! The NATS identities of the compose stack: committed development keys under
//! `docker/nats/keys/` (one file per identity, each mounted only into its own service) and the
//! server configuration `docker/nats/nats.conf` generated from them and from
//! `messaging::identity`. Like the compose file's database passwords, they are for a laptop.

use std::path::{Path, PathBuf};

use anyhow::Context;
use messaging::identity::Scope;
use messaging::Identity;

/// The analysts' password in the compose stack.
pub const ANALYST_PASSWORD: &str = "analyst-dev-password";

pub fn dir(workspace: &Path) -> PathBuf {
    workspace.join("docker/nats")
}

/// The public key of `name`'s committed seed.
fn public_key(workspace: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir(workspace).join("keys").join(format!("{name}.nk"));
    let seed = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (run `cargo xtask compose-keys`)",
            path.display()
        )
    })?;
    Ok(nkeys::KeyPair::from_seed(seed.trim())?.public_key())
}

/// `docker/nats/nats.conf` as the committed keys and the identities' permissions make it.
pub fn config(workspace: &Path) -> anyhow::Result<String> {
    let users = crate::nats::users(|name| public_key(workspace, name), ANALYST_PASSWORD)?;
    Ok(format!(
        "# Written by `cargo xtask compose-keys` from messaging::identity and docker/nats/keys.\n\
         # Development keys: make new ones for anything but a laptop.\n{}",
        messaging::identity::authorization(&users, &Scope::Namespace(Default::default()))
    ))
}

/// Makes the keys that are missing and writes the configuration.
pub fn write(workspace: &Path) -> anyhow::Result<()> {
    let keys = dir(workspace).join("keys");
    std::fs::create_dir_all(&keys)?;
    let names = std::iter::once("admin").chain(
        Identity::ALL
            .into_iter()
            .filter(|i| *i != Identity::Analyst)
            .map(Identity::name),
    );
    for name in names {
        let path = keys.join(format!("{name}.nk"));
        if !path.exists() {
            std::fs::write(&path, nkeys::KeyPair::new_user().seed()?)?;
            println!("compose: made {}", path.display());
        }
    }
    let path = dir(workspace).join("nats.conf");
    std::fs::write(&path, config(workspace)?)?;
    println!("compose: wrote {}", path.display());
    Ok(())
}
