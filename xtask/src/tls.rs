//! The local certificate authority: one CA per environment, and a certificate signed by it for
//! the NATS server and for every process that connects to it or serves internal HTTPS.
//!
//! Each certificate names its holder (`orders`, `gateway`, `operator`, ...) among its DNS
//! names, beside `localhost` and `127.0.0.1`, and is good for both ends of a connection: the
//! services serve HTTPS with it and show it as a client. A server tells its callers apart by
//! that name (`service_kit::https`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Who gets a certificate besides the services (each of which holds its own, named in the
/// topology, answering its host name): the NATS server, and people and tools: the analysts'
/// stream reads, operators' direct calls to the internal APIs, and the metrics scraper.
const OTHER_HOLDERS: &[(&str, &[&str])] = &[
    ("nats", &["nats"]),
    ("analyst", &[]),
    ("operator", &[]),
    ("prometheus", &["prometheus"]),
];

/// Every holder of a certificate and the host names it also answers to (those of the compose
/// stack and the Kubernetes Services).
pub fn holders() -> Vec<(&'static str, Vec<&'static str>)> {
    topology::SERVICES
        .iter()
        .map(|s| (s.certificate, vec![s.name]))
        .chain(OTHER_HOLDERS.iter().map(|(n, h)| (*n, h.to_vec())))
        .collect()
}

/// How long the certificates of `cargo xtask up`, test and bench last; they are made again a
/// month before they end.
const LOCAL_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The CA's name, the same each time it is rebuilt from its key.
const CA_NAME: &str = "streamshop local CA";

/// Where an environment keeps its CA and certificates.
pub fn dir(layout: &crate::layout::Layout) -> PathBuf {
    layout.root.join("tls")
}

/// Makes the CA and every holder's certificate under `dir` where they are missing or due for
/// renewal, and keeps the rest. A new CA means new certificates for everyone.
pub fn ensure(dir: &Path) -> anyhow::Result<()> {
    ensure_for(dir, LOCAL_VALIDITY, RENEW_BEFORE, Keys::Private)
}

/// How key files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Readable by their owner only.
    Private,
    /// Readable by anyone: the committed compose keys, which containers running as another
    /// user read through a bind mount.
    Shared,
}

/// [`ensure`] with the given lifetime (the committed compose certificates last longer).
pub fn ensure_for(
    dir: &Path,
    validity: Duration,
    renew_before: Duration,
    keys: Keys,
) -> anyhow::Result<()> {
    let write_key = |path: &Path, pem: String| match keys {
        Keys::Private => crate::secrets::write_private(path, pem.as_bytes()),
        Keys::Shared => {
            std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
        }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join(service_kit::tls::CA_FILE), dir.join("ca.key"));
    let fresh_ca = !ca_key.exists() || due(&ca_cert, validity, renew_before);
    let key = if fresh_ca {
        let key = KeyPair::generate().context("making the CA's key")?;
        write_key(&ca_key, key.serialize_pem())?;
        let cert = ca_params(validity)?
            .self_signed(&key)
            .context("signing the CA")?;
        std::fs::write(&ca_cert, cert.pem())?;
        key
    } else {
        let pem = std::fs::read_to_string(&ca_key)
            .with_context(|| format!("reading {}", ca_key.display()))?;
        KeyPair::from_pem(&pem).with_context(|| format!("{} is not a key", ca_key.display()))?
    };
    let issuer = Issuer::new(ca_params(validity)?, key);
    for (name, hosts) in holders() {
        let cert = dir.join(format!("{name}.crt"));
        if !fresh_ca && !due(&cert, validity, renew_before) {
            continue;
        }
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        names.push(name.to_owned());
        names.extend(
            hosts
                .iter()
                .filter(|h| **h != name)
                .map(|h| (*h).to_owned()),
        );
        let (key, signed) = sign(&issuer, name, names, validity)?;
        write_key(&dir.join(format!("{name}.key")), key)?;
        std::fs::write(&cert, signed)?;
    }
    if fresh_ca {
        // On stderr: `k8s-secrets --print` writes YAML to stdout.
        eprintln!("tls: made a CA and certificates in {}", dir.display());
    }
    Ok(())
}

/// A certificate for `name` with the DNS names `names`, signed by the CA in `ca_dir` (its
/// `ca.pem` and `ca.key`), written with its key to `<out>/<name>.crt` and `.key` (the key
/// readable by its owner only). For certificates the holders' list does not cover: the NATS
/// routes of a Kubernetes cluster, whose names depend on its namespace.
pub fn issue(
    ca_dir: &Path,
    out: &Path,
    name: &str,
    names: Vec<String>,
    validity: Duration,
) -> anyhow::Result<()> {
    let ca_key = ca_dir.join("ca.key");
    let pem = std::fs::read_to_string(&ca_key)
        .with_context(|| format!("reading {} (the CA's key signs it)", ca_key.display()))?;
    let key =
        KeyPair::from_pem(&pem).with_context(|| format!("{} is not a key", ca_key.display()))?;
    let issuer = Issuer::new(ca_params(validity)?, key);
    let (key, signed) = sign(&issuer, name, names, validity)?;
    crate::secrets::write_private(&out.join(format!("{name}.key")), key.as_bytes())?;
    std::fs::write(out.join(format!("{name}.crt")), signed)?;
    Ok(())
}

/// A new key and a certificate for `name` with the DNS names `names` (server and client
/// authentication both), signed by `issuer`: `(key, certificate)` in PEM.
fn sign(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    names: Vec<String>,
    validity: Duration,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(names)
        .with_context(|| format!("the names of {name}'s certificate"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    (params.not_before, params.not_after) = lifetime(validity);
    let key = KeyPair::generate().with_context(|| format!("making {name}'s key"))?;
    let signed = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing {name}'s certificate"))?;
    Ok((key.serialize_pem(), signed.pem()))
}

fn ca_params(validity: Duration) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = lifetime(validity);
    Ok(params)
}

/// From an hour ago (clocks differ a little) for `validity`.
fn lifetime(validity: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::hours(1), now + validity)
}

/// Whether the file is missing, or was written so long ago that it ends within `renew_before`.
fn due(path: &Path, validity: Duration, renew_before: Duration) -> bool {
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|written| SystemTime::now().duration_since(written).ok());
    age.is_none_or(|age| age + renew_before >= validity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_made_once_and_chain_to_the_ca() {
        let dir = std::env::temp_dir().join(format!("xtask-tls-{}", uuid::Uuid::new_v4()));
        ensure(&dir).unwrap();
        let first = std::fs::read(dir.join("orders.crt")).unwrap();
        ensure(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("orders.crt")).unwrap(), first);
        for (name, _) in holders() {
            let settings = service_kit::tls::TlsSettings::new(&dir, name);
            settings.client_config().unwrap();
            settings.server_config().unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
