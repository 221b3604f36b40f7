//! Reading settings from the environment, with errors that name the variable
//! and say what was expected.
//!
//! Settings are read through an [`Env`] rather than `std::env` directly so
//! tests can load a configuration from a map without touching the process
//! environment.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A setting that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: String,
    /// What a valid value looks like.
    pub expected: String,
    /// The value found; `None` when it was missing or is a secret.
    pub found: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            Some(found) => write!(
                f,
                "invalid {}: expected {}, found {found:?}",
                self.variable, self.expected
            ),
            None => write!(f, "invalid {}: expected {}", self.variable, self.expected),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A snapshot of environment variables.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: show only which variables are set.
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// The process environment. A value that is not valid UTF-8 is kept
    /// with its bad bytes replaced (U+FFFD), never dropped: a dropped value
    /// would silently become the default (another database, another
    /// broker), while a replaced one fails its check or its connection.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(key, value)| {
            Some((
                key.into_string().ok()?,
                value.to_string_lossy().into_owned(),
            ))
        }))
    }

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

    /// The trimmed value, or `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or(default).to_owned()
    }

    /// Parses `name` with `FromStr`, or returns `default` when unset.
    pub fn parse_or<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| invalid(name, expected, Some(raw))),
        }
    }

    /// Like [`Env::parse_or`] for an optional value with no default.
    pub fn parse_optional<T: FromStr>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.optional(name)
            .map(|raw| raw.parse().map_err(|_| invalid(name, expected, Some(raw))))
            .transpose()
    }

    /// A whole number within `range`, or `default` when unset.
    pub fn number_or(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        let value = self.parse_or(name, default, &expected)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(invalid(name, &expected, Some(&value.to_string())))
        }
    }

    /// A duration in milliseconds (a variable named `…_MS`), as
    /// [`number_or`](Self::number_or) checks it.
    pub fn millis_or(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<std::time::Duration, ConfigError> {
        self.number_or(name, default, range)
            .map(std::time::Duration::from_millis)
    }

    /// A duration in seconds (a variable named `…_SECS`), as
    /// [`number_or`](Self::number_or) checks it.
    pub fn secs_or(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<std::time::Duration, ConfigError> {
        self.number_or(name, default, range)
            .map(std::time::Duration::from_secs)
    }
}

/// `AMQP_URL` (or `default` when unset): one amqp(s):// URL or a
/// comma-separated list of them (the nodes of a cluster, see
/// [`crate::amqp_addresses`]), checked now so a typo stops start-up with
/// exit code 2 instead of failing at the first connection. The value holds
/// passwords, so it is never echoed: a bad item is named by its position.
#[cfg(feature = "amqp")]
pub fn amqp_addresses(
    env: &Env,
    default: &str,
) -> Result<crate::amqp_addresses::AmqpAddresses, ConfigError> {
    const VAR: &str = "AMQP_URL";
    crate::amqp_addresses::AmqpAddresses::parse(&env.string_or(VAR, default)).map_err(|error| {
        let expected = format!(
            "an amqp:// or amqps:// URL such as amqp://user:password@host:5672/%2f, \
                 or several separated by commas ({error})"
        );
        invalid(VAR, &expected, None)
    })
}

/// Builds a [`ConfigError`]; pass `found: None` for secrets.
pub fn invalid(variable: &str, expected: &str, found: Option<&str>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        expected: expected.to_owned(),
        found: found.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable_and_the_expectation() {
        let env = Env::from_pairs([("PORT", "eighty"), ("N", "99")]);
        let error = env
            .parse_or::<u16>("PORT", 80, "a port number")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid PORT: expected a port number, found \"eighty\""
        );
        let error = env.number_or("N", 1, 1..=10).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid N: expected a whole number from 1 to 10, found \"99\""
        );
    }

    #[test]
    fn blank_is_unset() {
        let env = Env::from_pairs([("A", "  ")]);
        assert_eq!(env.optional("A"), None);
        assert_eq!(env.string_or("A", "dflt"), "dflt");
        assert_eq!(env.parse_or("A", 7u32, "n"), Ok(7));
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn a_bad_amqp_url_is_named_but_not_echoed() {
        let default = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert!(amqp_addresses(&Env::default(), default).is_ok());
        for bad in [
            "amqp//user:hunter2@host",
            "http://user:hunter2@host",
            "amqp://user:hunter2@host:port/%2f",
        ] {
            let env = Env::from_pairs([("AMQP_URL", bad)]);
            let error = amqp_addresses(&env, default).unwrap_err();
            assert_eq!(error.variable, "AMQP_URL");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn a_bad_item_of_an_amqp_url_list_is_named_by_position() {
        let env = Env::from_pairs([(
            "AMQP_URL",
            "amqp://u:hunter2@a:5672/%2f,amqp://u:hunter2@b:port/%2f",
        )]);
        let error = amqp_addresses(&env, "amqp://localhost").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid AMQP_URL: expected an amqp:// or amqps:// URL such as \
             amqp://user:password@host:5672/%2f, or several separated by commas \
             (item 2 is not an amqp:// or amqps:// URL; a comma inside a password is written %2C)"
        );
        // A raw comma in a password, valid in one URL before lists, splits
        // the list: the message says how to write it.
        let env = Env::from_pairs([("AMQP_URL", "amqp://u:hun,ter2@a:5672/%2f")]);
        let error = amqp_addresses(&env, "amqp://localhost")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("item 1 is not") && error.contains("%2C"),
            "{error}"
        );
        assert!(!error.contains("hun") && !error.contains("ter2"), "{error}");
    }

    #[test]
    fn debug_hides_values() {
        let env = Env::from_pairs([("SECRET", "whsec_hidden")]);
        assert!(!format!("{env:?}").contains("hidden"));
    }
}
