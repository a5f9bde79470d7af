//! Reads beyond the [`Store`](crate::Store) trait, for sync and for the SQL extension: all are
//! indexed queries or keyset pages; none loads the tree into memory.

use rusqlite::params;

use super::{seq_param, Result, SqliteStore};
use crate::id::{NodeId, OpId};
use crate::op::{Op, VersionVector};
use crate::position::Position;
use crate::store::{Child, Store};

/// One node of a subtree walk, in pre-order (parents before children, siblings in order).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SubtreeEntry {
    /// The node.
    pub node: NodeId,
    /// Its parent.
    pub parent: NodeId,
    /// Its position under the parent.
    pub position: Position,
    /// Distance from the walk's root (its children have depth 1).
    pub depth: u32,
}

/// One ancestor of a node, nearest first.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ancestor {
    /// The ancestor (ends with ROOT or TRASH).
    pub node: NodeId,
    /// Distance from the node (its parent has depth 1).
    pub depth: u32,
}

/// Children fetched per query during a subtree walk.
const WALK_PAGE: usize = 64;

impl SqliteStore {
    /// The ancestors of `node`, nearest first, ending with ROOT or TRASH. Empty if `node` does not
    /// exist (or is ROOT/TRASH). One indexed lookup per level; memory O(depth).
    pub fn ancestors(&self, node: NodeId) -> Result<Vec<Ancestor>> {
        let mut out = Vec::new();
        let mut at = node;
        let mut depth = 0u32;
        let bound = self.node_count()? + 1;
        while let Some(p) = self.placement(at)? {
            depth += 1;
            out.push(Ancestor {
                node: p.parent,
                depth,
            });
            // the engine keeps the tree acyclic; a cycle here means the file was edited by hand
            if p.parent == node || u64::from(depth) > bound {
                break;
            }
            at = p.parent;
        }
        Ok(out)
    }

    /// Walks the subtree under `root` (not including `root`) in pre-order, calling `visit` for each
    /// node until it returns `false`. Children are read in keyset pages of 64, so memory is
    /// O(depth × 64) whatever the subtree's size. Returns the number of nodes visited.
    pub fn walk_subtree(
        &self,
        root: NodeId,
        mut visit: impl FnMut(&SubtreeEntry) -> bool,
    ) -> Result<u64> {
        let mut walk = SubtreeWalk::new(root);
        let mut seen = 0u64;
        while let Some(e) = walk.next(self)? {
            seen += 1;
            if !visit(&e) {
                break;
            }
        }
        Ok(seen)
    }

    /// Up to `limit` logged ops that `seen` does not cover, ordered by (replica key, seq): a keyset
    /// page for sync. Call again with `seen` advanced past the returned ops for the next page.
    pub fn ops_since(&self, seen: &VersionVector, limit: usize) -> Result<Vec<Op>> {
        let mut reps: Vec<(Vec<u8>, i64, i64)> = Vec::new();
        {
            let mut st = self.conn.prepare_cached(
                "SELECT key, idx, (SELECT max(seq) FROM ops WHERE replica = idx) AS f FROM replicas
                 WHERE f IS NOT NULL ORDER BY key",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                reps.push((r.get(0)?, r.get(1)?, r.get(2)?));
            }
        }
        let mut out = Vec::new();
        for (key, idx, frontier) in reps {
            if out.len() >= limit {
                break;
            }
            let key = crate::id::ReplicaId::from_bytes(super::fixed(&key, "replicas", "key")?);
            let from = seq_param(seen.get(&key))?;
            if frontier <= from {
                continue;
            }
            let mut st = self.conn.prepare_cached(
                "SELECT seq, op FROM ops WHERE replica = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = st.query(params![idx, from, (limit - out.len()) as i64])?;
            while let Some(r) = rows.next()? {
                let id = self.op_id(idx, r.get(0)?)?;
                out.push(super::decode_op(id, r.get_ref(1)?.as_blob()?)?);
            }
        }
        Ok(out)
    }

    /// All logged ops that act on `root` or on a node now in its subtree, in log order.
    /// Streams the subtree walk; memory is O(result).
    pub fn ops_of_subtree(&self, root: NodeId) -> Result<Vec<Op>> {
        let mut ops = Vec::new();
        let mut err = None;
        let collect = |node: NodeId, ops: &mut Vec<Op>| -> Result<()> {
            let mut st = self
                .conn
                .prepare_cached("SELECT replica, seq, op FROM ops WHERE node = ?1")?;
            let mut rows = st.query([node.as_bytes()])?;
            while let Some(r) = rows.next()? {
                let id: OpId = self.op_id(r.get(0)?, r.get(1)?)?;
                ops.push(super::decode_op(id, r.get_ref(2)?.as_blob()?)?);
            }
            Ok(())
        };
        if !root.is_reserved() {
            collect(root, &mut ops)?;
        }
        self.walk_subtree(root, |e| match collect(e.node, &mut ops) {
            Ok(()) => true,
            Err(e) => {
                err = Some(e);
                false
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        ops.sort_by_key(|o| o.key());
        Ok(ops)
    }
}

/// A resumable pre-order walk of a subtree: holds one page of children per level (at most 64), so
/// memory is O(depth × 64). Each [`SubtreeWalk::next`] reads the store as it is now.
#[derive(Debug)]
pub struct SubtreeWalk {
    stack: Vec<Level>,
    started: bool,
    root: NodeId,
}

#[derive(Debug)]
struct Level {
    parent: NodeId,
    page: std::vec::IntoIter<Child>,
    last: Option<(Position, NodeId)>,
    more: bool,
}

impl Level {
    fn read(
        store: &SqliteStore,
        parent: NodeId,
        after: Option<(Position, NodeId)>,
    ) -> Result<Self> {
        let page = store.children(parent, after.as_ref().map(|(p, n)| (p, *n)), WALK_PAGE)?;
        Ok(Level {
            parent,
            more: page.len() == WALK_PAGE,
            last: page.last().map(|c| (c.position.clone(), c.node)),
            page: page.into_iter(),
        })
    }
}

impl SubtreeWalk {
    /// A walk of the subtree under `root` (`root` itself is not visited).
    pub fn new(root: NodeId) -> Self {
        Self {
            stack: Vec::new(),
            started: false,
            root,
        }
    }

    /// The next node in pre-order, or `None` when the walk is done.
    pub fn next(&mut self, store: &SqliteStore) -> Result<Option<SubtreeEntry>> {
        if !self.started {
            self.started = true;
            self.stack.push(Level::read(store, self.root, None)?);
        }
        while let Some(level) = self.stack.last_mut() {
            let Some(child) = level.page.next() else {
                if level.more {
                    let (parent, last) = (level.parent, level.last.take());
                    *level = Level::read(store, parent, last)?;
                } else {
                    self.stack.pop();
                }
                continue;
            };
            let entry = SubtreeEntry {
                node: child.node,
                parent: level.parent,
                position: child.position,
                depth: self.stack.len() as u32,
            };
            self.stack.push(Level::read(store, entry.node, None)?);
            return Ok(Some(entry));
        }
        Ok(None)
    }
}
