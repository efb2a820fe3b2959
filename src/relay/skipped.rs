//! Rows PostgreSQL refuses to update at all, not even to make them dead (a
//! trigger or constraint of the application's that no relay statement can
//! satisfy): the relay skips them for a while instead of failing every batch
//! that claims them.
//!
//! Guarantees: a skipped row is never claimed while skipped, yet stays
//! pending, so the later rows of its key keep waiting behind it (see
//! `outbox_claim_due.sql`); each is tried again once its skip ends, so a
//! row fixed by hand flows without a restart. Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Skipped {
    until: HashMap<i64, Instant>,
}

impl Skipped {
    /// Skip row `id` for `period` from `now`. Returns whether it was not
    /// skipped already (so the caller reports it once per skip).
    pub fn add(&mut self, id: i64, now: Instant, period: Duration) -> bool {
        self.until.insert(id, now + period).is_none()
    }

    /// The rows skipped at `now`; forgets those whose skip ended.
    pub fn ids(&mut self, now: Instant) -> Vec<i64> {
        self.until.retain(|_, until| *until > now);
        let mut ids: Vec<i64> = self.until.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_skipped_until_its_period_ends() {
        let start = Instant::now();
        let mut skipped = Skipped::default();
        assert!(skipped.add(7, start, Duration::from_secs(60)));
        assert!(!skipped.add(7, start, Duration::from_secs(60)), "said once");
        assert!(skipped.add(3, start, Duration::from_secs(10)));
        assert_eq!(skipped.ids(start), vec![3, 7]);
        assert_eq!(skipped.ids(start + Duration::from_secs(10)), vec![7]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped.ids(start + Duration::from_secs(60)).is_empty());
    }
}
