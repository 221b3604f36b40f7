//! `--since D`: how far back a command looks, as an age (`90m`, `36h`,
//! `7d`) or a moment (`2026-11-01`, `2026-11-01T08:00:00Z`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in the past, given relative to now or as a UTC moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the command runs.
    Ago(Duration),
    /// This moment.
    At(SystemTime),
}

impl Since {
    /// The moment meant, as of `now`.
    pub fn moment(self, now: SystemTime) -> SystemTime {
        match self {
            Self::Ago(age) => now.checked_sub(age).unwrap_or(UNIX_EPOCH),
            Self::At(moment) => moment,
        }
    }

    /// The moment meant, as of `now`, in Unix seconds (0 before 1970).
    pub fn unix_seconds(self, now: SystemTime) -> i64 {
        self.moment(now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// The moment meant, as of `now`, in Unix milliseconds (0 before 1970):
    /// `to_timestamp($1::float8 / 1000)` in SQL.
    pub fn unix_millis(self, now: SystemTime) -> i64 {
        self.moment(now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Why a `--since` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSince(String);

impl fmt::Display for BadSince {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is neither an age (90m, 36h, 7d) nor a UTC date or time \
             (2026-11-01, 2026-11-01T08:00:00Z)",
            self.0
        )
    }
}

impl std::error::Error for BadSince {}

impl FromStr for Since {
    type Err = BadSince;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let trimmed = raw.trim();
        let bad = || BadSince(raw.to_owned());
        if trimmed.is_empty() {
            return Err(bad());
        }
        if trimmed.starts_with(|c: char| c.is_ascii_digit()) && trimmed.len() == 10 {
            // A bare date: its midnight, UTC.
            return humantime::parse_rfc3339_weak(&format!("{trimmed} 00:00:00"))
                .map(Self::At)
                .map_err(|_| bad());
        }
        if let Ok(moment) = humantime::parse_rfc3339_weak(trimmed) {
            return Ok(Self::At(moment));
        }
        match humantime::parse_duration(trimmed) {
            Ok(age) if !age.is_zero() => Ok(Self::Ago(age)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_moments_parse() {
        assert_eq!(
            "7d".parse::<Since>(),
            Ok(Since::Ago(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            "90m".parse::<Since>(),
            Ok(Since::Ago(Duration::from_secs(5_400)))
        );
        let at = |s: &str| {
            s.parse::<Since>()
                .map(|s| s.unix_seconds(SystemTime::now()))
        };
        assert_eq!(at("2026-11-01"), Ok(1_793_491_200));
        assert_eq!(at("2026-11-01T08:00:00Z"), Ok(1_793_520_000));
    }

    #[test]
    fn an_age_is_taken_from_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let since: Since = "1h".parse().unwrap_or(Since::At(UNIX_EPOCH));
        assert_eq!(since.unix_seconds(now), 1_000_000 - 3_600);
        assert_eq!(since.unix_millis(now), (1_000_000 - 3_600) * 1_000);
    }

    #[test]
    fn nonsense_is_refused_with_the_forms_that_work() {
        for bad in ["", "soon", "0s", "-3d", "2026-13-01", "7 parsecs"] {
            let error = bad.parse::<Since>().err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains("36h")),
                "{bad:?}: {error:?}"
            );
        }
    }
}
