//! The one per-key order check, for every test that reads a topic back.

use std::collections::{HashMap, HashSet};

use super::Received;

/// Which arrivals of each row the per-key order check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// What a consumer that dedups by event id (keeping the first copy) sees.
    FirstArrivals,
    /// What a consumer that keeps the latest copy of each row sees.
    LastArrivals,
}

/// For every key, the chosen arrival of each event must come in increasing
/// `position` (the row's place in its key's order: its id, or the sequence
/// number the load wrote). Keyless messages are not ordered.
pub fn assert_key_order(received: &[Received], order: Order, position: impl Fn(&Received) -> i64) {
    let mut sorted: Vec<&Received> = received.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    if order == Order::LastArrivals {
        sorted.reverse();
    }
    let mut last_per_key: HashMap<&str, i64> = HashMap::new();
    let mut seen = HashSet::new();
    for message in sorted {
        let Some(key) = message.key.as_deref() else {
            continue;
        };
        if !seen.insert(message.event_id()) {
            continue;
        }
        let here = position(message);
        if let Some(previous) = last_per_key.insert(key, here) {
            let in_order = match order {
                Order::FirstArrivals => previous < here,
                Order::LastArrivals => previous > here,
            };
            assert!(
                in_order,
                "key {key}: {here} and {previous} out of order ({order:?})"
            );
        }
    }
}
