//! Contiguous per-partition commit watermark. Batches of one partition finish out of order (several
//! are in flight); the offset to commit is one past the longest run of finished offsets from the
//! last commit. A slow batch holds the watermark back; a later fast one never skips it.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: HashMap<i32, BTreeMap<i64, bool>>,
}

impl Watermarks {
    /// Records that `offset` of `partition` is now in flight.
    pub fn begin(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .insert(offset, false);
    }

    /// Records that `offset` is durable. Returns the next offset to commit when the watermark moved.
    pub fn complete(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        if let Some(done) = p.get_mut(&offset) {
            *done = true;
        }
        let mut next = None;
        while let Some((&o, &done)) = p.first_key_value() {
            if !done {
                break;
            }
            p.pop_first();
            next = Some(o + 1);
        }
        next
    }

    /// Forgets a partition revoked from this member: completions of its in-flight batches no longer
    /// move (or commit) anything; the new owner starts from the committed offset.
    pub fn forget(&mut self, partition: i32) -> usize {
        self.partitions
            .remove(&partition)
            .map(|p| p.values().filter(|d| !**d).count())
            .unwrap_or(0)
    }

    /// Batches in flight over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.values().filter(|d| !**d).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures a slow batch holds the watermark and a later fast one never skips it.
    #[test]
    fn slow_batch_holds_watermark() {
        let mut w = Watermarks::default();
        for o in 10..14 {
            w.begin(0, o);
        }
        assert_eq!(w.complete(0, 11), None);
        assert_eq!(w.complete(0, 12), None);
        assert_eq!(w.complete(0, 10), Some(13));
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.complete(0, 13), Some(14));
        assert_eq!(w.in_flight(), 0);
    }

    /// Ensures a forgotten (revoked) partition commits nothing for batches that finish later, and a
    /// later assignment of it starts a fresh watermark.
    #[test]
    fn forgotten_partition_commits_nothing() {
        let mut w = Watermarks::default();
        w.begin(3, 40);
        w.begin(3, 41);
        assert_eq!(w.forget(3), 2);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.complete(3, 40), None);
        w.begin(3, 41);
        assert_eq!(
            w.complete(3, 40),
            None,
            "a stale completion does not move it"
        );
        assert_eq!(w.complete(3, 41), Some(42));
    }

    /// Ensures partitions are independent.
    #[test]
    fn partitions_are_independent() {
        let mut w = Watermarks::default();
        w.begin(0, 5);
        w.begin(1, 7);
        assert_eq!(w.complete(1, 7), Some(8));
        assert_eq!(w.in_flight(), 1);
    }
}
