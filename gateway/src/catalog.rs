//! The catalog's shared cache: product reads, the same for every caller, answered by the
//! gateway for a moment (`CATALOG_CACHE_MS`) and then revalidated against the query API with
//! the stored `ETag`, so a changed product is served within that moment and an unchanged one
//! costs the query API a 304 without a body.
//!
//! Invariant: only routes of `Kind::Catalog` use it; their answers do not depend on who asks
//! (no customer's data), and a read that waits for a version (`min_version`) bypasses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
// tokio's clock, which the tests pause and advance; the same as std's otherwise.
use tokio::time::Instant;

use crate::upstream::Answer;

/// The bytes of bodies the cache holds at most; past it, stale entries are dropped, and a new
/// one that still does not fit is not kept.
const BUDGET_BYTES: usize = 32 << 20;

/// A body larger than this is never kept (a page of the catalog is far smaller).
const LARGEST_BODY: usize = 1 << 20;

/// How an answer was made, for the `x-cache` header and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache, within its moment.
    Hit,
    /// From the cache, after the query API said it is still current (304).
    Revalidated,
    /// From the query API, now kept.
    Miss,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Revalidated => "revalidated",
            Self::Miss => "miss",
        }
    }
}

struct Entry {
    headers: HeaderMap,
    body: Bytes,
    etag: HeaderValue,
    checked: Instant,
}

impl Entry {
    fn answer(&self) -> Answer {
        Answer {
            status: StatusCode::OK,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<String, Entry>,
    bytes: usize,
}

/// The cache, shared by every request the gateway serves.
pub struct CatalogCache {
    fresh_for: Duration,
    entries: Mutex<Entries>,
}

impl CatalogCache {
    /// A cache whose entries are served for `fresh_for` before they are revalidated; zero
    /// turns it off.
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            entries: Mutex::new(Entries::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.fresh_for.is_zero()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept answer for `key` while it is fresh.
    pub fn fresh(&self, key: &str) -> Option<Answer> {
        let entries = self.lock();
        let entry = entries.by_key.get(key)?;
        (entry.checked.elapsed() < self.fresh_for).then(|| entry.answer())
    }

    /// The `ETag` of the kept answer for `key`, fresh or not: what to revalidate with.
    pub fn etag(&self, key: &str) -> Option<HeaderValue> {
        self.lock().by_key.get(key).map(|e| e.etag.clone())
    }

    /// The query API said the kept answer for `key` with `etag` is current: it is fresh
    /// again. `None` if it was replaced or dropped meanwhile.
    pub fn revalidated(&self, key: &str, etag: &HeaderValue) -> Option<Answer> {
        let mut entries = self.lock();
        let entry = entries.by_key.get_mut(key).filter(|e| e.etag == *etag)?;
        entry.checked = Instant::now();
        Some(entry.answer())
    }

    /// Keeps a 200 answer that carries an `ETag` (anything else is not kept).
    pub fn keep(&self, key: &str, answer: &Answer) {
        let Some(etag) = answer.headers.get(header::ETAG) else {
            return;
        };
        if answer.status != StatusCode::OK || answer.body.len() > LARGEST_BODY {
            return;
        }
        let mut entries = self.lock();
        if let Some(old) = entries.by_key.remove(key) {
            entries.bytes -= old.body.len();
        }
        if entries.bytes + answer.body.len() > BUDGET_BYTES {
            let fresh_for = self.fresh_for;
            entries
                .by_key
                .retain(|_, e| e.checked.elapsed() < fresh_for);
            entries.bytes = entries.by_key.values().map(|e| e.body.len()).sum();
            if entries.bytes + answer.body.len() > BUDGET_BYTES {
                return;
            }
        }
        entries.bytes += answer.body.len();
        entries.by_key.insert(
            key.to_owned(),
            Entry {
                headers: answer.headers.clone(),
                body: answer.body.clone(),
                etag: etag.clone(),
                checked: Instant::now(),
            },
        );
    }
}

/// Whether a client's `If-None-Match` names `etag` (`*`, a list, weak forms), as the query
/// API matches it.
pub fn matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(asked), Ok(etag)) = (if_none_match.to_str(), etag.to_str()) else {
        return false;
    };
    asked.trim() == "*"
        || asked
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

/// `answer` as 304 Not Modified: its validators and caching headers, no body.
pub fn not_modified(answer: Answer) -> Answer {
    let mut headers = HeaderMap::new();
    for name in [header::ETAG, header::CACHE_CONTROL] {
        if let Some(value) = answer.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    Answer {
        status: StatusCode::NOT_MODIFIED,
        headers,
        body: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str, etag: &'static str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static(etag));
        Answer {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_fresh_for_its_moment_then_revalidated_by_its_etag() {
        let cache = CatalogCache::new(Duration::from_millis(500));
        cache.keep("/products", &answer("[1]", "\"a\""));
        assert_eq!(cache.fresh("/products").unwrap().body, "[1]");
        tokio::time::advance(Duration::from_millis(550)).await;
        assert!(cache.fresh("/products").is_none(), "stale after its moment");
        let etag = cache.etag("/products").unwrap();
        assert_eq!(etag, "\"a\"");
        assert!(cache
            .revalidated("/products", &HeaderValue::from_static("\"b\""))
            .is_none());
        assert_eq!(cache.revalidated("/products", &etag).unwrap().body, "[1]");
        assert!(cache.fresh("/products").is_some(), "fresh again");
    }

    #[test]
    fn only_a_whole_answer_with_an_etag_is_kept_and_zero_turns_it_off() {
        let cache = CatalogCache::new(Duration::from_secs(1));
        let mut untagged = answer("[]", "\"x\"");
        untagged.headers.clear();
        cache.keep("/a", &untagged);
        let mut missing = answer("{}", "\"y\"");
        missing.status = StatusCode::NOT_FOUND;
        cache.keep("/b", &missing);
        assert!(cache.fresh("/a").is_none() && cache.fresh("/b").is_none());
        assert!(!CatalogCache::new(Duration::ZERO).enabled());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let cache = CatalogCache::new(Duration::from_secs(60));
        let big = Bytes::from(vec![b'x'; LARGEST_BODY]);
        for i in 0..(BUDGET_BYTES / LARGEST_BODY + 3) {
            let mut a = answer("", "\"e\"");
            a.body = big.clone();
            cache.keep(&format!("/p{i}"), &a);
        }
        assert!(cache.lock().bytes <= BUDGET_BYTES);
        let mut huge = answer("", "\"h\"");
        huge.body = Bytes::from(vec![b'x'; LARGEST_BODY + 1]);
        cache.keep("/huge", &huge);
        assert!(cache.fresh("/huge").is_none());
    }

    #[test]
    fn if_none_match_reads_lists_stars_and_weak_forms() {
        let etag = HeaderValue::from_static("\"abc\"");
        for asked in ["\"abc\"", "*", "\"x\", W/\"abc\""] {
            assert!(matches(&HeaderValue::from_static(asked), &etag), "{asked}");
        }
        assert!(!matches(&HeaderValue::from_static("\"abd\""), &etag));
    }
}
