//! The ordered children of one parent: a sorted vector while small (most parents), sorted
//! blocks of at most [`BLOCK`] keys once large (100k siblings: two binary searches and a bounded
//! shift per insert).

use std::fmt;

use crate::id::NodeId;
use crate::position::Position;
use crate::store::Child;

type Key = (Position, NodeId);

/// Above this many children a parent's index becomes blocks.
const MAX_SMALL: usize = 48;
/// A block splits in two when it grows past this many keys.
const BLOCK: usize = 128;

pub(super) enum Kids {
    Small(Vec<Key>),
    Large(Blocks),
}

/// Sorted, non-empty blocks; every key of a block is below every key of the next.
#[derive(Default)]
pub(super) struct Blocks {
    blocks: Vec<Vec<Key>>,
    len: usize,
}

impl Blocks {
    /// The block that holds or would hold `key`, and the key's place in it.
    fn locate(&self, key: &Key) -> Option<(usize, Result<usize, usize>)> {
        let last = self.blocks.len().checked_sub(1)?;
        // Appends and prepends (Place::Last / Place::First) skip the searches.
        let tail = &self.blocks[last];
        if tail.last().is_some_and(|k| k < key) {
            return Some((last, Err(tail.len())));
        }
        if self.blocks[0].first().is_some_and(|k| key < k) {
            return Some((0, Err(0)));
        }
        let b = self
            .blocks
            .partition_point(|blk| blk.last().is_some_and(|k| k < key))
            .min(last);
        Some((b, self.blocks[b].binary_search(key)))
    }

