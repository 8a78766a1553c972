//! The gateway's settings, read from the environment with every default in one place.

use std::net::SocketAddr;
use std::time::Duration;

use messaging::NatsSettings;
use service_kit::env::{Env, EnvError};
use service_kit::telemetry::LogSettings;

/// Everything the gateway binary can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HTTP_ADDR`, default `127.0.0.1:8000`: the public side, the only one clients reach.
    pub http_addr: SocketAddr,
    /// `METRICS_ADDR`, default `127.0.0.1:9000`: where `/metrics` is served, apart from the
    /// public side, over HTTPS to the scraper's and operators' certificates (plain HTTP only
    /// with `TLS=off`).
    pub metrics_addr: SocketAddr,
    /// `RUST_LOG`, `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub log: LogSettings,
    /// `NATS_URL`, `NATS_NAMESPACE`: where the live order updates and order owners are read.
    pub nats: NatsSettings,
    /// `TLS` (default on) and `TLS_DIR`: the gateway's certificate (`gateway.crt`), shown to
    /// NATS and to the internal services, and the local CA their certificates must chain to.
    /// The public side is plain HTTP, for a TLS-terminating load balancer in front.
    pub tls: Option<service_kit::tls::TlsSettings>,
    pub upstreams: UpstreamUrls,
    pub oidc: OidcSettings,
    pub limits: Limits,
    pub breaker: BreakerSettings,
    /// `CATALOG_CACHE_MS`, default 1000, at most 60000: how long the gateway serves a catalog
    /// read from its shared cache before it revalidates it with the query API (0: no cache).
    pub catalog_fresh_for: Duration,
}

/// The internal services' base URLs: `ORDERS_URL`, `INVENTORY_URL`, `PAYMENTS_URL`,
/// `ORCHESTRATOR_URL`, `PROJECTIONS_URL`, `QUERY_URL`, `NOTIFICATIONS_URL`, defaults those of `cargo xtask up` (`https://` unless
/// `TLS=off`). Each may list several replicas' addresses separated by commas: the calls take
/// them in turn, and one that cannot be reached hands its call to the next.
#[derive(Debug, Clone)]
pub struct UpstreamUrls {
    pub orders: String,
    pub inventory: String,
    pub payments: String,
    pub orchestrator: String,
    pub projections: String,
    pub query: String,
    pub notifications: String,
}

impl UpstreamUrls {
    /// With TLS on, every service is called over HTTPS: a plain `http://` address is a
    /// configuration error, not a silent downgrade.
    fn check_schemes(&self, tls: bool) -> Result<(), EnvError> {
        let named = [
            (&topology::ORDERS, &self.orders),
            (&topology::INVENTORY, &self.inventory),
            (&topology::PAYMENTS, &self.payments),
            (&topology::ORCHESTRATOR, &self.orchestrator),
            (&topology::PROJECTIONS, &self.projections),
            (&topology::QUERY_API, &self.query),
            (&topology::NOTIFICATIONS, &self.notifications),
        ]
        .map(|(service, url)| (service.url_setting.unwrap_or(service.name), url));
        match named.into_iter().find(|(_, url)| {
            tls && url
                .split(',')
                .map(str::trim)
                .any(|u| !u.is_empty() && !u.starts_with("https://"))
        }) {
            Some((name, url)) => Err(EnvError {
                name: name.to_owned(),
                reason: format!("{url:?} is not https://, and TLS is on"),
            }),
            None => Ok(()),
        }
    }
}

/// How access tokens are checked.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `OIDC_ISSUER_URL`, default the local provider of `cargo xtask up`
    /// (`http://127.0.0.1:8090`). Its discovery document names the keys.
    pub issuer: String,
    /// `OIDC_AUDIENCE`, default `streamshop`: the `aud` every token must carry.
    pub audience: String,
    /// `OIDC_LEEWAY_SECS`, default 30: clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// `OIDC_KEYS_REFRESH_MIN_MS`, default 5000: an unknown `kid` fetches the keys again at
    /// most this often, so forged `kid`s cannot flood the issuer.
    pub refresh_min_interval: Duration,
    /// `OIDC_ADMIN_SCOPE`, default `admin`: the scope (or role) that makes a token an
    /// operator's.
    pub admin_scope: String,
    /// `OIDC_REQUIRE_AT_JWT`, default true: a token's header must say `typ: at+jwt` (RFC
    /// 9068), so an ID token (or any other JWT of the issuer) is never taken for an access
    /// token. `false` is for issuers that send no `typ` (or `JWT`) on access tokens; another
    /// `typ` is refused either way.
    pub require_at_jwt: bool,
}

