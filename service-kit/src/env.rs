//! Reads typed settings from environment variables; the only place that touches `std::env`.
//!
//! Each binary declares one `Settings` struct and fills it through [`Env`], so defaults live in
//! one place per binary and a bad value fails at start-up with the variable's name.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A snapshot of environment variables to read settings from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// Every name read so far (shared by clones), so a test can hold the documented list of
    /// settings against the names the code reads.
    asked: Arc<Mutex<BTreeSet<String>>>,
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
            asked: Arc::default(),
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
            asked: Arc::default(),
        }
    }

    /// Every variable name read from this environment (or a clone of it) so far, sorted.
    pub fn asked(&self) -> Vec<String> {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.iter().cloned().collect()
    }

    /// The raw value, treating an empty string as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
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

    /// A secret given as `name` or in the file `name_FILE` (trimmed; the file is how Docker and
    /// Kubernetes secrets arrive); `None` when neither is set. The variable wins over the file.
    pub fn secret(&self, name: &str) -> Result<Option<crate::secret::Secret<String>>, EnvError> {
        if let Some(value) = self.get(name) {
            return Ok(Some(crate::secret::Secret::new(value.trim().to_owned())));
        }
        let file = format!("{name}_FILE");
        let Some(path) = self.get(&file) else {
            return Ok(None);
        };
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                Ok(Some(crate::secret::Secret::new(text.trim().to_owned())))
            }
            Ok(_) => Err(EnvError {
                name: file,
                reason: format!("{path} is empty"),
            }),
            Err(e) => Err(EnvError {
                name: file,
                reason: format!("{path} cannot be read: {e}"),
            }),
        }
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
    fn a_secret_comes_from_the_variable_or_its_file() {
        let dir = std::env::temp_dir().join(format!("env-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "sk_from_file\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let env = Env::from_pairs([
            ("A", "sk_direct"),
            ("A_FILE", path.as_str()),
            ("B_FILE", path.as_str()),
        ]);
        assert_eq!(env.secret("A").unwrap().unwrap().expose(), "sk_direct");
        assert_eq!(env.secret("B").unwrap().unwrap().expose(), "sk_from_file");
        assert!(env.secret("C").unwrap().is_none());
        let missing = Env::from_pairs([("D_FILE", "/nonexistent/key")]);
        assert_eq!(missing.secret("D").unwrap_err().name, "D_FILE");
        std::fs::remove_dir_all(dir).unwrap();
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
