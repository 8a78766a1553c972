//! A wrapper for values that must never reach a log line, such as connection strings.

use std::fmt;

/// Holds a secret; `Debug` and `Display` print a redacted form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it (a connection call).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl fmt::Debug for Secret<String> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", redact_url(&self.0))
    }
}

impl fmt::Display for Secret<String> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", redact_url(&self.0))
    }
}

/// The URLs of a NATS cluster's list (`nats://n1:4222,nats://n2:4222`), trimmed. Only a comma
/// followed by another URL (`nats://`, `tls://`, `ws://`, `wss://`) separates two, so a comma
/// inside a password is never mistaken for one.
pub fn url_list(list: &str) -> Vec<&str> {
    let starts_url = |rest: &str| {
        let rest = rest.trim_start();
        ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| rest.starts_with(scheme))
    };
    let mut urls = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        if starts_url(&list[i + 1..]) {
            urls.push(list[start..i].trim());
            start = i + 1;
        }
    }
    urls.push(list[start..].trim());
    urls.retain(|u| !u.is_empty());
    urls
}

/// Query parameters whose values are secrets (libpq's `password` and `sslpassword`, and any
/// token or key).
const SECRET_PARAMETERS: &[&str] = &["password", "sslpassword", "token", "secret", "key"];

/// The URL with its secrets replaced by `***`: the password of `user:password@`, however
/// many `@` it holds; a bare `token@` of a NATS URL; and secret query parameters
/// (`?password=`).
pub fn redact_url(url: &str) -> String {
    // A NATS cluster's list of URLs: each one redacted.
    let urls = url_list(url);
    if urls.len() > 1 {
        return urls
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",");
    }
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let scheme = &url[..scheme_end];
    let rest = &url[scheme_end + 3..];
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end + 3]);
    // The userinfo ends at the last `@`: a raw `@` in a password must not end it early.
    match head.rfind('@') {
        Some(at) => {
            let userinfo = &head[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                // A NATS URL's lone userinfo is a token.
                None if matches!(scheme, "nats" | "tls" | "ws" | "wss") => out.push_str("***"),
                None => out.push_str(userinfo),
            }
            out.push_str(&head[at..]);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if SECRET_PARAMETERS
                        .iter()
                        .any(|s| name.to_ascii_lowercase().contains(s)) =>
                {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let s = Secret::new("postgres://app:hunter2@db:5432/orders".to_owned());
        assert_eq!(format!("{s:?}"), "postgres://app:***@db:5432/orders");
        assert_eq!(
            redact_url("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
    }

    #[test]
    fn every_url_of_a_cluster_is_redacted() {
        assert_eq!(
            redact_url("nats://a:p,w@n1:4222,nats://a:p@w@n2:4222"),
            "nats://a:***@n1:4222,nats://a:***@n2:4222"
        );
        assert_eq!(
            redact_url("nats://n1:4222, nats://n2:4222"),
            "nats://n1:4222,nats://n2:4222"
        );
        assert_eq!(
            url_list("nats://a:p,w@n1:4222, tls://n2:4222,"),
            ["nats://a:p,w@n1:4222", "tls://n2:4222,"]
        );
    }

    #[test]
    fn every_form_of_secret_is_redacted() {
        for (url, shown) in [
            (
                "postgres://app:p@ss@word@db:5432/orders",
                "postgres://app:***@db:5432/orders",
            ),
            (
                "postgres://app@db/orders?sslmode=require&password=hunter2",
                "postgres://app@db/orders?sslmode=require&password=***",
            ),
            (
                "postgres://db/orders?user=app&PASSWORD=hunter2",
                "postgres://db/orders?user=app&PASSWORD=***",
            ),
            ("nats://s3cret-token@nats:4222", "nats://***@nats:4222"),
            ("nats://svc:hunter2@nats:4222", "nats://svc:***@nats:4222"),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("not a url hunter2", "***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("hunter2"));
        }
    }
}
