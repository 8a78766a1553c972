//! NATS settings every service that talks to JetStream reads the same way.

use std::time::Duration;

use service_kit::env::{Env, EnvError};

use service_kit::secret::Secret;

use crate::streams::StreamSettings;
use crate::{Identity, Namespace};

/// `NATS_URL` (one server, or a cluster's nodes separated by commas), `NATS_NAMESPACE`, `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`, and the
/// identity's credentials: `NATS_NKEY_SEED`, or `NATS_CREDENTIALS_DIR` holding
/// `<identity>.nk` (or a user and password in the URL).
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: Secret<String>,
    pub namespace: Namespace,
    pub stream: StreamSettings,
    /// Who this process is: its permissions and its reply subjects' prefix.
    pub identity: Identity,
    pub credentials: Credentials,
    /// `TLS` (default on) and `TLS_DIR`: the server must prove itself with the local CA's
    /// certificate, and this process shows `<identity>.crt`.
    pub tls: Option<service_kit::tls::TlsSettings>,
}

/// How a process proves its identity to NATS.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// None beyond what the URL holds (a user and password, or nothing at all).
    Url,
    /// An nkey seed (`SU...`).
    Seed(Secret<String>),
    /// The file `<dir>/<identity>.nk` holds the seed.
    Directory(std::path::PathBuf),
}

/// Connect options that log in with the user and password of `url` (`nats://user:pw@host`,
/// percent-encoded as URLs have them), which async-nats would otherwise ignore.
pub fn options_for(url: &str) -> async_nats::ConnectOptions {
    match login_of(url) {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    }
}

/// `options` with TLS required: the server's certificate checked against the local CA only,
/// and `tls`'s certificate shown as the client's.
pub fn with_tls(
    options: async_nats::ConnectOptions,
    tls: &service_kit::tls::TlsSettings,
) -> anyhow::Result<async_nats::ConnectOptions> {
    use anyhow::Context;
    let config = tls
        .client_config()
        .with_context(|| format!("the NATS TLS configuration in {}", tls.dir.display()))?;
    Ok(options.require_tls(true).tls_client_config(config))
}

/// The servers of a `NATS_URL`: one URL, or several separated by commas (the nodes of a
/// cluster, each with its scheme), in the order given.
pub fn servers_of(url: &str) -> Vec<&str> {
    service_kit::secret::url_list(url)
}

/// Connects with `options` to the servers of `url` ([`servers_of`]), trying them in the
/// order given: a deployment spreads its replicas over a cluster's nodes by the order of
/// each one's list, where async-nats would otherwise shuffle it. Servers the cluster
/// announces later are added behind them, so a client finds the others when its node
/// goes.
pub async fn connect_to(
    options: async_nats::ConnectOptions,
    url: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    options
        .retain_servers_order()
        .connect(servers_of(url))
        .await
}

/// The user and password of a URL (of the first, when there are several), decoded.
fn login_of(url: &str) -> Option<(String, String)> {
    let url = servers_of(url).into_iter().next()?;
    let userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo)?;
    let (user, password) = userinfo.split_once(':')?;
    let decoded = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((decoded(user), decoded(password)))
}

/// The nkey seed of `name` (an identity's, or `admin`) kept as `<dir>/<name>.nk`.
pub fn seed_in(dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = dir.join(format!("{name}.nk"));
    let seed = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the NATS key {}", path.display()))?;
    Ok(seed.trim().to_owned())
}

/// Messages a subscription holds while its handler is busy. A pull consumer's fetched batch
/// arrives on one subscription all at once, so it must hold the largest batch any reader
/// fetches ([`MAX_FETCH_BATCH`]); the command services shed load rather than let their
/// subscription fill (command-kit's `nats.rs`).
pub const SUBSCRIPTION_CAPACITY: usize = 2 * MAX_FETCH_BATCH;

/// The largest batch a reader may fetch at once.
pub const MAX_FETCH_BATCH: usize = 5_000;

/// Where `cargo xtask up` runs NATS.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:24222";

