//! A partial replica: a materialized projection of subtree(X) plus the path from X up to ROOT.
//!
//! It does not replay ops: a subset of a Kleppmann log replayed alone can give a different tree
//! (cycle checks and defensive deletes look outside the scope). Instead the full replica sends the
//! *result* for the scope — each node's parent, position, placing op and payload — and this type
//! holds it, keyed so that deltas ([`crate::Message::Gone`], [`crate::Message::Nodes`]) apply in
//! O(change). It also makes local ops (create, move, delete, payload) that a full replica accepts:
//! its own replica id and gap-free seqs, Lamport timestamps above everything it has seen, and a
//! delete's `seen` vector equal to the last synced frontier. See `spec/sync.md` ("Partial replica").

use std::collections::BTreeSet;

use canopy_tree::{
    Lamport, NodeId, Op, OpId, OpKind, Place, Position, PositionError, ReplicaId, VersionVector,
    MAX_PAYLOAD_LEN,
};
use rustc_hash::FxHashMap;

mod snapshot;

use crate::wire::{gone_digest, NodeRecord, PathEntry, PayloadState, WireError};

/// Why a local op on a partial replica could not be made. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartialError {
    /// The node is not held (outside the scope, or unknown).
    #[error("{node:?} is not in the replica's scope")]
    NotInScope { node: NodeId },
    /// A create with an id that is already held.
    #[error("{node:?} already exists")]
    NodeExists { node: NodeId },
    /// The move would put the node inside its own subtree.
    #[error("moving {node:?} under {parent:?} would make a cycle")]
    Cycle { node: NodeId, parent: NodeId },
    /// The sibling named by `Place::After`/`Place::Before` is not a child of the parent.
    #[error("{sibling:?} is not a child of {parent:?}")]
    SiblingNotUnder { sibling: NodeId, parent: NodeId },
    /// No position could be generated there.
    #[error("position: {0}")]
    Position(#[from] PositionError),
    /// A payload over the op codec's limit.
    #[error("payload of {len} bytes exceeds the limit")]
    PayloadTooLarge { len: usize },
    /// This replica's sequence numbers or Lamport timestamps are exhausted.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
}

/// A broken invariant of a [`PartialReplica`] (see [`PartialReplica::check_invariants`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartialViolation {
    /// A held node's parent is neither the scope root nor held.
    #[error("{node:?} has no held parent")]
    Orphan { node: NodeId },
    /// The children index disagrees with the placements.
    #[error("children index disagrees at {node:?}")]
    ChildIndex { node: NodeId },
    /// A held node does not reach the scope root.
    #[error("{node:?} does not reach the scope root")]
    Unreachable { node: NodeId },
}

