//! The guard against server-side request forgery: a webhook URL must be http(s) and reach a
//! public address. Names are resolved and every address checked at registration and again by
//! the delivery client's resolver at each attempt (DNS can change between the two); a literal
//! address never reaches the resolver, so it is checked before the request is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// Why a URL is not an endpoint this service sends to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a URL: {0}")]
    NotAUrl(String),
    #[error("only http and https URLs are sent to, not {0}")]
    Scheme(String),
    #[error("a URL with a user or password is not accepted")]
    Credentials,
    #[error("the URL names no host")]
    NoHost,
    #[error("{host} resolves to {address}, which is not a public address")]
    Private { host: String, address: IpAddr },
    #[error("{host} does not resolve: {why}")]
    Unresolved { host: String, why: String },
}

/// Whether `ip` is one no webhook may reach: loopback, private, link-local (the cloud
/// metadata service at 169.254.169.254 among them), shared, unspecified, multicast,
/// broadcast, documentation or benchmarking ranges, IPv6 unique-local and link-local, and
/// IPv4 addresses written as IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => private_v6(v6),
        },
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15; reserved, 240.0.0.0/4.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 and link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // IPv4-compatible ::a.b.c.d and the NAT64 well-known prefix 64:ff9b::/96.
        || ip.to_ipv4().is_some_and(|v4| !v4.is_unspecified() && private_v4(v4))
        || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
}

/// Checks URLs and resolves names for the delivery client.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// Private addresses too (`WEBHOOK_ALLOW_PRIVATE_ADDRESSES`).
    pub allow_private: bool,
}

impl Guard {
    /// Parses `url` and checks its form and every address its host resolves to.
    pub async fn check(&self, url: &str) -> Result<Url, Refusal> {
        let (parsed, host, port) = self.form(url)?;
        self.resolve(&host, port).await?;
        Ok(parsed)
    }

    /// What a delivery checks before its request: the URL's form and, for an address
    /// literal, the address. A name is left to the client's resolver (this guard), so each
    /// attempt looks it up once.
    pub fn check_before_sending(&self, url: &str) -> Result<(), Refusal> {
        let (_, host, port) = self.form(url)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.allowed(&host, vec![SocketAddr::new(ip, port)])?;
        }
        Ok(())
    }

    /// The URL parsed, its host and port, if its form is one webhooks are sent to.
    fn form(&self, url: &str) -> Result<(Url, String, u16), Refusal> {
        let parsed = Url::parse(url).map_err(|e| Refusal::NotAUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(parsed.scheme().to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refusal::Credentials);
        }
        let host = parsed.host_str().ok_or(Refusal::NoHost)?.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        Ok((parsed, host, port))
    }

    /// The addresses `host` resolves to, each allowed; an address literal is itself.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| Refusal::Unresolved {
                    host: host.to_owned(),
                    why: e.to_string(),
                })?
                .collect(),
        };
        self.allowed(host, addresses)
    }

    /// `addresses` of `host`, if there are some and each may be reached.
    fn allowed(&self, host: &str, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refusal> {
        if addresses.is_empty() {
            return Err(Refusal::Unresolved {
                host: host.to_owned(),
                why: "no address".into(),
            });
        }
        if !self.allow_private {
            if let Some(private) = addresses.iter().find(|a| is_private(a.ip())) {
                return Err(Refusal::Private {
                    host: host.to_owned(),
                    address: private.ip(),
                });
            }
        }
        Ok(addresses)
    }
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = *self;
        Box::pin(async move {
            // The port is the URL's: reqwest sets it on what this returns.
            let addresses = Guard::resolve(&guard, name.as_str(), 0).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused_and_public_ones_pass() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_refused_for_their_form_or_their_address() {
        let guard = Guard {
            allow_private: false,
        };
        for (url, why) in [
            ("ftp://example.com/x", "only http"),
            ("http://user:pw@example.com/", "user or password"),
            ("not a url", "not a URL"),
            ("http://127.0.0.1:9/hook", "not a public address"),
            ("http://[::1]/hook", "not a public address"),
            (
                "http://169.254.169.254/latest/meta-data",
                "not a public address",
            ),
            ("http://10.0.0.1/hook", "not a public address"),
            ("http://localhost:9/hook", "not a public address"),
        ] {
            let refusal = guard.check(url).await.unwrap_err();
            assert!(refusal.to_string().contains(why), "{url}: {refusal}");
        }
        // Before each attempt: the form and a literal address (names are the resolver's).
        for url in [
            "http://10.0.0.1/hook",
            "http://[::1]:9/hook",
            "ftp://example.com/",
        ] {
            assert!(guard.check_before_sending(url).is_err(), "{url}");
        }
        assert!(guard
            .check_before_sending("https://partner.invalid/hook")
            .is_ok());
        let open = Guard {
            allow_private: true,
        };
        assert!(open.check("http://127.0.0.1:9/hook").await.is_ok());
        assert!(open.check_before_sending("http://127.0.0.1:9/hook").is_ok());
    }
}
