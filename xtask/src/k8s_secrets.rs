//! `cargo xtask k8s-secrets`: every Secret the Kubernetes manifests use, made from fresh
//! material unless told otherwise. Nothing secret is in the manifests; this is the one place
//! that says which Secret holds what:
//!
//! | Secret | keys | used as |
//! |---|---|---|
//! | `<service>-tls` | `ca.pem`, `<holder>.crt`, `<holder>.key` | `TLS_DIR` (the holder is the service, `query` for query-api) |
//! | `<service>-nats` | `<service>.nk` | `NATS_CREDENTIALS_DIR` (every service but query-api) |
//! | `<service>-database` | `DATABASE_URL` [, `DATABASE_OWNER_URL`] | the services with a database |
//! | `pg-role-<role>` | `username`, `password` | CloudNativePG's roles (`_` as `-`) |
//! | `nats-tls` | `tls.crt`, `tls.key` | the NATS server's certificate |
//! | `nats-route-tls` | `tls.crt`, `tls.key` | the NATS routes' (`*.nats-headless`) |
//! | `streamshop-ca` | `ca.pem` | the CA NATS trusts |
//! | `nats-auth` | `auth.conf` | the NATS users (`authorization` block) |
//! | `orders-data-keys` | `master.key` | `DATA_KEYS_MASTER_KEY_FILE` of orders: wraps the customers' data keys |
//! | `payments-stripe` | `secret-key` | `STRIPE_SECRET_KEY_FILE` of payments: your Stripe key (`--stripe-secret-key-file`) |
//!
//! By default the material is made for the namespace and kept under `.state/k8s/<namespace>/`
//! (readable by its owner only), so a second run makes the same Secrets: a new CA, new keys
//! for every identity (the administrator's seed stays in that folder, never in a Secret), a
//! random password per database role and for the analysts. `--dev` takes the committed
//! development material of the compose stack instead (`docker/tls`, `docker/nats/keys`, the
//! `-dev-password`s): for a laptop's cluster only, and refused for the production overlay,
//! which also refuses any material the repository holds however it was given.
//!
//! The Stripe key cannot be made: it is yours, given with `--stripe-secret-key-file` (a
//! test-mode `sk_test_` key keeps every payment in Stripe's test mode). Without one the local
//! overlay gets a placeholder, with which the stack starts and every payment answers that the
//! provider refused the key; the production overlay refuses to go without one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};
use base64::Engine;
use messaging::identity::Scope;

/// What `k8s-secrets` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    /// The committed development material (docker/tls, docker/nats, dev passwords).
    pub dev: bool,
    /// The overlay the Secrets are for: `production` refuses development material.
    pub overlay: String,
    /// Print the Secrets (YAML) instead of applying them with kubectl.
    pub print: bool,
    /// Where fresh material is kept; default `.state/k8s/<namespace>`.
    pub state: Option<PathBuf>,
    /// A file holding the Stripe secret key for the payments service.
    pub stripe_secret_key_file: Option<PathBuf>,
}

/// The compose stack's committed key for its local Stripe-compatible server.
const COMPOSE_STRIPE_KEY: &str = "docker/stripe/secret-key";

/// The read-write Service CloudNativePG makes for the Cluster `streamshop-pg`.
const PG_HOST: &str = "streamshop-pg-rw:5432";

/// The material the Secrets are made of.
struct Material {
    /// The master key of the customers' data keys (base64).
    data_keys_master: PathBuf,
    /// The CA and the holders' certificates (and the routes').
    tls: PathBuf,
    /// `<name>.nk` seeds.
    nats_keys: PathBuf,
    /// Every database role's password, and the analysts' (`nats-analyst`).
    passwords: BTreeMap<String, String>,
    /// The Stripe secret key of payments.
    stripe_secret_key: PathBuf,
}

/// The beginning of the key kept when none was given: not a key Stripe knows.
const STRIPE_PLACEHOLDER: &str = "sk_test_placeholder_";