/// Edge protections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `RATE_LIMIT_PER_MINUTE` (default 600) and `RATE_LIMIT_BURST` (default 60): each
    /// authenticated subject's token bucket.
    pub per_subject: Quota,
    /// `RATE_LIMIT_ANONYMOUS_PER_MINUTE` (default 300) and `RATE_LIMIT_ANONYMOUS_BURST`
    /// (default 30): each client IP's bucket for calls without a valid token.
    pub anonymous: Quota,
    /// `REQUEST_TIMEOUT_MS`, default 10000: the longest a request (other than a live
    /// stream) may take, upstream calls included.
    pub request_timeout: Duration,
    /// `BODY_LIMIT_BYTES`, default 65536.
    pub body_limit_bytes: usize,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call from a browser;
    /// default none (no CORS headers).
    pub cors_origins: Vec<String>,
    /// `SSE_MAX_STREAMS_PER_CALLER`, default 5: live order streams one caller may hold open.
    pub streams_per_caller: u32,
    /// `SSE_MAX_STREAMS`, default 1000: live order streams open at once, all callers
    /// together (each holds two JetStream consumers).
    pub streams_total: u32,
    /// `BODY_READ_TIMEOUT_MS`, default 10000: the longest a client may take to send a
    /// request's body, however slowly it trickles (408 after).
    pub body_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (default 4096) and `HTTP_MAX_CONNECTIONS_PER_CLIENT` (default
    /// 64): connections held open at once, in all and from one client address (a trusted
    /// proxy's count only in all).
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// `TRUSTED_PROXIES`: comma-separated addresses or CIDR ranges of the load balancers in
    /// front. Only from them is `X-Forwarded-For` believed (its rightmost address that is not
    /// one of them is the client); default none, so the connection's peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A token bucket: `per_minute` refills, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

/// Per-upstream timeouts and the circuit breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// `UPSTREAM_TIMEOUT_MS`, default 5000: one call to a service, or to the issuer for its
    /// discovery document or key set.
    pub timeout: Duration,
    /// `BREAKER_FAILURES`, default 5: consecutive failures (refused connection, timeout,
    /// 502/503/504) that open an upstream's circuit.
    pub failures: u32,
    /// `BREAKER_OPEN_MS`, default 5000: how long an open circuit answers 503 at once before
    /// one request probes the upstream again.
    pub open_for: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, EnvError> {
        let tls = service_kit::tls::TlsSettings::from_env(env, "gateway")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Each upstream's setting and default address are the topology's.
        let url = |s: &topology::Service| {
            let name = s
                .url_setting
                .expect("the gateway calls services with a URL setting");
            env.string_or(name, &format!("{scheme}://127.0.0.1:{}", s.port))
        };
        let own = |port: Option<u16>| SocketAddr::from(([127, 0, 0, 1], port.unwrap_or_default()));
        let settings = Self {
            tls,
            http_addr: env.parse_or("HTTP_ADDR", own(Some(topology::GATEWAY.port)))?,
            metrics_addr: env.parse_or("METRICS_ADDR", own(topology::GATEWAY.metrics_port))?,
            log: LogSettings::from_env(env)?,
            nats: NatsSettings::from_env(env, messaging::Identity::GATEWAY)?,
            upstreams: UpstreamUrls {
                orders: url(&topology::ORDERS),
                inventory: url(&topology::INVENTORY),
                payments: url(&topology::PAYMENTS),
                orchestrator: url(&topology::ORCHESTRATOR),
                projections: url(&topology::PROJECTIONS),
                query: url(&topology::QUERY_API),
                notifications: url(&topology::NOTIFICATIONS),
            },
            oidc: OidcSettings {
                issuer: env
                    .string_or("OIDC_ISSUER_URL", "http://127.0.0.1:8090")
                    .trim_end_matches('/')
                    .to_owned(),
                audience: env.string_or("OIDC_AUDIENCE", "streamshop"),
                leeway_secs: env.within_or("OIDC_LEEWAY_SECS", 30, 0..=300)?,
                refresh_min_interval: env
                    .millis_or("OIDC_KEYS_REFRESH_MIN_MS", Duration::from_secs(5))?,
                admin_scope: env.string_or("OIDC_ADMIN_SCOPE", "admin"),
                require_at_jwt: env.bool_or("OIDC_REQUIRE_AT_JWT", true)?,
            },
            limits: Limits {
                per_subject: Quota {
                    per_minute: env.within_or("RATE_LIMIT_PER_MINUTE", 600, 1..=u32::MAX)?,
                    burst: env.within_or("RATE_LIMIT_BURST", 60, 1..=u32::MAX)?,
                },
                anonymous: Quota {
                    per_minute: env.within_or(
                        "RATE_LIMIT_ANONYMOUS_PER_MINUTE",
                        300,
                        1..=u32::MAX,
                    )?,
                    burst: env.within_or("RATE_LIMIT_ANONYMOUS_BURST", 30, 1..=u32::MAX)?,
                },
                request_timeout: env.millis_or("REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
                body_limit_bytes: env.within_or("BODY_LIMIT_BYTES", 65_536, 1..=16 << 20)?,
                cors_origins: env
                    .string_or("CORS_ALLOWED_ORIGINS", "")
                    .split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect(),
                streams_per_caller: env.within_or("SSE_MAX_STREAMS_PER_CALLER", 5, 1..=1000)?,
                streams_total: env.within_or("SSE_MAX_STREAMS", 1000, 1..=1_000_000)?,
                body_read_timeout: env
                    .millis_or("BODY_READ_TIMEOUT_MS", Duration::from_secs(10))?,
                max_connections: env.within_or("HTTP_MAX_CONNECTIONS", 4096, 1..=1_000_000)?,
                max_connections_per_client: env.within_or(
                    "HTTP_MAX_CONNECTIONS_PER_CLIENT",
                    64,
                    1..=1_000_000,
                )?,
                trusted_proxies: proxies(&env.string_or("TRUSTED_PROXIES", ""))?,
            },
            breaker: BreakerSettings {
                timeout: env.millis_or("UPSTREAM_TIMEOUT_MS", Duration::from_secs(5))?,
                failures: env.within_or("BREAKER_FAILURES", 5, 1..=1000)?,
                open_for: env.millis_or("BREAKER_OPEN_MS", Duration::from_secs(5))?,
            },
            catalog_fresh_for: Duration::from_millis(env.within_or(
                "CATALOG_CACHE_MS",
                1000,
                0..=60_000,
            )?),
        };
        settings.upstreams.check_schemes(settings.tls.is_some())?;
        Ok(settings)
    }
}

/// `TRUSTED_PROXIES` read: each item an address (a range of one) or a CIDR range.
fn proxies(list: &str) -> Result<Vec<ipnet::IpNet>, EnvError> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| EnvError {
                    name: "TRUSTED_PROXIES".into(),
                    reason: format!("{item:?} is neither an address nor a CIDR range"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_local_stack() {
        let s = Settings::from_env(&Env::from_pairs([("TLS_DIR", "/tls")])).unwrap();
        assert_eq!(s.http_addr.port(), topology::GATEWAY.port);
        assert_eq!(s.upstreams.query, topology::QUERY_API.local_url());
        assert_eq!(
            s.tls.unwrap().cert_file(),
            std::path::Path::new("/tls/gateway.crt")
        );
        assert_eq!(s.oidc.issuer, "http://127.0.0.1:8090");
        assert!(s.limits.cors_origins.is_empty());
    }

    #[test]
    fn tls_is_on_unless_turned_off_and_never_downgraded() {
        let missing = Settings::from_env(&Env::from_pairs(Vec::<(&str, &str)>::new()));
        assert!(missing.unwrap_err().to_string().contains("TLS_DIR"));
        let plain = Settings::from_env(&Env::from_pairs([
            ("TLS_DIR", "/tls"),
            ("ORDERS_URL", "http://orders:1"),
        ]));
        assert!(plain.unwrap_err().to_string().contains("ORDERS_URL"));
        let one_replica_plain = Settings::from_env(&Env::from_pairs([
            ("TLS_DIR", "/tls"),
            ("QUERY_URL", "https://q1:1, http://q2:1"),
        ]));
        assert!(one_replica_plain
            .unwrap_err()
            .to_string()
            .contains("QUERY_URL"));
        let off = Settings::from_env(&Env::from_pairs([("TLS", "off")])).unwrap();
        assert_eq!(
            off.upstreams.orders,
            format!("http://127.0.0.1:{}", topology::ORDERS.port)
        );
        assert!(off.tls.is_none() && off.nats.tls.is_none());
    }

    #[test]
    fn origins_are_a_trimmed_list_and_limits_are_bounded() {
        let s = Settings::from_env(&Env::from_pairs([
            (
                "CORS_ALLOWED_ORIGINS",
                " https://a.example , https://b.example,",
            ),
            ("OIDC_ISSUER_URL", "https://id.example/"),
            ("TLS", "off"),
        ]))
        .unwrap();
        assert_eq!(
            s.limits.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(s.oidc.issuer, "https://id.example");
        assert!(Settings::from_env(&Env::from_pairs([
            ("RATE_LIMIT_BURST", "0"),
            ("TLS", "off")
        ]))
        .is_err());
    }
}
