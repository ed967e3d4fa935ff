//! Which offsets the writer may store: per partition, the received records and whether each is
//! done (applied, skipped, superseded by a coalesced newer one, or dead-lettered with the dead
//! letter acknowledged).
//!
//! Applications end in any order (customers run in parallel), but a committed offset says
//! "everything before this is done", so a partition's offset advances only to the first record
//! not done. A new assignment epoch of a partition starts its tracking afresh: what an earlier
//! assignment received is its next owner's.

use std::collections::{BTreeMap, HashMap};

/// Received offsets per partition of the current assignment.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// The assignment epoch these offsets were received in.
    epoch: u64,
    /// Received offsets not yet stored → done.
    offsets: BTreeMap<i64, bool>,
}

impl OffsetTracker {
    /// A record was received (in assignment `epoch` of `partition`).
    pub fn received(&mut self, partition: i32, epoch: u64, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        if p.epoch != epoch {
            *p = Partition {
                epoch,
                offsets: BTreeMap::new(),
            };
        }
        p.offsets.insert(offset, false);
    }

    /// Mark `(partition, epoch, offset)` records done; returns, per partition that advanced, the
    /// offset of the last record of the done prefix (librdkafka's `store_offset` stores it + 1).
    /// Records of an earlier epoch are ignored.
    pub fn done(&mut self, records: impl IntoIterator<Item = (i32, u64, i64)>) -> Vec<(i32, i64)> {
        let mut touched = Vec::new();
        for (partition, epoch, offset) in records {
            let Some(p) = self
                .partitions
                .get_mut(&partition)
                .filter(|p| p.epoch == epoch)
            else {
                continue;
            };
            if let Some(done) = p.offsets.get_mut(&offset) {
                *done = true;
                if !touched.contains(&partition) {
                    touched.push(partition);
                }
            }
        }
        let mut store = Vec::new();
        for partition in touched {
            let p = self
                .partitions
                .get_mut(&partition)
                .expect("touched partitions are tracked");
            let mut last = None;
            while let Some(entry) = p.offsets.first_entry() {
                if !*entry.get() {
                    break;
                }
                last = Some(*entry.key());
                entry.remove();
            }
            if let Some(offset) = last {
                store.push((partition, offset));
            }
        }
        store.sort_unstable();
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_advances_only_over_the_done_prefix() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.received(0, 1, o);
        }
        assert_eq!(t.done([(0, 1, 12), (0, 1, 13)]), vec![]);
        assert_eq!(t.done([(0, 1, 10)]), vec![(0, 10)]);
        assert_eq!(t.done([(0, 1, 11)]), vec![(0, 13)]);
        assert_eq!(t.done([(0, 1, 14)]), vec![(0, 14)]);
        assert_eq!(t.done([(0, 1, 14)]), vec![], "stored offsets are forgotten");
    }

    #[test]
    fn partitions_advance_independently() {
        let mut t = OffsetTracker::default();
        t.received(0, 1, 5);
        t.received(1, 1, 7);
        t.received(1, 1, 8);
        assert_eq!(t.done([(1, 1, 8), (0, 1, 5)]), vec![(0, 5)]);
        assert_eq!(t.done([(1, 1, 7)]), vec![(1, 8)]);
    }

    #[test]
    fn a_new_assignment_epoch_forgets_the_old_one() {
        let mut t = OffsetTracker::default();
        t.received(0, 1, 5);
        t.received(0, 1, 6);
        // Revoked and assigned again: the next owner had it meanwhile; 5 is received anew.
        t.received(0, 2, 5);
        assert_eq!(
            t.done([(0, 1, 5), (0, 1, 6)]),
            vec![],
            "old-epoch records are ignored"
        );
        assert_eq!(t.done([(0, 2, 5)]), vec![(0, 5)]);
        assert_eq!(t.done([(0, 2, 6)]), vec![], "6 was not received in epoch 2");
    }
}
