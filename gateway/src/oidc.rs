//! Access-token verification against an OpenID Connect issuer: keys found by discovery
//! (`/.well-known/openid-configuration` -> `jwks_uri`), cached, and fetched again when a token
//! names a key the cache does not hold, so the issuer can rotate keys without a restart.
//!
//! The cryptography is `jsonwebtoken`'s; this module only chooses which key and which
//! algorithm a token may use, and which claims it must carry.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::settings::OidcSettings;
use crate::verified::Verified;

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A customer: the token's `sub`, and its `email` claim unless the token says the address
    /// is not verified (`email_verified: false`) or orders would refuse it.
    Customer { id: Uuid, email: Option<String> },
    /// An operator: a token carrying the admin scope or role; `subject` is its `sub`.
    Operator { subject: String },
}

impl Principal {
    /// The rate-limit key of the principal.
    pub fn subject(&self) -> String {
        match self {
            Self::Customer { id, .. } => id.to_string(),
            Self::Operator { subject } => format!("operator:{subject}"),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not acceptable: 401 `invalid_token`.
    #[error("{0}")]
    Invalid(String),
    /// The token is valid but names no customer and no operator: 403.
    #[error("the token's subject is neither a customer id nor an operator")]
    NoRole,
    /// The issuer's keys could not be fetched: 503, not the client's fault.
    #[error("the identity provider's keys are unavailable: {0}")]
    IssuerUnavailable(String),
}

/// The claims the gateway reads; `exp`, `nbf`, `iss` and `aud` are checked by
/// `jsonwebtoken` itself.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    nbf: i64,
    /// Space-separated scopes (RFC 9068).
    #[serde(default)]
    scope: String,
    /// Roles, as some issuers put them.
    #[serde(default)]
    roles: Vec<String>,
    /// The customer's address (OpenID Connect's standard claims).
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

/// A verification key and the one algorithm it may be used with.
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
}

type Keys = Arc<HashMap<String, Arc<Key>>>;

/// Verifies bearer tokens of one issuer for one audience.
pub struct Verifier {
    settings: OidcSettings,
    http: reqwest::Client,
    /// The keys as last fetched: read without waiting by every request.
    keys: RwLock<Keys>,
    /// Held while the keys are fetched; holds how the last fetch went.
    fetching: Mutex<LastFetch>,
    verified: Verified,
}

/// When the keys were last fetched, and why that failed, if it did.
#[derive(Default)]
struct LastFetch {
    at: Option<Instant>,
    failed: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Verifier {
    pub fn new(settings: OidcSettings, http: reqwest::Client) -> Self {
        // jsonwebtoken picks its one compiled backend; installing it explicitly keeps that
        // true if another crate ever enables a second one.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let verified = Verified::new(settings.leeway_secs);
        Self {
            settings,
            http,
            keys: RwLock::new(Arc::default()),
            fetching: Mutex::new(LastFetch::default()),
            verified,
        }
    }

    /// Fetches the keys now; the gateway calls this at start-up so the first request does
    /// not wait for discovery.
    pub async fn warm_up(&self) -> Result<usize, TokenError> {
        let mut last = self.fetching.lock().await;
        Ok(self.refresh(&mut last).await?.len())
    }

    /// Whom `token` speaks for, when it was verified a moment ago (and is still within its
    /// times); `None` otherwise, without checking anything.
    pub fn remembered(&self, token: &str) -> Option<Principal> {
        self.verified.get(token, unix_now())
    }

    /// Checks `token` and says whom it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let now = unix_now();
        if let Some(principal) = self.verified.get(token, now) {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("malformed token: {e}")))?;
        // Only asymmetric algorithms: `none` does not parse, and an HMAC token "signed" with
        // the issuer's public key is refused here, before any key is looked at.
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        // RFC 9068: an access token says so in its header. Without this check, any other JWT
        // the issuer signs for this audience (an ID token for a client named like it) would
        // pass for one.
        let typ = header.typ.as_deref().unwrap_or_default();
        let access =
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt");
        let untyped = typ.is_empty() || typ.eq_ignore_ascii_case("JWT");
        if !access && (self.settings.require_at_jwt || !untyped) {
            return Err(TokenError::Invalid(format!(
                "not an access token: its typ is {typ:?}, not \"at+jwt\" (RFC 9068)"
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("the token names no key (kid)".into()))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => self.key_after_refresh(&kid).await?,
        };
        if key.algorithm != header.alg {
            return Err(TokenError::Invalid(format!(
                "key {kid:?} signs with {:?}, not {:?}",
                key.algorithm, header.alg
            )));
        }
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.algorithm))
                .map_err(|e| TokenError::Invalid(describe(&e)))?
                .claims;
        let (expires, not_before) = (claims.exp, claims.nbf);
        let principal = self.principal(claims)?;
        self.verified
            .put(token, principal.clone(), expires, not_before);
        Ok(principal)
    }

