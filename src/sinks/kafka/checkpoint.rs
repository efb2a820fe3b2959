//! The checkpoint record an exactly-once batch commits with its messages:
//! which rows the transaction published, keyed by the table's
//! `transactional.id` in a compacted topic, so the latest record per key is
//! the last batch Kafka committed for that table.
//!
//! Guarantees: ids round-trip exactly (a batch's ids are encoded as sorted
//! ranges, small for the consecutive ids claims usually return); a table's
//! checkpoints always go to the same partition, chosen from its
//! `transactional.id` alone, so every process serving the table reads the
//! same one.

use serde::{Deserialize, Serialize};

/// The checkpoint topic's default name.
pub const DEFAULT_CHECKPOINT_TOPIC: &str = "__outbox_relay_checkpoints";

/// Partitions the relay gives the checkpoint topic when it creates it:
/// tables hash onto them, and tables that share one wait on each other's
/// open transactions when they recover.
pub const CHECKPOINT_PARTITIONS: i32 = 50;

/// One committed batch: the table and the rows it published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The table, schema-qualified: for an operator reading the topic.
    pub table: String,
    /// Inclusive ranges of row ids, ascending.
    pub ids: Vec<(i64, i64)>,
}

impl Checkpoint {
    pub fn new(table: &str, ids: &[i64]) -> Self {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for id in sorted {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == id => *end = id,
                _ => ranges.push((id, id)),
            }
        }
        Checkpoint {
            table: table.to_owned(),
            ids: ranges,
        }
    }

    /// Every row id, ascending.
    pub fn row_ids(&self) -> Vec<i64> {
        self.ids
            .iter()
            .flat_map(|&(start, end)| start..=end)
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint is plain data")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The partition of the checkpoint topic a table's records go to: FNV-1a of
/// its `transactional.id` with a final mix (ids differ in their last
/// characters), so it never changes with the client or version.
pub fn partition_of(transactional_id: &str, partitions: i32) -> i32 {
    let mut hash = transactional_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash % partitions.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_ranges() {
        let checkpoint = Checkpoint::new("public.outbox", &[7, 3, 4, 5, 9, 10, 5]);
        assert_eq!(checkpoint.ids, vec![(3, 5), (7, 7), (9, 10)]);
        let decoded = Checkpoint::decode(&checkpoint.encode()).unwrap();
        assert_eq!(decoded.row_ids(), vec![3, 4, 5, 7, 9, 10]);
        assert_eq!(decoded.table, "public.outbox");
    }

    #[test]
    fn a_batch_of_consecutive_ids_is_one_range() {
        let ids: Vec<i64> = (1_000..2_000).collect();
        let checkpoint = Checkpoint::new("t", &ids);
        assert_eq!(checkpoint.ids, vec![(1_000, 1_999)]);
        assert!(checkpoint.encode().len() < 64);
    }

    #[test]
    fn the_partition_depends_on_the_id_alone() {
        let a = partition_of("outbox-relay/1/db/public.a", 50);
        assert_eq!(a, partition_of("outbox-relay/1/db/public.a", 50));
        assert!((0..50).contains(&a));
        let spread: std::collections::HashSet<i32> = (0..200)
            .map(|i| partition_of(&format!("outbox-relay/1/db/public.t{i}"), 50))
            .collect();
        assert!(spread.len() > 40, "{spread:?}");
        assert_eq!(partition_of("x", 0), 0);
    }

    #[test]
    fn garbage_is_not_a_checkpoint() {
        assert_eq!(Checkpoint::decode(b"not json"), None);
    }
}