    fn insert(&mut self, key: Key) {
        let Some((b, at)) = self.locate(&key) else {
            self.blocks.push(vec![key]);
            self.len = 1;
            return;
        };
        let Err(i) = at else { return };
        self.len += 1;
        let full = self.blocks[b].len() >= BLOCK;
        if full && b + 1 == self.blocks.len() && i == self.blocks[b].len() {
            // Appending past a full last block: start a new one (blocks stay full).
            let mut fresh = Vec::with_capacity(BLOCK);
            fresh.push(key);
            self.blocks.push(fresh);
        } else if full && b == 0 && i == 0 {
            let mut fresh = Vec::with_capacity(BLOCK);
            fresh.push(key);
            self.blocks.insert(0, fresh);
        } else {
            let block = &mut self.blocks[b];
            block.insert(i, key);
            if block.len() > BLOCK {
                let upper = block.split_off(BLOCK / 2);
                self.blocks.insert(b + 1, upper);
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some((b, Ok(i))) = self.locate(key) {
            self.blocks[b].remove(i);
            self.len -= 1;
            if self.blocks[b].is_empty() {
                self.blocks.remove(b);
            }
        }
    }

    fn iter_from(&self, b: usize, i: usize) -> impl Iterator<Item = &Key> {
        let first = self
            .blocks
            .get(b)
            .map_or(&[][..], |blk| &blk[i.min(blk.len())..]);
        first.iter().chain(self.blocks.iter().skip(b + 1).flatten())
    }

    fn page(&self, after: Option<&Key>, limit: usize) -> Vec<Child> {
        let (b, i) = match after.map(|k| self.locate(k)) {
            None => (0, 0),
            Some(None) => return Vec::new(),
            Some(Some((b, Ok(i)))) => (b, i + 1),
            Some(Some((b, Err(i)))) => (b, i),
        };
        self.iter_from(b, i).take(limit).map(child).collect()
    }

    fn before(&self, before: Option<&Key>) -> Option<Child> {
        let (b, i) = match before {
            None => {
                let last = self.blocks.last()?;
                return last.last().map(child);
            }
            Some(k) => match self.locate(k)? {
                (b, Ok(i) | Err(i)) => (b, i),
            },
        };
        match i.checked_sub(1) {
            Some(j) => self.blocks[b].get(j).map(child),
            None => b
                .checked_sub(1)
                .and_then(|p| self.blocks[p].last())
                .map(child),
        }
    }
}

impl Default for Kids {
    fn default() -> Self {
        Kids::Small(Vec::new())
    }
}

fn child((position, node): &Key) -> Child {
    Child {
        node: *node,
        position: position.clone(),
    }
}

impl Kids {
    pub(super) fn len(&self) -> usize {
        match self {
            Kids::Small(v) => v.len(),
            Kids::Large(s) => s.len,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn insert(&mut self, key: Key) {
        match self {
            Kids::Small(v) => {
                if let Err(i) = v.binary_search(&key) {
                    if v.len() < MAX_SMALL {
                        // Most parents have one or two children: grow from one slot.
                        if v.capacity() == 0 {
                            v.reserve_exact(1);
                        }
                        v.insert(i, key);
                    } else {
                        let mut blocks = Blocks {
                            len: v.len(),
                            blocks: vec![std::mem::take(v)],
                        };
                        blocks.insert(key);
                        *self = Kids::Large(blocks);
                    }
                }
            }
            Kids::Large(s) => {
                s.insert(key);
            }
        }
    }

    pub(super) fn remove(&mut self, key: &Key) {
        match self {
            Kids::Small(v) => {
                if let Ok(i) = v.binary_search(key) {
                    v.remove(i);
                }
            }
            Kids::Large(s) => s.remove(key),
        }
    }

    /// Up to `limit` children strictly after `after` (`None`: from the first).
    pub(super) fn page(&self, after: Option<&Key>, limit: usize) -> Vec<Child> {
        match self {
            Kids::Small(v) => {
                let start = match after {
                    None => 0,
                    Some(k) => match v.binary_search(k) {
                        Ok(i) => i + 1,
                        Err(i) => i,
                    },
                };
                v[start..].iter().take(limit).map(child).collect()
            }
            Kids::Large(s) => s.page(after, limit),
        }
    }

    /// The child immediately before `before` (`None`: the last).
    pub(super) fn before(&self, before: Option<&Key>) -> Option<Child> {
        match self {
            Kids::Small(v) => {
                let end = match before {
                    None => v.len(),
                    Some(k) => match v.binary_search(k) {
                        Ok(i) | Err(i) => i,
                    },
                };
                end.checked_sub(1).map(|i| child(&v[i]))
            }
            Kids::Large(s) => s.before(before),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        match self {
            Kids::Small(v) => Box::new(v.iter()),
            Kids::Large(s) => Box::new(s.iter_from(0, 0)),
        }
    }
}

impl fmt::Debug for Kids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_agree() {
        let key = |i: u32| {
            let b = i.to_be_bytes();
            (
                Position::from_bytes(&[b[2], b[3], 1]),
                NodeId::from_bytes([0; 16]),
            )
        };
        let mut kids = Kids::default();
        // Insert out of order, past the small limit and several block splits.
        for i in (0..1000u32).map(|i| (i * 37) % 1000) {
            kids.insert(key(i));
            kids.insert(key(i));
        }
        assert!(matches!(kids, Kids::Large(_)));
        assert_eq!(kids.len(), 1000);
        let all = kids.page(None, usize::MAX);
        assert!(all.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(kids.page(Some(&key(999)), 5), vec![]);
        assert_eq!(kids.before(None).unwrap().position, key(999).0);
        for i in 0..1000 {
            assert_eq!(kids.before(Some(&key(i + 1))).unwrap().position, key(i).0);
        }
        // Pure appends and pure prepends (the fast paths) keep the order too.
        let mut up = Kids::default();
        let mut down = Kids::default();
        for i in 0..1000 {
            up.insert(key(i));
            down.insert(key(999 - i));
        }
        for k in [&up, &down] {
            let all = k.page(None, usize::MAX);
            assert_eq!(all.len(), 1000);
            assert!(all.windows(2).all(|w| w[0].position < w[1].position));
            assert_eq!(k.page(Some(&key(499)), 1)[0].position, key(500).0);
        }
        let mut small = Kids::default();
        for i in 0..40 {
            small.insert(key(i));
        }
        for k in [&kids, &small] {
            let first = k.page(None, 3);
            assert_eq!(first[0].position, key(0).0);
            let next = k.page(Some(&key(2)), 2);
            assert_eq!(next[0].position, key(3).0);
            assert_eq!(k.before(Some(&key(3))).unwrap().position, key(2).0);
            assert!(k.before(Some(&key(0))).is_none());
        }
        for i in (0..1000).filter(|i| i % 3 != 0) {
            kids.remove(&key(i));
        }
        assert_eq!(kids.len(), 334);
        let left: Vec<_> = kids.page(None, usize::MAX);
        assert_eq!(left.len(), 334);
        assert_eq!(kids.page(Some(&key(1)), 1)[0].position, key(3).0);
        assert_eq!(small.before(None).unwrap().position, key(39).0);
        small.remove(&key(39));
        assert_eq!(small.before(None).unwrap().position, key(38).0);
    }
}