    fn key(&self, kid: &str) -> Option<Arc<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// An unknown `kid`: the issuer may have rotated, so fetch again, unless that was done
    /// moments ago (then the key is simply unknown, or, when that fetch failed, the issuer is
    /// still taken to be unavailable: the token may be good).
    async fn key_after_refresh(&self, kid: &str) -> Result<Arc<Key>, TokenError> {
        let mut last = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.key(kid) {
            return Ok(key);
        }
        let due = last
            .at
            .is_none_or(|at| at.elapsed() >= self.settings.refresh_min_interval);
        if due {
            self.refresh(&mut last).await?;
        } else if let Some(why) = &last.failed {
            return Err(TokenError::IssuerUnavailable(why.clone()));
        }
        self.key(kid)
            .ok_or_else(|| TokenError::Invalid(format!("unknown signing key {kid:?}")))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = self.settings.leeway_secs;
        v.validate_nbf = true;
        v
    }

    fn principal(&self, claims: Claims) -> Result<Principal, TokenError> {
        let admin = &self.settings.admin_scope;
        if claims.scope.split_whitespace().any(|s| s == admin) || claims.roles.contains(admin) {
            return Ok(Principal::Operator {
                subject: claims.sub,
            });
        }
        let email = order_address(claims.email, claims.email_verified);
        Uuid::parse_str(&claims.sub)
            .map(|id| Principal::Customer { id, email })
            .map_err(|_| TokenError::NoRole)
    }

    /// A JSON document of the issuer's.
    async fn fetch<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, TokenError> {
        let unavailable = |e: reqwest::Error| TokenError::IssuerUnavailable(e.to_string());
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }

    /// Fetches the keys and records how that went.
    async fn refresh(&self, last: &mut LastFetch) -> Result<Keys, TokenError> {
        let fetched = self.fetch_keys().await;
        last.at = Some(Instant::now());
        last.failed = match &fetched {
            Err(TokenError::IssuerUnavailable(why)) => Some(why.clone()),
            _ => None,
        };
        fetched
    }

    /// Discovery, then the key set; keys the gateway cannot use are skipped.
    async fn fetch_keys(&self) -> Result<Keys, TokenError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let discovery: Discovery = self.fetch(&url).await?;
        // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was
        // fetched for, or its keys could be anyone's.
        if discovery.issuer.trim_end_matches('/') != self.settings.issuer {
            return Err(TokenError::IssuerUnavailable(format!(
                "the discovery document names issuer {:?}, not {:?}",
                discovery.issuer, self.settings.issuer
            )));
        }
        let set: JwkSet = self.fetch(&discovery.jwks_uri).await?;
        let keys: Keys = Arc::new(set.keys.iter().filter_map(usable).collect());
        tracing::info!(keys = keys.len(), "fetched the issuer's signing keys");
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys.clone();
        Ok(keys)
    }
}

/// Seconds since the epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A signature key with an id, of a type and curve the gateway accepts.
fn usable(jwk: &Jwk) -> Option<(String, Arc<Key>)> {
    let kid = jwk.common.key_id.clone()?;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Arc::new(Key { key, algorithm })))
}

/// A refusal as the client may read it: what was wrong, never the key material.
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidAudience => "the token is for another audience".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        other => format!("the token is not valid: {other:?}"),
    }
}

/// The address a customer's orders carry: the token's `email`, unless the token says it is not
/// verified, or it is no address orders accept (an identity provider may allow what SMTP does
/// not): then the order goes without emails rather than being refused for its address.
fn order_address(email: Option<String>, verified: Option<bool>) -> Option<String> {
    let email = email.filter(|_| verified != Some(false))?;
    if domain::order::valid_email(&email) {
        Some(email)
    } else {
        // The claim is personal data: it is not logged, only that it was set aside.
        tracing::warn!(
            "a token's email claim is not an address orders accept; the order goes without emails"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::order_address;

    #[test]
    fn an_order_carries_the_token_s_address_only_when_verified_and_acceptable() {
        let a = |s: &str| Some(s.to_owned());
        assert_eq!(
            order_address(a("ana@shop.example"), None),
            a("ana@shop.example")
        );
        assert_eq!(
            order_address(a("ana@shop.example"), Some(true)),
            a("ana@shop.example")
        );
        assert_eq!(order_address(a("ana@shop.example"), Some(false)), None);
        assert_eq!(order_address(None, Some(true)), None);
        // Accepted by some providers, refused by orders: the order goes without it.
        assert_eq!(order_address(a("ana@localhost"), Some(true)), None);
        assert_eq!(order_address(a("\"ana smith\"@shop.example"), None), None);
    }
}
