//! TLS between the services: where a process finds the local CA, its own certificate and its
//! key, and the rustls configurations built from them for NATS, internal HTTPS and the
//! gateway's calls.
//!
//! Every process has one certificate, `<name>.crt`, signed by the local CA (`ca.pem`) that
//! `cargo xtask up` creates. It serves both ways: as the server certificate of the process's
//! internal HTTPS, and as its client certificate towards NATS and other services. Its DNS
//! names include the process's name (`gateway`, `operator`, ...), which is how a server tells
//! callers apart ([`names`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::env::{Env, EnvError};

/// The CA's certificate in a TLS directory.
pub const CA_FILE: &str = "ca.pem";

/// Where a process's TLS material is: `<dir>/ca.pem`, `<dir>/<name>.crt`, `<dir>/<name>.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub dir: PathBuf,
    pub name: String,
}

impl TlsSettings {
    pub fn new(dir: impl Into<PathBuf>, name: &str) -> Self {
        Self {
            dir: dir.into(),
            name: name.to_owned(),
        }
    }

    /// `TLS` (on unless `off`; off exists only to measure what TLS costs) and `TLS_DIR`, which
    /// is then required: a service that was meant to use TLS never falls back to plain text.
    pub fn from_env(env: &Env, name: &str) -> Result<Option<Self>, EnvError> {
        if !env.bool_or("TLS", true)? {
            return Ok(None);
        }
        match env.get("TLS_DIR") {
            Some(dir) => Ok(Some(Self::new(dir, name))),
            None => Err(EnvError {
                name: "TLS_DIR".to_owned(),
                reason: format!(
                    "it is not set, and TLS is on (TLS=off turns it off): name a directory \
                     holding {CA_FILE}, {name}.crt and {name}.key (`cargo xtask up` makes them \
                     under .state/dev/tls)"
                ),
            }),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    pub fn cert_file(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.name))
    }

    /// The local CA, the only one trusted on either side.
    pub fn roots(&self) -> anyhow::Result<Arc<rustls::RootCertStore>> {
        let path = self.ca_file();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("trusting the CA certificate {}", path.display()))?;
        }
        anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
        Ok(Arc::new(roots))
    }

    fn identity(&self) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let (cert, key) = (self.cert_file(), self.key_file());
        let chain = CertificateDer::pem_file_iter(&cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading the certificate {}", cert.display()))?;
        anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
        let key = PrivateKeyDer::from_pem_file(&key)
            .with_context(|| format!("reading the private key {}", key.display()))?;
        Ok((chain, key))
    }

    /// A client that trusts the local CA only and presents this process's certificate.
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let (chain, key) = self.identity()?;
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)
            .with_context(|| format!("using {} as a client certificate", self.name))
    }

    /// A server with this process's certificate that asks every client for one signed by the
    /// local CA. A client without one may still connect (health probes have none); what it
    /// may reach is decided per route ([`names`]). A certificate that is presented must be
    /// valid, or the handshake fails.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let (chain, key) = self.identity()?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
                .allow_unauthenticated()
                .build()
                .context("the client certificate verifier")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .with_context(|| format!("using {} as a server certificate", self.name))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// ring, named rather than left to rustls's process-wide default, so a dependency that
/// enables another provider cannot make the choice ambiguous.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `cert`, a client certificate that the handshake already verified against the
/// local CA, is the one issued to `name`.
pub fn names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(cert), Ok(server_name)) = (
        webpki::EndEntityCert::try_from(cert),
        ServerName::try_from(name),
    ) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}
