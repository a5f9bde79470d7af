//! The ordered children of one parent: a sorted vector while small (most parents), a B-tree
//! once large (100k siblings stay O(log n) per insert).

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;

use crate::id::NodeId;
use crate::position::Position;
use crate::store::Child;

type Key = (Position, NodeId);

/// Above this many children a parent's index becomes a B-tree.
const MAX_SMALL: usize = 48;

pub(super) enum Kids {
    Small(Vec<Key>),
    Large(BTreeSet<Key>),
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
            Kids::Large(s) => s.len(),
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
                        v.insert(i, key);
                    } else {
                        let mut set: BTreeSet<Key> = v.drain(..).collect();
                        set.insert(key);
                        *self = Kids::Large(set);
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
            Kids::Large(s) => {
                s.remove(key);
            }
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
            Kids::Large(s) => {
                let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                s.range::<Key, _>((lower, Bound::Unbounded))
                    .take(limit)
                    .map(child)
                    .collect()
            }
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
            Kids::Large(s) => {
                let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
                s.range::<Key, _>((Bound::Unbounded, upper))
                    .next_back()
                    .map(child)
            }
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        match self {
            Kids::Small(v) => Box::new(v.iter()),
            Kids::Large(s) => Box::new(s.iter()),
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
        // Insert out of order, past the small limit.
        for i in (0..200u32).map(|i| (i * 37) % 200) {
            kids.insert(key(i));
            kids.insert(key(i));
        }
        assert!(matches!(kids, Kids::Large(_)));
        assert_eq!(kids.len(), 200);
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
        assert_eq!(small.before(None).unwrap().position, key(39).0);
        small.remove(&key(39));
        assert_eq!(small.before(None).unwrap().position, key(38).0);
    }
}
