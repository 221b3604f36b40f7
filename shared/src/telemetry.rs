//! Logging set-up shared by every binary: `tracing` with a filter from
//! `RUST_LOG`, readable lines by default and JSON when `LOG_FORMAT=json`.
//! Each binary checks `RUST_LOG` with [`check_filter`] when it loads its
//! settings, so a typo stops start-up instead of silently logging with the
//! default filter.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Env, invalid};

/// The variable holding the log filter.
pub const FILTER_VAR: &str = "RUST_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for development.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.optional("LOG_FORMAT") {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(invalid("LOG_FORMAT", "`text` or `json`", Some(other))),
        }
    }
}

/// Refuses a `RUST_LOG` that is set but is not a filter `tracing` can
/// parse. Unset or blank means the binary's default filter.
pub fn check_filter(env: &Env) -> Result<(), ConfigError> {
    match env.optional(FILTER_VAR) {
        None => Ok(()),
        Some(raw) => EnvFilter::try_new(raw).map(drop).map_err(|_| {
            invalid(
                FILTER_VAR,
                "comma-separated directives such as `info` or `info,lapin=error` \
                 (levels: off, error, warn, info, debug, trace)",
                Some(raw),
            )
        }),
    }
}

/// Installs the global subscriber, with `RUST_LOG` as the filter, or
/// `default_filter` when it is unset or blank. Call [`check_filter`] first:
/// a `RUST_LOG` that does not parse is reported on stderr and replaced by
/// the default. Calling it twice keeps the first subscriber (tests do).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = match std::env::var(FILTER_VAR) {
        Ok(raw) if !raw.trim().is_empty() => EnvFilter::try_new(raw.trim()).unwrap_or_else(|_| {
            eprintln!("invalid {FILTER_VAR}; logging with {default_filter:?} instead");
            EnvFilter::new(default_filter)
        }),
        _ => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_checked_when_set() {
        for good in ["info", "info,lapin=error", "worker=debug", "  ", "off"] {
            let env = Env::from_pairs([(FILTER_VAR, good)]);
            assert_eq!(check_filter(&env), Ok(()), "{good:?}");
        }
        assert_eq!(check_filter(&Env::default()), Ok(()));
        for bad in ["info,lapin=loud", "=info", "worker=debug,[{"] {
            let env = Env::from_pairs([(FILTER_VAR, bad)]);
            let error = check_filter(&env).unwrap_err();
            assert_eq!(error.variable, FILTER_VAR, "{bad:?}");
            assert!(error.to_string().contains("info,lapin=error"), "{error}");
        }
    }
}