/// The Stripe key in `state`: the one given (checked to be a secret or restricted key), else
/// the one kept from an earlier run, else a placeholder.
fn stripe_key(state: &Path, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = state.join("stripe-secret-key");
    if let Some(given) = given {
        let key = std::fs::read_to_string(given)
            .with_context(|| format!("reading {}", given.display()))?;
        let key = key.trim();
        if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            bail!(
                "{} holds no Stripe secret or restricted key (sk_… or rk_…)",
                given.display()
            );
        }
        crate::secrets::write_private(&path, key.as_bytes())?;
    } else if !path.exists() {
        let placeholder = format!("{STRIPE_PLACEHOLDER}{}", uuid::Uuid::new_v4().simple());
        crate::secrets::write_private(&path, placeholder.as_bytes())?;
    }
    Ok(path)
}

pub fn run(workspace: &Path, options: &Options) -> anyhow::Result<ExitCode> {
    if options.overlay == "production" && options.dev {
        bail!("--dev takes the development keys committed in this repository: never for the production overlay");
    }
    if !matches!(options.overlay.as_str(), "local" | "production") {
        bail!(
            "--overlay is local or production, not {:?}",
            options.overlay
        );
    }
    let state = options
        .state
        .clone()
        .unwrap_or_else(|| workspace.join(".state/k8s").join(&options.namespace));
    let given = options.stripe_secret_key_file.as_deref();
    let material = if options.dev {
        development(workspace, &state, &options.namespace, given)?
    } else {
        fresh(&state, &options.namespace, given)?
    };
    let placeholder =
        std::fs::read_to_string(&material.stripe_secret_key)?.starts_with(STRIPE_PLACEHOLDER);
    if placeholder && options.overlay == "production" {
        bail!(
            "the production overlay takes payments with your Stripe key: give it with \
             --stripe-secret-key-file FILE"
        );
    }
    if placeholder {
        eprintln!(
            "k8s-secrets: payments-stripe holds a placeholder: payments are refused until you \
             run again with --stripe-secret-key-file FILE (a test-mode sk_test_ key will do)"
        );
    }
    if options.overlay == "production" {
        let reused = committed_in(workspace, &material)?;
        if !reused.is_empty() {
            bail!(
                "refusing to make production Secrets from material this repository holds: {}",
                reused.join(", ")
            );
        }
    }
    let yaml = render(&material, &options.namespace)?;
    if options.print {
        print!("{yaml}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut kubectl = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running kubectl (or use --print)")?;
    {
        use std::io::Write;
        let mut stdin = kubectl.stdin.take().context("kubectl's input")?;
        stdin.write_all(yaml.as_bytes())?;
    }
    let status = kubectl.wait()?;
    if !status.success() {
        bail!("kubectl apply failed");
    }
    eprintln!(
        "k8s-secrets: applied to namespace {} (material kept in {})",
        options.namespace,
        state.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The DNS names of the NATS routes' certificate: every node of the chart's StatefulSet
/// behind its headless Service.
fn route_names(namespace: &str) -> Vec<String> {
    vec![
        "*.nats-headless".to_owned(),
        format!("*.nats-headless.{namespace}.svc"),
        format!("*.nats-headless.{namespace}.svc.cluster.local"),
    ]
}

/// How long fresh certificates last; a run a month before they end makes new ones.
const VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Fresh material, made where it is missing and kept in `state`.
fn fresh(state: &Path, namespace: &str, stripe: Option<&Path>) -> anyhow::Result<Material> {
    crate::secrets::private_dir(state)?;
    let tls = state.join("tls");
    crate::secrets::private_dir(&tls)?;
    crate::tls::ensure(&tls)?;
    if !tls.join("nats-route.crt").exists() {
        crate::tls::issue(&tls, &tls, "nats-route", route_names(namespace), VALIDITY)?;
    }
    let nats_keys = state.join("nats-credentials");
    crate::secrets::private_dir(&nats_keys)?;
    for name in crate::nats::key_names() {
        let path = nats_keys.join(format!("{name}.nk"));
        if !path.exists() {
            crate::secrets::write_private(&path, nkeys::KeyPair::new_user().seed()?.as_bytes())?;
        }
    }
    let data_keys_master = state.join("data-keys-master.key");
    if !data_keys_master.exists() {
        let key = service_kit::sealing::Key::generate()
            .map_err(|e| anyhow::anyhow!("making the data keys' master key: {e}"))?;
        crate::secrets::write_private(&data_keys_master, key.to_base64().as_bytes())?;
    }
    let passwords_file = state.join("passwords.json");
    let mut passwords: BTreeMap<String, String> = match std::fs::read_to_string(&passwords_file) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object", passwords_file.display()))?,
        Err(_) => BTreeMap::new(),
    };
    for role in roles().into_iter().chain(["nats-analyst".to_owned()]) {
        passwords.entry(role).or_insert_with(random_password);
    }
    crate::secrets::write_private(
        &passwords_file,
        serde_json::to_string_pretty(&passwords)?.as_bytes(),
    )?;
    Ok(Material {
        data_keys_master,
        tls,
        nats_keys,
        passwords,
        stripe_secret_key: stripe_key(state, stripe)?,
    })
}

/// The compose stack's committed development material; the routes' certificate is made in
/// `state` from the committed CA's key.
fn development(
    workspace: &Path,
    state: &Path,
    namespace: &str,
    stripe: Option<&Path>,
) -> anyhow::Result<Material> {
    let tls = crate::compose_keys::tls_dir(workspace);
    let routes = state.join("dev-routes");
    crate::secrets::private_dir(&routes)?;
    crate::tls::issue(
        &tls,
        &routes,
        "nats-route",
        route_names(namespace),
        VALIDITY,
    )?;
    // The other files beside the route's, so one folder holds them all.
    for entry in std::fs::read_dir(&tls)? {
        let entry = entry?;
        let target = routes.join(entry.file_name());
        if !target.exists() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    let mut passwords: BTreeMap<String, String> = roles()
        .into_iter()
        .map(|role| (role.clone(), format!("{role}-dev-password")))
        .collect();
    passwords.insert(
        "nats-analyst".into(),
        crate::compose_keys::ANALYST_PASSWORD.into(),
    );
    Ok(Material {
        data_keys_master: workspace.join("docker/keys/data-keys-master.key"),
        tls: routes,
        nats_keys: crate::compose_keys::dir(workspace).join("keys"),
        passwords,
        stripe_secret_key: match stripe {
            Some(given) => stripe_key(state, Some(given))?,
            None => workspace.join(COMPOSE_STRIPE_KEY),
        },
    })
}

/// Every database role, as CloudNativePG's manifests name them.
fn roles() -> Vec<String> {
    let mut roles: Vec<String> = crate::postgres::DATABASES
        .iter()
        .flat_map(crate::postgres::Database::roles)
        .map(str::to_owned)
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

fn random_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What of `material` the repository holds: the committed CA, a committed seed, a
/// development password.
fn committed_in(workspace: &Path, material: &Material) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let committed_tls = crate::compose_keys::tls_dir(workspace);
    for file in ["ca.pem", "ca.key"] {
        if std::fs::read(material.tls.join(file)).ok()
            == std::fs::read(committed_tls.join(file)).ok()
        {
            found.push(format!("the committed CA ({file})"));
        }
    }
    let committed_keys = crate::compose_keys::dir(workspace).join("keys");
    for name in crate::nats::key_names() {
        let file = format!("{name}.nk");
        let ours = std::fs::read_to_string(material.nats_keys.join(&file)).ok();
        if ours.is_some() && ours == std::fs::read_to_string(committed_keys.join(&file)).ok() {
            found.push(format!("the committed NATS key {file}"));
        }
    }
    if std::fs::read(&material.data_keys_master).ok()
        == std::fs::read(workspace.join("docker/keys/data-keys-master.key")).ok()
    {
        found.push("the committed data keys' master key".into());
    }
    if std::fs::read(&material.stripe_secret_key).ok()
        == std::fs::read(workspace.join(COMPOSE_STRIPE_KEY)).ok()
    {
        found.push("the compose stack's Stripe key".into());
    }
    for (role, password) in &material.passwords {
        if password.ends_with("-dev-password") {
            found.push(format!("the development password of {role}"));
        }
    }
    Ok(found)
}

/// Every Secret, as YAML documents.
fn render(material: &Material, namespace: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let file = |path: PathBuf| -> anyhow::Result<Vec<u8>> {
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let password = |role: &str| -> anyhow::Result<&str> {
        material
            .passwords
            .get(role)
            .map(String::as_str)
            .with_context(|| format!("no password for {role}"))
    };
    for role in roles() {
        secret(
            &mut out,
            namespace,
            &crate::generate::role_secret(&role),
            "kubernetes.io/basic-auth",
            &[
                ("username", role.as_bytes().to_vec()),
                ("password", password(&role)?.as_bytes().to_vec()),
            ],
        );
    }
    let tls = &material.tls;
    for service in crate::services::SERVICES {
        let holder = service.certificate;
        let service_name = service.name;
        secret(
            &mut out,
            namespace,
            &format!("{service_name}-tls"),
            "Opaque",
            &[
                ("ca.pem", file(tls.join("ca.pem"))?),
                (
                    &format!("{holder}.crt"),
                    file(tls.join(format!("{holder}.crt")))?,
                ),
                (
                    &format!("{holder}.key"),
                    file(tls.join(format!("{holder}.key")))?,
                ),
            ],
        );
        // Every service but the query API talks to NATS, as its own identity.
        if let Some(identity) = service.identity() {
            secret(
                &mut out,
                namespace,
                &format!("{service_name}-nats"),
                "Opaque",
                &[(
                    &format!("{identity}.nk"),
                    file(material.nats_keys.join(format!("{identity}.nk")))?,
                )],
            );
        }
        if let Some(access) = service.database {
            let (db, role) = (access.database, access.role);
            // A service that runs as a lesser role migrates as the database's owner.
            let owner = access.migrates_as;
            let url = |role: &str| -> anyhow::Result<Vec<u8>> {
                Ok(format!(
                    "postgres://{role}:{}@{PG_HOST}/{db}?sslmode=require",
                    password(role)?
                )
                .into_bytes())
            };
            let mut keys = vec![("DATABASE_URL", url(role)?)];
            if let Some(owner) = owner {
                keys.push(("DATABASE_OWNER_URL", url(owner)?));
            }
            let keys: Vec<(&str, Vec<u8>)> = keys;
            secret(
                &mut out,
                namespace,
                &format!("{service_name}-database"),
                "Opaque",
                &keys,
            );
        }
    }
    let tls_pair = |name: &str| -> anyhow::Result<Vec<(&str, Vec<u8>)>> {
        Ok(vec![
            ("tls.crt", file(tls.join(format!("{name}.crt")))?),
            ("tls.key", file(tls.join(format!("{name}.key")))?),
        ])
    };
    let shared = [
        ("nats-tls", "kubernetes.io/tls", tls_pair("nats")?),
        (
            "nats-route-tls",
            "kubernetes.io/tls",
            tls_pair("nats-route")?,
        ),
        (
            "orders-data-keys",
            "Opaque",
            vec![("master.key", file(material.data_keys_master.clone())?)],
        ),
        (
            "payments-stripe",
            "Opaque",
            vec![("secret-key", file(material.stripe_secret_key.clone())?)],
        ),
        (
            "streamshop-ca",
            "Opaque",
            vec![("ca.pem", file(tls.join("ca.pem"))?)],
        ),
    ];
    for (name, kind, data) in &shared {
        secret(&mut out, namespace, name, kind, data);
    }
    // The users: the authorization block only (the chart writes its own `tls {}`).
    let keys = material.nats_keys.clone();
    let users = messaging::identity::users(
        topology::SERVICES,
        &Scope::Namespace(Default::default()),
        |name| {
            let seed = std::fs::read_to_string(keys.join(format!("{name}.nk")))
                .with_context(|| format!("reading {name}.nk"))?;
            anyhow::Ok(nkeys::KeyPair::from_seed(seed.trim())?.public_key())
        },
        password("nats-analyst")?,
    )?;
    let auth = messaging::identity::authorization(&users);
    secret(
        &mut out,
        namespace,
        "nats-auth",
        "Opaque",
        &[("auth.conf", auth.into_bytes())],
    );
    Ok(out)
}

/// One Secret document.
fn secret(out: &mut String, namespace: &str, name: &str, kind: &str, data: &[(&str, Vec<u8>)]) {
    out.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: streamshop\ntype: {kind}\ndata:\n"
    ));
    for (key, value) in data {
        out.push_str(&format!(
            "  {key}: {}\n",
            base64::engine::general_purpose::STANDARD.encode(value)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("xtask-k8s-{}", uuid::Uuid::new_v4().simple()))
    }

    /// Every value of every Secret, decoded.
    fn values(yaml: &str) -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        let mut name = String::new();
        for line in yaml.lines() {
            if let Some(n) = line.strip_prefix("  name: ") {
                name = n.to_owned();
            } else if let Some((key, value)) = line
                .strip_prefix("  ")
                .filter(|l| !l.starts_with(' '))
                .and_then(|l| l.split_once(": "))
            {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value) {
                    all.push((format!("{name}/{key}"), bytes));
                }
            }
        }
        all
    }

    /// Every file of the repository's development material, and its passwords.
    fn committed() -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        for dir in [
            workspace().join("docker/tls"),
            workspace().join("docker/nats/keys"),
            workspace().join("docker/keys"),
            workspace().join("docker/stripe"),
        ] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                all.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
        for role in roles() {
            all.push((role.clone(), format!("{role}-dev-password").into_bytes()));
        }
        all.push((
            "analyst".into(),
            crate::compose_keys::ANALYST_PASSWORD.as_bytes().to_vec(),
        ));
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        let needle = String::from_utf8_lossy(needle);
        let needle = needle.trim();
        !needle.is_empty() && String::from_utf8_lossy(haystack).contains(needle)
    }

    #[test]
    fn with_no_arguments_nothing_made_is_in_the_repository_and_a_rerun_keeps_it() {
        let state = scratch();
        let material = fresh(&state, "streamshop", None).unwrap();
        let yaml = render(&material, "streamshop").unwrap();
        let made = values(&yaml);
        assert!(made.len() > 30, "{} values", made.len());
        for (secret, value) in &made {
            for (file, committed) in committed() {
                assert!(
                    !contains(value, &committed),
                    "{secret} holds {file} of the repository"
                );
            }
        }
        // The administrator's seed is in no Secret.
        let admin = std::fs::read_to_string(state.join("nats-credentials/admin.nk")).unwrap();
        assert!(made.iter().all(|(_, v)| !contains(v, admin.as_bytes())));
        // A rerun makes the same Secrets.
        let again = render(&fresh(&state, "streamshop", None).unwrap(), "streamshop").unwrap();
        assert_eq!(again, yaml);
        assert!(committed_in(&workspace(), &material).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(state);
    }

    #[test]
    fn the_production_overlay_refuses_the_repository_s_material() {
        let state = scratch();
        let refused = run(
            &workspace(),
            &Options {
                namespace: "streamshop".into(),
                dev: true,
                overlay: "production".into(),
                print: true,
                state: Some(state.clone()),
                stripe_secret_key_file: None,
            },
        );
        assert!(refused.is_err());
        let material = development(&workspace(), &state, "streamshop", None).unwrap();
        let found = committed_in(&workspace(), &material).unwrap();
        assert!(
            found.iter().any(|f| f.contains("committed CA")),
            "{found:?}"
        );
        assert!(found.iter().any(|f| f.contains("admin.nk")), "{found:?}");
        assert!(found.iter().any(|f| f.contains("password")), "{found:?}");
        let _ = std::fs::remove_dir_all(state);
    }

    #[test]
    fn the_routes_certificate_chains_to_the_ca() {
        let state = scratch();
        let material = fresh(&state, "shop", None).unwrap();
        let route = service_kit::tls::TlsSettings::new(&material.tls, "nats-route");
        route.client_config().unwrap();
        route.server_config().unwrap();
        let _ = std::fs::remove_dir_all(state);
    }
}
