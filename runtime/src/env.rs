//! Reads typed settings from environment variables; the only place that touches `std::env`.
//!
//! Each binary declares one `Settings` struct and fills it through [`Env`], so defaults live in
//! one place per binary and a bad value fails at start-up with the variable's name.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A snapshot of environment variables to read settings from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// A variable was set to a value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} has an invalid value: {reason}")]
pub struct EnvError {
    pub name: String,
    pub reason: String,
}

impl Env {
    /// The environment of this process.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment made of the given pairs (tests build settings this way).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The raw value, treating an empty string as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A string, or the default when unset.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// A parsed value, or the default when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, EnvError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| EnvError {
                name: name.to_owned(),
                reason: format!("{raw:?}: {e}"),
            }),
        }
    }

    /// A parsed value within `range`, or the default when unset; a value outside is refused
    /// by name.
    pub fn within_or<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, EnvError>
    where
        T: FromStr + PartialOrd + Display,
        T::Err: Display,
    {
        let value = self.parse_or(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(EnvError {
                name: name.to_owned(),
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    /// A duration given in milliseconds, or the default when unset.
    pub fn millis_or(&self, name: &str, default: Duration) -> Result<Duration, EnvError> {
        let ms: u64 = self.parse_or(name, default.as_millis() as u64)?;
        Ok(Duration::from_millis(ms))
    }

    /// A boolean: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, EnvError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(EnvError {
                name: name.to_owned(),
                reason: format!("{other:?} is not a boolean (use true or false)"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_unset_and_empty_values() {
        let env = Env::from_pairs([("A", ""), ("B", "7")]);
        assert_eq!(env.parse_or("A", 3u16).unwrap(), 3);
        assert_eq!(env.parse_or("B", 3u16).unwrap(), 7);
        assert_eq!(env.string_or("C", "x"), "x");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = Env::from_pairs([("PORT", "eighty"), ("FLAG", "maybe")]);
        let err = env.parse_or("PORT", 80u16).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
        assert!(env.bool_or("FLAG", false).is_err());
        assert_eq!(
            env.millis_or("MISSING", Duration::from_secs(2)).unwrap(),
            Duration::from_secs(2)
        );
    }
}
