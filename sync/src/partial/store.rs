//! Where a [`PartialReplica`](super::PartialReplica) keeps its state: the [`PartialStore`] trait,
//! and [`MemoryPartial`], the in-memory store (the reference model the SQLite store,
//! [`SqlitePartial`](crate::SqlitePartial), is property-tested against).
//!
//! The replica's logic (deltas, local ops, pruning, invariants) is written once against the trait;
//! a store only keeps records and answers indexed look-ups, so each delta item costs O(change)
//! store calls. A store groups writes in the replica's batches (`begin`/`commit`, or `rollback`
//! after a store error): one per applied delta (warm deltas with their checkpoint), one per
//! message of a reset stream, one per local op.

use std::collections::BTreeSet;
use std::convert::Infallible;

use canopy_tree::{NodeId, Op, OpId, Position, ReplicaId, VersionVector};
use rustc_hash::FxHashMap;

use crate::wire::{gone_digest, NodeRecord, PathEntry};

/// What a partial replica keeps besides its nodes: its scope and identity, the checkpoint of the
/// last completed sync, its counters and the path from the scope root up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialMeta {
    /// The scope root.
    pub scope: NodeId,
    /// The replica id of its own ops.
    pub replica: ReplicaId,
    /// The responder's frontier at the last completed sync (empty: the next sync is cold).
    pub since: VersionVector,
    /// The highest Lamport time seen (the checkpoint's, or an own op's).
    pub max_lamport: u64,
    /// The highest seq of its own ops.
    pub last_seq: u64,
    /// The next sync asks for a full snapshot (own ops shown on top of the responder's state, or
    /// a delta that did not hang together).
    pub tainted: bool,
    /// The path from the scope root up to ROOT or TRASH (scope root first).
    pub path: Vec<PathEntry>,
}

impl PartialMeta {
    /// The state of a new, empty replica.
    pub fn new(scope: NodeId, replica: ReplicaId) -> Self {
        Self {
            scope,
            replica,
            since: VersionVector::new(),
            max_lamport: 0,
            last_seq: 0,
            tainted: false,
            path: Vec::new(),
        }
    }
}

/// Storage of a [`PartialReplica`](super::PartialReplica): node records with a sibling index and
/// a gone-digest index, the [`PartialMeta`] record, and the replica's own ops.
///
/// Writes happen between [`PartialStore::begin`] and [`PartialStore::commit`] (the replica never
/// nests them); after an error the replica calls [`PartialStore::rollback`], which must leave the
/// store as it was at `begin`.
pub trait PartialStore {
    /// The store's error.
    type Error: std::error::Error + 'static;

    /// The stored meta record, `None` for a store that holds no replica yet.
    fn meta(&self) -> Result<Option<PartialMeta>, Self::Error>;
    /// Replaces the meta record.
    fn set_meta(&mut self, meta: &PartialMeta) -> Result<(), Self::Error>;

    /// A held node's record.
    fn node(&self, node: NodeId) -> Result<Option<NodeRecord>, Self::Error>;
    /// A held node's parent (without reading its payload).
    fn parent(&self, node: NodeId) -> Result<Option<NodeId>, Self::Error>;
    /// Inserts or replaces the record of `record.node`.
    fn put(&mut self, record: &NodeRecord) -> Result<(), Self::Error>;
    /// Removes a node's record; true if it was held.
    fn remove(&mut self, node: NodeId) -> Result<bool, Self::Error>;
    /// Removes every node record (the meta record and own ops stay).
    fn clear(&mut self) -> Result<(), Self::Error>;
    /// The held node whose gone digest (`crate::gone_digest`) is `digest`.
    fn by_digest(&self, digest: &[u8; 16]) -> Result<Option<NodeId>, Self::Error>;
    /// Up to `limit` children of `parent` in sibling order, strictly after `after` (a keyset page).
    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>, Self::Error>;
    /// Up to `limit` children of `parent` in reverse sibling order, strictly before `before`.
    fn children_rev(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>, Self::Error>;
    /// Number of held nodes.
    fn count(&self) -> Result<u64, Self::Error>;
    /// Every held node id, sorted.
    fn node_ids(&self) -> Result<Vec<NodeId>, Self::Error>;
    /// Every held node's record, sorted by node id.
    fn records(&self) -> Result<Vec<NodeRecord>, Self::Error>;

    /// The replica's own ops, in seq order.
    fn own_ops(&self) -> Result<Vec<Op>, Self::Error>;
    /// Appends an own op (its seq is above every stored one).
    fn push_own(&mut self, op: &Op) -> Result<(), Self::Error>;
    /// Removes an own op.
    fn remove_own(&mut self, id: OpId) -> Result<(), Self::Error>;

    /// Starts a batch of writes.
    fn begin(&mut self) -> Result<(), Self::Error>;
    /// Makes the batch durable.
    fn commit(&mut self) -> Result<(), Self::Error>;
    /// Undoes the batch.
    fn rollback(&mut self) -> Result<(), Self::Error>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    parent: NodeId,
    position: Position,
    placed_by: OpId,
    payload: crate::wire::PayloadState,
}

/// The in-memory [`PartialStore`]: hash maps and a sorted sibling index. Infallible; `rollback`
/// is never needed (nothing fails between `begin` and `commit`).
#[derive(Clone, Debug, Default)]
pub struct MemoryPartial {
    meta: Option<PartialMeta>,
    nodes: FxHashMap<NodeId, Held>,
    children: FxHashMap<NodeId, BTreeSet<(Position, NodeId)>>,
    by_digest: FxHashMap<[u8; 16], NodeId>,
    own: Vec<Op>,
}

impl MemoryPartial {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn detach(&mut self, node: NodeId) {
        if let Some(h) = self.nodes.get(&node) {
            if let Some(set) = self.children.get_mut(&h.parent) {
                set.remove(&(h.position.clone(), node));
                if set.is_empty() {
                    self.children.remove(&h.parent);
                }
            }
        }
    }
}

impl PartialStore for MemoryPartial {
    type Error = Infallible;

