//! How long a row waits before its next attempt: exponential with jitter
//! (`backon`), from `DISPATCH_BACKOFF_MIN_MS` doubling to at most
//! `DISPATCH_BACKOFF_MAX_SECS`, and never less than the other side asked
//! for (`Retry-After`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The wait after attempt number `attempt` (1 for the first) failed.
pub fn delay(min: Duration, max: Duration, attempt: i32, asked: Option<Duration>) -> Duration {
    let nth = usize::try_from(attempt.max(1) - 1).unwrap_or(0);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(nth)
        .unwrap_or(max);
    backoff.max(asked.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_within_bounds_and_honours_retry_after() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let first = delay(min, max, 1, None);
        assert!(first >= min && first <= min * 2, "{first:?}");
        let fourth = delay(min, max, 4, None);
        assert!(fourth >= min * 8 && fourth <= min * 16, "{fourth:?}");
        // Jitter may add up to one more delay on top of the cap.
        assert!(delay(min, max, 40, None) <= max * 2);
        assert!(delay(min, max, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }
}
