//! `--rate N/s`: at most N messages a second, so a replay does not bury
//! the live traffic in front of it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

/// Messages a second, more than 0 and at most [`Rate::MAX`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

impl Rate {
    pub const MAX: f64 = 100_000.0;

    pub fn per_second(self) -> f64 {
        self.0
    }

    /// A ticker that lets one message through per tick: the first at once,
    /// then one every 1/N s; a slow publish does not earn a burst after.
    pub fn pacer(self) -> Interval {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / self.0));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    }
}

/// Why a `--rate` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRate(String);

impl fmt::Display for BadRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a rate: expected messages a second, such as 50/s or 0.5/s, \
             above 0 and at most {}",
            self.0,
            Rate::MAX
        )
    }
}

impl std::error::Error for BadRate {}

impl FromStr for Rate {
    type Err = BadRate;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let number = raw.trim();
        let number = number.strip_suffix("/s").unwrap_or(number);
        match number.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && n > 0.0 && n <= Self::MAX => Ok(Self(n)),
            _ => Err(BadRate(raw.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_the_unit() {
        assert_eq!("50/s".parse::<Rate>().map(Rate::per_second), Ok(50.0));
        assert_eq!("0.5".parse::<Rate>().map(Rate::per_second), Ok(0.5));
        for bad in ["0", "-1/s", "fast", "NaN", "inf/s", "1e9/s", "5/m"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }
}
