//! Logging set-up shared by every binary: `tracing` with a filter from
//! `RUST_LOG`, readable lines by default and JSON when `LOG_FORMAT=json`.
//! Each binary checks `RUST_LOG` with [`check_filter`] when it loads its
//! settings, so a filter `tracing` cannot parse (`info,lapin=loud`) stops
//! start-up instead of silently logging with the default filter. A
//! misspelt level alone (`inof`) still parses, as a filter for a target of
//! that name, and so silences the log: `tracing`'s syntax cannot tell it
//! from a real target.
//!
//! Whatever `RUST_LOG` says, lapin logs only errors and `amq_protocol*`
//! nothing: lapin prints a returned message whole at `warn` and frames
//! (message bodies included) at `trace`, and payloads never reach a log.
//! lapin's I/O loop and channel table log nothing at all: each connection
//! they lose (and each connect attempt given up, whose socket is shut
//! down on purpose) they report as two or three ERROR lines, and the
//! services learn of the same loss through lapin's results and events and
//! log it once, with what they do about it.

use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
                Some(&shown(raw)),
            )
        }),
    }
}

/// At most the first 80 characters of `raw`, for an error message.
fn shown(raw: &str) -> String {
    const SHOWN: usize = 80;
    match raw.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_owned(),
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
    let _already_set = subscriber(format, filter, std::io::stderr).try_init();
}

/// The targets kept quiet on top of any filter: they would print message
/// bodies. A separate filter, not directives added to the user's, so no
/// directive (a more specific target, a span filter) can open them again.
fn quiet_targets() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("lapin", LevelFilter::ERROR)
        .with_target("lapin::io_loop", LevelFilter::OFF)
        .with_target("lapin::channels", LevelFilter::OFF)
        // Matches every target starting so: amq_protocol_types, _uri, …
        .with_target("amq_protocol", LevelFilter::OFF)
}

/// The subscriber [`init`] installs, writing to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filters = filter.and(quiet_targets());
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => {
            Box::new(tracing_subscriber::registry().with(layer.with_filter(filters)))
        }
        LogFormat::Json => Box::new(
            tracing_subscriber::registry().with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(filters),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_filter_is_shown_short() {
        let long = format!("info,{}", "x=".repeat(5000));
        let env = crate::config::Env::from_pairs([("RUST_LOG", long.as_str())]);
        let message = check_filter(&env).unwrap_err().to_string();
        assert!(message.len() < 400, "{message}");
        assert!(message.contains('…'), "{message}");
    }

    use super::*;

    use std::sync::{Arc, Mutex};

    /// A writer that keeps what is written, for reading back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lapin_and_amq_protocol_stay_quiet_whatever_the_filter() {
        for raw in [
            "trace",
            "lapin=trace,amq_protocol=trace",
            "lapin::returned_messages=trace,amq_protocol_types=trace",
            "[publish]=trace",
        ] {
            for format in [LogFormat::Text, LogFormat::Json] {
                let captured = Captured::default();
                let writer = captured.clone();
                let subscriber = subscriber(format, EnvFilter::new(raw), move || writer.clone());
                tracing::subscriber::with_default(subscriber, || {
                    let span = tracing::info_span!("publish");
                    let _entered = span.enter();
                    tracing::warn!(target: "lapin::returned_messages", "payload-lapin-warn");
                    tracing::trace!(target: "lapin::frames", "payload-lapin-trace");
                    tracing::error!(target: "amq_protocol::frame", "payload-amq-error");
                    tracing::trace!(target: "amq_protocol_types", "payload-amq-types");
                    tracing::error!(target: "lapin::channel", "lapin-error-kept");
                    tracing::error!(target: "lapin::io_loop", "lapin-io-loop-dropped");
                    tracing::error!(target: "lapin::channels", "lapin-channels-dropped");
                    tracing::info!(target: "ingest", "ours-kept");
                });
                let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
                assert!(!text.contains("payload-"), "{raw:?} {format:?}: {text}");
                assert!(!text.contains("-dropped"), "{raw:?} {format:?}: {text}");
                // What the filter opens elsewhere stays open.
                if raw == "trace" {
                    assert!(text.contains("lapin-error-kept"), "{format:?}: {text}");
                }
                if raw == "trace" || raw.starts_with('[') {
                    assert!(text.contains("ours-kept"), "{raw:?} {format:?}: {text}");
                }
            }
        }
    }

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
