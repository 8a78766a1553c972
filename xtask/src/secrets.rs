//! The passwords of an environment's local servers: made at random the first time they are
//! needed, kept in `<state>/secrets.json` (readable by its owner only), never printed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use anyhow::Context;

use crate::layout::Layout;

/// The password of `name` (a Postgres role) in this environment, made when first asked for.
pub fn password(layout: &Layout, name: &str) -> anyhow::Result<String> {
    let path = layout.root.join("secrets.json");
    let mut all: BTreeMap<String, String> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of strings", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Some(existing) = all.get(name) {
        return Ok(existing.clone());
    }
    let made = uuid::Uuid::new_v4().simple().to_string();
    all.insert(name.to_owned(), made.clone());
    std::fs::create_dir_all(&layout.root)?;
    write_private(&path, serde_json::to_string_pretty(&all)?.as_bytes())?;
    Ok(made)
}

/// The file holding this environment's master key of the customers' data keys (32 random
/// bytes, base64), made readable by its owner only the first time it is asked for. Losing it
/// makes every sealed payment token of the environment unreadable.
pub fn data_keys_master(layout: &Layout) -> anyhow::Result<std::path::PathBuf> {
    let path = layout.root.join("data-keys-master.key");
    if !path.exists() {
        std::fs::create_dir_all(&layout.root)?;
        let key = service_kit::sealing::Key::generate()
            .map_err(|e| anyhow::anyhow!("making the data keys' master key: {e}"))?;
        write_private(&path, key.to_base64().as_bytes())?;
    }
    Ok(path)
}

/// Makes `dir` (and its parents) with only its owner allowed in, created so rather than
/// narrowed after; an existing one is narrowed.
pub fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("narrowing {}", dir.display()))?;
    Ok(())
}

/// Writes `contents` to `path`, readable by its owner only from the first byte on (a file
/// written first and narrowed after would be readable by anyone in between).
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file that existed before keeps its mode on open: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
