//! The identities of the compose stack: committed development keys under `docker/nats/keys/`
//! (one file per identity, each mounted only into its own service), the server configuration
//! `docker/nats/nats.conf` generated from them and from `messaging::identity`, and a local CA
//! with every holder's certificate under `docker/tls/` (each service mounts the CA and its
//! own certificate and key). Like the compose file's database passwords, they are for a
//! laptop: anyone with this repository has the keys.

use std::path::{Path, PathBuf};

use anyhow::Context;
use messaging::identity::Scope;
use messaging::Identity;

/// Where the compose stack's CA and certificates are committed.
pub fn tls_dir(workspace: &Path) -> PathBuf {
    workspace.join("docker/tls")
}

/// Where the NATS container finds its certificate, key and the CA.
pub const NATS_TLS_DIR: &str = "/etc/nats/tls";

/// The committed certificates last ten years: long enough that a clone still starts.
const COMPOSE_VALIDITY: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

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
         # Development keys: make new ones for anything but a laptop.\n{}\n{}",
        messaging::identity::authorization(&users, &Scope::Namespace(Default::default())),
        messaging::server_config::tls_block(NATS_TLS_DIR, "")
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
    crate::tls::ensure_for(
        &tls_dir(workspace),
        COMPOSE_VALIDITY,
        std::time::Duration::ZERO,
        crate::tls::Keys::Shared,
    )?;
    // The orders service's master key of the customers' data keys: development only, like
    // everything here.
    let master = workspace.join("docker/keys/data-keys-master.key");
    if !master.exists() {
        std::fs::create_dir_all(master.parent().expect("a folder"))?;
        let key = runtime::sealing::Key::generate()
            .map_err(|e| anyhow::anyhow!("making a master key: {e}"))?;
        std::fs::write(&master, key.to_base64())?;
        println!("compose: made {}", master.display());
    }
    let path = dir(workspace).join("nats.conf");
    std::fs::write(&path, config(workspace)?)?;
    println!("compose: wrote {}", path.display());
    Ok(())
}