impl NatsSettings {
    /// The settings of `identity`'s process.
    pub fn from_env(env: &Env, identity: Identity) -> Result<Self, EnvError> {
        let set = |name| env.get(name).filter(|v| !v.is_empty());
        let credentials = match (set("NATS_NKEY_SEED"), set("NATS_CREDENTIALS_DIR")) {
            (Some(seed), _) => Credentials::Seed(Secret::new(seed.to_owned())),
            (None, Some(dir)) => Credentials::Directory(dir.into()),
            (None, None) => Credentials::Url,
        };
        Ok(Self {
            identity,
            credentials,
            tls: service_kit::tls::TlsSettings::from_env(env, identity.name())?,
            url: service_kit::secret::Secret::new(env.string_or("NATS_URL", DEFAULT_NATS_URL)),
            namespace: env.parse_or("NATS_NAMESPACE", Namespace::default())?,
            stream: StreamSettings {
                replicas: env.parse_or("NATS_STREAM_REPLICAS", 1)?,
                duplicate_window: env
                    .millis_or("NATS_DUPLICATE_WINDOW_MS", Duration::from_secs(120))?,
            },
        })
    }

    /// Connects to NATS. A subscription buffers at most [`SUBSCRIPTION_CAPACITY`] messages
    /// while its handler is busy (async-nats's default is 65,536, which at 1 MB each is more
    /// memory than a service has); past it, NATS drops messages for the slow consumer.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        use anyhow::Context;
        let mut options = options_for(self.url.expose())
            .name(self.identity.name())
            .custom_inbox_prefix(self.identity.inbox_prefix())
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            // A denied publish or subscription is not an error the call returns (the server
            // says so on the connection): log it, so a missing permission is found at once.
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(e) = &event {
                    tracing::warn!(error = %e, "the NATS server refused something");
                }
            });
        let seed = match &self.credentials {
            Credentials::Url => None,
            Credentials::Seed(seed) => Some(seed.expose().clone()),
            Credentials::Directory(dir) => Some(seed_in(dir, self.identity.name())?),
        };
        if let Some(seed) = seed {
            options = options.nkey(seed);
        }
        if let Some(tls) = &self.tls {
            options = with_tls(options, tls)?;
        }
        connect_to(options, self.url.expose())
            .await
            .with_context(|| {
                format!(
                    "connecting NATS at {} as {}",
                    self.url,
                    self.identity.name()
                )
            })
    }

    /// Connects, and makes sure the streams of `contexts` exist: the stream of the
    /// identity's own context is created when missing; another context's (which only that
    /// context's service may create) is waited for, so start-up order does not matter.
    pub async fn connect_with_streams(
        &self,
        contexts: &[crate::BoundedContext],
    ) -> anyhow::Result<(async_nats::Client, async_nats::jetstream::Context)> {
        use anyhow::Context;
        let nats = self.connect().await?;
        let js = async_nats::jetstream::new(nats.clone());
        for context in contexts {
            if crate::Identity::of_context(*context) == self.identity {
                crate::streams::ensure_stream(&js, &self.namespace, *context, &self.stream)
                    .await
                    .with_context(|| {
                        format!("creating the {} stream", self.namespace.stream(*context))
                    })?;
            } else {
                crate::streams::existing_stream(&js, &self.namespace, *context).await;
            }
        }
        Ok((nats, js))
    }
}

#[cfg(test)]
mod tests {
    use super::login_of;

    #[test]
    fn a_url_login_is_read_decoded() {
        assert_eq!(
            login_of("nats://analyst:p%40ss%3Aword@127.0.0.1:4222"),
            Some(("analyst".into(), "p@ss:word".into()))
        );
        assert_eq!(login_of("nats://127.0.0.1:4222"), None);
        assert_eq!(login_of("nats://token@127.0.0.1:4222"), None);
        assert_eq!(
            login_of("nats://a:b@127.0.0.1:4222, nats://a:b@127.0.0.1:4223"),
            Some(("a".into(), "b".into()))
        );
    }

    #[test]
    fn a_cluster_url_lists_every_node_in_order() {
        use super::servers_of;
        assert_eq!(
            servers_of("nats://n1:4222,nats://n2:4222 , nats://n3:4222"),
            ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
        );
        assert_eq!(
            servers_of("nats://u:a,b@n1:4222,nats://u:a,b@n2:4222"),
            ["nats://u:a,b@n1:4222", "nats://u:a,b@n2:4222"]
        );
        assert_eq!(servers_of("nats://n1:4222"), ["nats://n1:4222"]);
    }
}