    fn meta(&self) -> Result<Option<PartialMeta>, Infallible> {
        Ok(self.meta.clone())
    }
    fn set_meta(&mut self, meta: &PartialMeta) -> Result<(), Infallible> {
        self.meta = Some(meta.clone());
        Ok(())
    }
    fn node(&self, node: NodeId) -> Result<Option<NodeRecord>, Infallible> {
        Ok(self.nodes.get(&node).map(|h| NodeRecord {
            node,
            parent: h.parent,
            position: h.position.clone(),
            placed_by: h.placed_by,
            payload: h.payload.clone(),
        }))
    }
    fn parent(&self, node: NodeId) -> Result<Option<NodeId>, Infallible> {
        Ok(self.nodes.get(&node).map(|h| h.parent))
    }
    fn put(&mut self, r: &NodeRecord) -> Result<(), Infallible> {
        self.detach(r.node);
        self.children
            .entry(r.parent)
            .or_default()
            .insert((r.position.clone(), r.node));
        self.by_digest.insert(gone_digest(r.node), r.node);
        self.nodes.insert(
            r.node,
            Held {
                parent: r.parent,
                position: r.position.clone(),
                placed_by: r.placed_by,
                payload: r.payload.clone(),
            },
        );
        Ok(())
    }
    fn remove(&mut self, node: NodeId) -> Result<bool, Infallible> {
        self.detach(node);
        if self.nodes.remove(&node).is_some() {
            self.by_digest.remove(&gone_digest(node));
            Ok(true)
        } else {
            Ok(false)
        }
    }
    fn clear(&mut self) -> Result<(), Infallible> {
        self.nodes.clear();
        self.children.clear();
        self.by_digest.clear();
        Ok(())
    }
    fn by_digest(&self, digest: &[u8; 16]) -> Result<Option<NodeId>, Infallible> {
        Ok(self.by_digest.get(digest).copied())
    }
    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>, Infallible> {
        let Some(set) = self.children.get(&parent) else {
            return Ok(Vec::new());
        };
        Ok(match after {
            None => set.iter().take(limit).cloned().collect(),
            Some((p, n)) => {
                let key = (p.clone(), n);
                set.range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                    .take(limit)
                    .cloned()
                    .collect()
            }
        })
    }
    fn children_rev(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>, Infallible> {
        let Some(set) = self.children.get(&parent) else {
            return Ok(Vec::new());
        };
        Ok(match before {
            None => set.iter().rev().take(limit).cloned().collect(),
            Some((p, n)) => set
                .range(..(p.clone(), n))
                .rev()
                .take(limit)
                .cloned()
                .collect(),
        })
    }
    fn count(&self) -> Result<u64, Infallible> {
        Ok(self.nodes.len() as u64)
    }
    fn node_ids(&self) -> Result<Vec<NodeId>, Infallible> {
        let mut v: Vec<NodeId> = self.nodes.keys().copied().collect();
        v.sort();
        Ok(v)
    }
    fn records(&self) -> Result<Vec<NodeRecord>, Infallible> {
        let mut v: Vec<NodeRecord> = self
            .nodes
            .iter()
            .map(|(n, h)| NodeRecord {
                node: *n,
                parent: h.parent,
                position: h.position.clone(),
                placed_by: h.placed_by,
                payload: h.payload.clone(),
            })
            .collect();
        v.sort_by_key(|r| r.node);
        Ok(v)
    }
    fn own_ops(&self) -> Result<Vec<Op>, Infallible> {
        Ok(self.own.clone())
    }
    fn push_own(&mut self, op: &Op) -> Result<(), Infallible> {
        self.own.push(op.clone());
        Ok(())
    }
    fn remove_own(&mut self, id: OpId) -> Result<(), Infallible> {
        self.own.retain(|op| op.id() != id);
        Ok(())
    }
    fn begin(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn commit(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn rollback(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