/// Why a persisted partial replica snapshot does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a snapshot.
    #[error("snapshot: {0}")]
    Wire(#[from] WireError),
    /// The snapshot decodes but is inconsistent.
    #[error("snapshot: {0}")]
    Invalid(#[from] PartialViolation),
    /// The magic or version is wrong.
    #[error("not a partial replica snapshot")]
    Magic,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    parent: NodeId,
    position: Position,
    placed_by: OpId,
    payload: PayloadState,
}

/// The state of a partial replica of subtree(`scope`). See the module docs.
#[derive(Clone, Debug)]
pub struct PartialReplica {
    scope: NodeId,
    replica: ReplicaId,
    since: VersionVector,
    lamport: u64,
    last_seq: u64,
    path: Vec<PathEntry>,
    nodes: FxHashMap<NodeId, Held>,
    children: FxHashMap<NodeId, BTreeSet<(Position, NodeId)>>,
    by_digest: FxHashMap<[u8; 16], NodeId>,
    /// Every op this replica made (it may be their only holder), in seq order.
    own: Vec<Op>,
    /// Own ops were left unapplied by the last responder: the next sync asks for a snapshot.
    tainted: bool,
}

impl PartialReplica {
    /// An empty partial replica of the subtree under `scope`, making its own ops as `replica`
    /// (a replica id no other replica uses). Its first sync is cold.
    pub fn new(scope: NodeId, replica: ReplicaId) -> Self {
        Self {
            scope,
            replica,
            since: VersionVector::new(),
            lamport: 0,
            last_seq: 0,
            path: Vec::new(),
            nodes: FxHashMap::default(),
            children: FxHashMap::default(),
            by_digest: FxHashMap::default(),
            own: Vec::new(),
            tainted: false,
        }
    }

    /// The scope root.
    pub fn scope(&self) -> NodeId {
        self.scope
    }
    /// The replica id of this replica's own ops.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }
    /// The full replica's frontier at the last completed sync (empty before the first).
    pub fn since(&self) -> &VersionVector {
        &self.since
    }
    /// The path from the scope root up to ROOT or TRASH (scope root first).
    pub fn path(&self) -> &[PathEntry] {
        &self.path
    }
    /// Number of held nodes (the scope root not counted).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True if no node under the scope root is held.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// True if `node` is held (in the scope, not the root).
    pub fn contains(&self, node: NodeId) -> bool {
        self.nodes.contains_key(&node)
    }
    /// The parent of a held node.
    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        self.nodes.get(&node).map(|h| h.parent)
    }
    /// The payload of a held node.
    pub fn payload(&self, node: NodeId) -> Option<&PayloadState> {
        self.nodes.get(&node).map(|h| &h.payload)
    }
    /// Children of `parent` (the scope root or a held node) in sibling order.
    pub fn children(&self, parent: NodeId) -> Vec<NodeId> {
        self.children
            .get(&parent)
            .map(|s| s.iter().map(|(_, n)| *n).collect())
            .unwrap_or_default()
    }
    /// Every held node as a record, sorted by node id (for comparisons and persistence).
    pub fn records(&self) -> Vec<NodeRecord> {
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
        v
    }
    /// Local ops not covered by [`PartialReplica::since`] (the last responder does not have them
    /// yet): pushed at the next sync.
    pub fn unacked(&self) -> &[Op] {
        let acked = self.since.get(&self.replica);
        let i = self.own.partition_point(|op| op.id().seq() <= acked);
        &self.own[i..]
    }

    /// Every op this replica made. They are kept: after syncing with a full replica that lacks
    /// some of them (its checkpoint is lower), the next sync pushes them again.
    pub fn own_ops(&self) -> &[Op] {
        &self.own
    }

    // ---- applying a delta (the session calls these) ----

    /// Drops everything held and the checkpoint: the next items rebuild the scope from nothing,
    /// and if they are cut short the next sync starts cold again.
    pub(crate) fn start_cold(&mut self) {
        self.since = VersionVector::new();
        self.nodes.clear();
        self.children.clear();
        self.by_digest.clear();
        self.path.clear();
    }

    /// Adopts a new path. A held node that is now an ancestor of the scope root left the scope
    /// (the responder does not name it in Gone: the path carries it), so it goes, with what is
    /// held under it.
    pub(crate) fn set_path(&mut self, path: Vec<PathEntry>) {
        for e in &path {
            if self.nodes.contains_key(&e.node) {
                self.remove_subtree(e.node);
            }
        }
        self.path = path;
    }

    pub(crate) fn apply_gone(&mut self, digest: &[u8; 16]) {
        if let Some(node) = self.by_digest.get(digest).copied() {
            self.remove_subtree(node);
        }
    }

    pub(crate) fn apply_record(&mut self, r: NodeRecord) {
        if r.node.is_reserved() || r.node == self.scope {
            return;
        }
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
                position: r.position,
                placed_by: r.placed_by,
                payload: r.payload,
            },
        );
    }

    /// Adopts the responder's checkpoint, then re-applies the own ops it does not cover on top
    /// of the responder's state (optimistically, as when they were made).
    pub(crate) fn checkpoint(&mut self, frontier: VersionVector, max_lamport: u64) {
        self.last_seq = self.last_seq.max(frontier.get(&self.replica));
        self.lamport = self.lamport.max(max_lamport);
        self.since = frontier;
        let pending: Vec<Op> = self.unacked().to_vec();
        // own ops the responder could not apply yet (it lacks ops they depend on): shown on top of
        // its state, and the next sync asks for a full snapshot, since what is held is no longer
        // exactly the responder's state at `since`
        self.tainted = !pending.is_empty();
        if self.tainted {
            for op in &pending {
                self.apply_optimistic(op);
            }
            self.prune_unreachable();
        }
    }

    /// True if the next sync must ask for a full snapshot (see [`PartialReplica::checkpoint`]).
    pub(crate) fn needs_reset(&self) -> bool {
        self.tainted
    }

    /// Checks that each of `nodes` that is held hangs under the scope root through held nodes
    /// (O(nodes × depth)); the session calls it on a delta's records before adopting it.
    pub(crate) fn reaches_scope(&self, nodes: &[NodeId]) -> bool {
        nodes.iter().all(|n| {
            if !self.nodes.contains_key(n) {
                return true;
            }
            let mut up = *n;
            let mut steps = 0usize;
            while up != self.scope {
                match self.nodes.get(&up) {
                    Some(h) if steps <= self.nodes.len() => {
                        up = h.parent;
                        steps += 1;
                    }
                    _ => return false,
                }
            }
            true
        })
    }

    /// True if `parent` is the scope root or held (a reset stream sends parents first).
    pub(crate) fn holds_parent(&self, parent: NodeId) -> bool {
        self.is_parent_ok(parent)
    }

    /// True if some own op is not covered by `frontier`: its optimistic effect may have removed
    /// nodes that a delta computed before the op still places things under.
    pub(crate) fn has_unacked_beyond(&self, frontier: &VersionVector) -> bool {
        self.own
            .last()
            .is_some_and(|op| op.id().seq() > frontier.get(&self.replica))
    }

    /// After a delta that does not hang together (a faulty or malicious responder): drops what
    /// does not reach the scope root and asks for a full snapshot at the next sync.
    pub(crate) fn quarantine(&mut self) {
        self.prune_unreachable();
        self.tainted = true;
    }

    /// Drops held nodes that no longer hang under the scope root.
    fn prune_unreachable(&mut self) {
        let mut keep: rustc_hash::FxHashSet<NodeId> = rustc_hash::FxHashSet::default();
        let mut stack = vec![self.scope];
        while let Some(n) = stack.pop() {
            if let Some(kids) = self.children.get(&n) {
                for (_, c) in kids {
                    if keep.insert(*c) {
                        stack.push(*c);
                    }
                }
            }
        }
        let drop: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| !keep.contains(n))
            .collect();
        for n in drop {
            self.detach(n);
            self.nodes.remove(&n);
            self.by_digest.remove(&gone_digest(n));
            self.children.remove(&n);
        }
    }

    /// The local effect of an own op on the projection (skipped where it no longer applies).
    fn apply_optimistic(&mut self, op: &Op) {
        match op.kind() {
            OpKind::Create {
                node,
                parent,
                position,
                payload,
            } if self.is_parent_ok(*parent) && !self.is_under(*parent, *node) => {
                let payload = match payload {
                    Some(b) => PayloadState::Present {
                        bytes: b.clone(),
                        set_by: op.id(),
                    },
                    None => self
                        .nodes
                        .get(node)
                        .map_or(PayloadState::None, |h| h.payload.clone()),
                };
                self.apply_record(NodeRecord {
                    node: *node,
                    parent: *parent,
                    position: position.clone(),
                    placed_by: op.id(),
                    payload,
                });
            }
            OpKind::Move {
                node,
                parent,
                position,
            } => {
                if let Some(h) = self.nodes.get(node).cloned() {
                    if self.is_parent_ok(*parent) && !self.is_under(*parent, *node) {
                        self.apply_record(NodeRecord {
                            node: *node,
                            parent: *parent,
                            position: position.clone(),
                            placed_by: op.id(),
                            payload: h.payload,
                        });
                    }
                }
            }
            OpKind::Delete { node, .. } if self.nodes.contains_key(node) => {
                self.remove_subtree(*node);
            }
            OpKind::SetPayload { node, payload } => {
                if let Some(h) = self.nodes.get_mut(node) {
                    h.payload = PayloadState::Present {
                        bytes: payload.clone(),
                        set_by: op.id(),
                    };
                }
            }
            _ => {}
        }
    }

    /// True if `node` is `ancestor` or held below it.
    fn is_under(&self, node: NodeId, ancestor: NodeId) -> bool {
        let mut up = node;
        let mut steps = 0usize;
        loop {
            if up == ancestor {
                return true;
            }
            match self.nodes.get(&up) {
                Some(h) if steps <= self.nodes.len() => {
                    up = h.parent;
                    steps += 1;
                }
                _ => return false,
            }
        }
    }

    /// Drops a local op the full replica refused as invalid or equivocating (it will never be
    /// logged there).
    pub(crate) fn drop_refused(&mut self, id: OpId) {
        self.own.retain(|op| op.id() != id);
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

    fn remove_subtree(&mut self, node: NodeId) {
        self.detach(node);
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if self.nodes.remove(&n).is_some() {
                self.by_digest.remove(&gone_digest(n));
            }
            if let Some(kids) = self.children.remove(&n) {
                stack.extend(kids.into_iter().map(|(_, c)| c));
            }
        }
    }

    // ---- local ops ----

    fn next_id(&mut self) -> Result<(OpId, Lamport), PartialError> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(PartialError::SeqExhausted)?;
        let lamport = self
            .lamport
            .checked_add(1)
            .ok_or(PartialError::SeqExhausted)?;
        if seq >= 1 << 63 || lamport >= 1 << 63 {
            return Err(PartialError::SeqExhausted);
        }
        Ok((OpId::new(self.replica, seq), Lamport::new(lamport)))
    }

    fn commit_local(&mut self, op: Op) -> Op {
        self.last_seq = op.id().seq();
        self.lamport = op.lamport().get();
        self.own.push(op.clone());
        op
    }

    fn is_parent_ok(&self, parent: NodeId) -> bool {
        parent == self.scope || self.nodes.contains_key(&parent)
    }

    fn position_for(
        &self,
        parent: NodeId,
        place: Place,
        moving: Option<NodeId>,
    ) -> Result<Position, PartialError> {
        let empty = BTreeSet::new();
        let kids = self.children.get(&parent).unwrap_or(&empty);
        let others = || kids.iter().filter(|(_, n)| Some(*n) != moving);
        let sibling = |s: NodeId| -> Result<&(Position, NodeId), PartialError> {
            others()
                .find(|(_, n)| *n == s)
                .ok_or(PartialError::SiblingNotUnder { sibling: s, parent })
        };
        let r = &self.replica;
        Ok(match place {
            Place::First => match others().next() {
                Some((p, _)) => Position::before(p, r)?,
                None => Position::first(r),
            },
            Place::Last => match others().next_back() {
                Some((p, _)) => Position::after(p, r)?,
                None => Position::first(r),
            },
            Place::After(s) => {
                let at = sibling(s)?;
                match others().find(|e| *e > at) {
                    Some((hi, _)) if *hi != at.0 => Position::between(&at.0, hi, r)?,
                    _ => Position::after(&at.0, r)?,
                }
            }
            Place::Before(s) => {
                let at = sibling(s)?;
                match others().rfind(|e| *e < at) {
                    Some((lo, _)) if *lo != at.0 => Position::between(lo, &at.0, r)?,
                    _ => Position::before(&at.0, r)?,
                }
            }
        })
    }

    /// Creates `node` under `parent` (the scope root or a held node) and returns the op to push.
    pub fn create(
        &mut self,
        node: NodeId,
        parent: NodeId,
        place: Place,
        payload: Option<Vec<u8>>,
    ) -> Result<Op, PartialError> {
        if node.is_reserved() || node == self.scope || self.nodes.contains_key(&node) {
            return Err(PartialError::NodeExists { node });
        }
        if !self.is_parent_ok(parent) {
            return Err(PartialError::NotInScope { node: parent });
        }
        if let Some(p) = &payload {
            if p.len() > MAX_PAYLOAD_LEN {
                return Err(PartialError::PayloadTooLarge { len: p.len() });
            }
        }
        let position = self.position_for(parent, place, None)?;
        let (id, lamport) = self.next_id()?;
        self.apply_record(NodeRecord {
            node,
            parent,
            position: position.clone(),
            placed_by: id,
            payload: match &payload {
                Some(b) => PayloadState::Present {
                    bytes: b.clone(),
                    set_by: id,
                },
                None => PayloadState::None,
            },
        });
        let op = Op::new(
            id,
            lamport,
            OpKind::Create {
                node,
                parent,
                position,
                payload,
            },
        );
        Ok(self.commit_local(op))
    }

    /// Moves a held node under `parent` (the scope root or a held node outside its subtree).
    pub fn move_node(
        &mut self,
        node: NodeId,
        parent: NodeId,
        place: Place,
    ) -> Result<Op, PartialError> {
        let Some(held) = self.nodes.get(&node).cloned() else {
            return Err(PartialError::NotInScope { node });
        };
        if !self.is_parent_ok(parent) {
            return Err(PartialError::NotInScope { node: parent });
        }
        if self.is_under(parent, node) {
            return Err(PartialError::Cycle { node, parent });
        }
        let position = self.position_for(parent, place, Some(node))?;
        let (id, lamport) = self.next_id()?;
        self.apply_record(NodeRecord {
            node,
            parent,
            position: position.clone(),
            placed_by: id,
            payload: held.payload,
        });
        let op = Op::new(
            id,
            lamport,
            OpKind::Move {
                node,
                parent,
                position,
            },
        );
        Ok(self.commit_local(op))
    }

    /// Deletes a held node (it leaves the scope with its subtree). The delete's `seen` vector is
    /// the last synced frontier plus this replica's own earlier ops.
    pub fn delete(&mut self, node: NodeId) -> Result<Op, PartialError> {
        if !self.nodes.contains_key(&node) {
            return Err(PartialError::NotInScope { node });
        }
        let (id, lamport) = self.next_id()?;
        let mut seen = self.since.clone();
        seen.set(self.replica, id.seq() - 1);
        self.remove_subtree(node);
        let op = Op::new(id, lamport, OpKind::Delete { node, seen });
        Ok(self.commit_local(op))
    }

    /// Replaces the payload of a held node.
    pub fn set_payload(&mut self, node: NodeId, payload: Vec<u8>) -> Result<Op, PartialError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(PartialError::PayloadTooLarge { len: payload.len() });
        }
        if !self.nodes.contains_key(&node) {
            return Err(PartialError::NotInScope { node });
        }
        let (id, lamport) = self.next_id()?;
        if let Some(h) = self.nodes.get_mut(&node) {
            h.payload = PayloadState::Present {
                bytes: payload.clone(),
                set_by: id,
            };
        }
        let op = Op::new(id, lamport, OpKind::SetPayload { node, payload });
        Ok(self.commit_local(op))
    }

    /// Checks that every held node hangs under the scope root through held nodes and that the
    /// children index matches the placements.
    pub fn check_invariants(&self) -> Result<(), PartialViolation> {
        let mut indexed = 0usize;
        for (parent, kids) in &self.children {
            for (pos, n) in kids {
                let h = self
                    .nodes
                    .get(n)
                    .ok_or(PartialViolation::ChildIndex { node: *n })?;
                if h.parent != *parent || h.position != *pos {
                    return Err(PartialViolation::ChildIndex { node: *n });
                }
                indexed += 1;
            }
        }
        if indexed != self.nodes.len() {
            return Err(PartialViolation::ChildIndex { node: self.scope });
        }
        for (n, h) in &self.nodes {
            if !self.is_parent_ok(h.parent) {
                return Err(PartialViolation::Orphan { node: *n });
            }
            let mut up = h.parent;
            let mut steps = 0usize;
            while up != self.scope {
                steps += 1;
                if steps > self.nodes.len() {
                    return Err(PartialViolation::Unreachable { node: *n });
                }
                up = self.nodes[&up].parent;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }

    #[test]
    fn local_ops_number_place_and_check() {
        let x = n(1);
        let mut p = PartialReplica::new(x, ReplicaId::from_bytes([9; 32]));
        let a = p.create(n(2), x, Place::Last, None).unwrap();
        let b = p
            .create(n(3), x, Place::First, Some(b"b".to_vec()))
            .unwrap();
        let c = p.create(n(4), x, Place::After(n(3)), None).unwrap();
        p.create(n(5), x, Place::Before(n(3)), None).unwrap();
        assert_eq!(p.children(x), vec![n(5), n(3), n(4), n(2)]);
        assert_eq!((a.id().seq(), b.id().seq(), c.id().seq()), (1, 2, 3));
        assert!(a.lamport() < b.lamport() && b.lamport() < c.lamport());
        assert_eq!(
            p.create(n(2), x, Place::Last, None),
            Err(PartialError::NodeExists { node: n(2) })
        );
        assert_eq!(
            p.create(n(6), n(77), Place::Last, None),
            Err(PartialError::NotInScope { node: n(77) })
        );
        assert_eq!(
            p.create(n(6), x, Place::After(n(77)), None),
            Err(PartialError::SiblingNotUnder {
                sibling: n(77),
                parent: x
            })
        );
        p.move_node(n(3), n(2), Place::Last).unwrap();
        assert_eq!(
            p.move_node(n(2), n(3), Place::Last),
            Err(PartialError::Cycle {
                node: n(2),
                parent: n(3)
            })
        );
        assert_eq!(
            p.set_payload(n(3), vec![0; MAX_PAYLOAD_LEN + 1]),
            Err(PartialError::PayloadTooLarge {
                len: MAX_PAYLOAD_LEN + 1
            })
        );
        let d = p.delete(n(2)).unwrap();
        assert!(!p.contains(n(2)) && !p.contains(n(3)));
        match d.kind() {
            OpKind::Delete { seen, .. } => assert_eq!(seen.get(&p.replica()), 5),
            k => panic!("{k:?}"),
        }
        assert_eq!(p.unacked().len(), 6);
        p.check_invariants().unwrap();
    }

    #[test]
    fn snapshot_round_trips_and_rejects_garbage() {
        let x = n(1);
        let mut p = PartialReplica::new(x, ReplicaId::from_bytes([9; 32]));
        p.create(n(2), x, Place::Last, Some(b"hello".to_vec()))
            .unwrap();
        let bytes = p.encode();
        let back = PartialReplica::decode(&bytes).unwrap();
        assert_eq!(back.records(), p.records());
        assert_eq!(back.unacked(), p.unacked());
        assert!(matches!(
            PartialReplica::decode(b"not a snapshot"),
            Err(SnapshotError::Magic)
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PartialReplica::decode(&longer).is_err());
        for cut in 0..bytes.len() {
            assert!(PartialReplica::decode(&bytes[..cut]).is_err());
        }
    }
}
