//! The log's key order: a sorted vector for keys that arrive in increasing order (the common
//! case: local ops and in-order sync, O(1) each) and a B-tree for the ones that arrive late.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::id::LogKey;

#[derive(Debug, Default)]
pub(super) struct LogOrder {
    tail: Vec<(LogKey, u32)>,
    late: BTreeMap<LogKey, u32>,
}

impl LogOrder {
    pub(super) fn insert(&mut self, key: LogKey, index: u32) {
        if self.tail.last().is_none_or(|(last, _)| key > *last) {
            self.tail.push((key, index));
        } else {
            self.late.insert(key, index);
        }
    }

    /// Removes `key` (rollback removes the most recent insert, so it is the tail's last or late).
    pub(super) fn remove(&mut self, key: &LogKey) {
        if self.tail.last().is_some_and(|(last, _)| last == key) {
            self.tail.pop();
        } else if self.late.remove(key).is_none() {
            if let Ok(i) = self.tail.binary_search_by(|(k, _)| k.cmp(key)) {
                self.tail.remove(i);
            }
        }
    }

    pub(super) fn last(&self) -> Option<LogKey> {
        let a = self.tail.last().map(|(k, _)| *k);
        let b = self.late.keys().next_back().copied();
        a.max(b)
    }

    /// Entry indexes with key strictly greater than `key`, in key order.
    pub(super) fn after(&self, key: Option<LogKey>) -> Vec<u32> {
        let start = key.map_or(0, |key| self.tail.partition_point(|(k, _)| *k <= key));
        let mut tail = self.tail[start..].iter().peekable();
        let lower = key.map_or(Bound::Unbounded, Bound::Excluded);
        let mut late = self.late.range((lower, Bound::Unbounded)).peekable();
        let mut out = Vec::with_capacity(self.tail.len() - start);
        loop {
            let take_tail = match (tail.peek(), late.peek()) {
                (Some((a, _)), Some((b, _))) => a < *b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_tail {
                if let Some((_, i)) = tail.next() {
                    out.push(*i);
                }
            } else if let Some((_, i)) = late.next() {
                out.push(*i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Lamport, ReplicaId};

    #[test]
    fn merges_in_key_order() {
        let k = |l: u64| LogKey::new(Lamport::new(l), ReplicaId::from_bytes([1; 32]));
        let mut o = LogOrder::default();
        for l in [1, 2, 5, 3, 9, 4, 10, 6] {
            o.insert(k(l), l as u32);
        }
        assert_eq!(o.after(None), vec![1, 2, 3, 4, 5, 6, 9, 10]);
        assert_eq!(o.after(Some(k(3))), vec![4, 5, 6, 9, 10]);
        assert_eq!(o.last(), Some(k(10)));
        o.remove(&k(6));
        o.remove(&k(10));
        assert_eq!(o.last(), Some(k(9)));
        assert_eq!(o.after(Some(k(4))), vec![5, 9]);
    }
}
