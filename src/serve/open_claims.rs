//! The claim transactions this relay holds open, for the
//! `outbox_oldest_open_claim_seconds` gauge.
//!
//! A claim transaction stays open while its batch waits for Kafka's acks, and
//! an open transaction holds back vacuum on the whole database, so its age is
//! worth watching. Guarantees: a claim counts from the moment it is opened
//! until its [`OpenClaim`] is dropped, however the batch ends (recorded,
//! abandoned, released at the claim timeout, or lost with its connection).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct OpenClaims {
    next: AtomicU64,
    opened: Mutex<BTreeMap<u64, Instant>>,
}

/// One open claim; dropping it closes it.
#[derive(Debug)]
pub struct OpenClaim {
    claims: Arc<OpenClaims>,
    number: u64,
}

impl OpenClaims {
    pub fn open(self: &Arc<Self>, at: Instant) -> OpenClaim {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(number, at);
        OpenClaim {
            claims: Arc::clone(self),
            number,
        }
    }

    /// How long the oldest open claim has been open at `now`; zero for none.
    pub fn oldest_age(&self, now: Instant) -> Duration {
        self.lock().values().min().map_or(Duration::ZERO, |opened| {
            now.saturating_duration_since(*opened)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for OpenClaim {
    fn drop(&mut self) {
        self.claims.lock().remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_open_claim_counts_until_it_is_dropped() {
        let claims = Arc::new(OpenClaims::default());
        let start = Instant::now();
        assert_eq!(claims.oldest_age(start), Duration::ZERO);
        let first = claims.open(start);
        let second = claims.open(start + Duration::from_secs(2));
        let now = start + Duration::from_secs(5);
        assert_eq!(claims.oldest_age(now), Duration::from_secs(5));
        drop(first);
        assert_eq!(claims.oldest_age(now), Duration::from_secs(3));
        drop(second);
        assert_eq!(claims.oldest_age(now), Duration::ZERO);
    }
}
