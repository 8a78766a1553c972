//! Tokens already verified, remembered for a short while: an RS256 signature check costs more
//! than the rest of a proxied request, and a client sends the same token with every call.
//!
//! The key is the whole token, signature included, so a token changed in any byte is a
//! different entry and is verified afresh. An entry is used only while the token's own `exp`
//! and `nbf` allow it, and for at most [`KEEP_FOR`]: a key the issuer withdraws stops
//! accepting its tokens within that time.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::oidc::Principal;

/// How long a verified token is trusted without checking its signature again.
pub const KEEP_FOR: Duration = Duration::from_secs(60);

/// At most this many tokens are remembered; the map starts over when it is full.
const CAPACITY: usize = 10_000;

struct Entry {
    principal: Principal,
    /// The token's `exp` and `nbf`, seconds since the epoch.
    expires: i64,
    not_before: i64,
    /// When the entry stops being trusted.
    until: Instant,
}

/// The remembered tokens.
pub struct Verified {
    entries: RwLock<HashMap<String, Entry>>,
    leeway_secs: i64,
}

impl Verified {
    pub fn new(leeway_secs: u64) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            leeway_secs: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
        }
    }

    /// Whom `token` speaks for, if it was verified recently and is still within its times.
    pub fn get(&self, token: &str, now_secs: i64) -> Option<Principal> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.get(token)?;
        let in_time = Instant::now() < entry.until
            && now_secs <= entry.expires.saturating_add(self.leeway_secs)
            && now_secs >= entry.not_before.saturating_sub(self.leeway_secs);
        in_time.then(|| entry.principal.clone())
    }

    /// Remembers a token that has just been verified.
    pub fn put(&self, token: &str, principal: Principal, expires: i64, not_before: i64) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            token.to_owned(),
            Entry {
                principal,
                expires,
                not_before,
                until: Instant::now() + KEEP_FOR,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[tokio::test(start_paused = true)]
    async fn a_token_is_trusted_within_its_times_and_for_a_minute_at_most() {
        let v = Verified::new(30);
        let who = Principal::Customer {
            id: Uuid::nil(),
            email: None,
        };
        v.put("t", who.clone(), 1_000, 0);
        assert_eq!(v.get("t", 900), Some(who.clone()));
        assert_eq!(v.get("t", 1_030), Some(who.clone()), "within the leeway");
        assert_eq!(v.get("t", 1_031), None, "expired");
        assert_eq!(v.get("other", 900), None);
        tokio::time::advance(KEEP_FOR).await;
        assert_eq!(v.get("t", 900), None, "verified again after a minute");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_not_yet_valid_is_not_trusted() {
        let v = Verified::new(0);
        v.put(
            "t",
            Principal::Operator {
                subject: "op".into(),
            },
            2_000,
            1_000,
        );
        assert_eq!(v.get("t", 999), None);
        assert!(v.get("t", 1_000).is_some());
    }
}
