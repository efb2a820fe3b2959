//! Backoff schedules: per-row retry delays, and the relay's own wait while
//! PostgreSQL or Kafka is unreachable.

use std::time::Duration;

/// Exponential backoff with "equal jitter" for rows that failed: half of the
/// exponential delay is fixed, the other half random, so retries of many rows
/// spread out but never come sooner than half the schedule.
#[derive(Debug, Clone, Copy)]
pub struct RetryBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl RetryBackoff {
    /// Delay after the `failed_attempts`-th failure (1 for the first), with
    /// `jitter` in `0.0..=1.0`.
    pub fn delay(&self, failed_attempts: u32, jitter: f64) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(32);
        let exponential = self
            .base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        let half = exponential / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Capped doubling for the relay as a whole while a dependency is down.
#[derive(Debug, Clone)]
pub struct OutageBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl OutageBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        OutageBackoff {
            min,
            max,
            next: min,
        }
    }

    /// The wait before the next try; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: RetryBackoff = RetryBackoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn retry_delay_doubles_per_failure_within_its_jitter_band() {
        assert_eq!(BACKOFF.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(BACKOFF.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(BACKOFF.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(BACKOFF.delay(3, 1.0), Duration::from_secs(4));
    }

    #[test]
    fn retry_delay_is_capped_even_after_many_failures() {
        assert_eq!(BACKOFF.delay(40, 1.0), Duration::from_secs(60));
        assert_eq!(BACKOFF.delay(u32::MAX, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn outage_backoff_doubles_to_its_cap_and_resets() {
        let mut backoff =
            OutageBackoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
