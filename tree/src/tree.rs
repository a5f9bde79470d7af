//! The engine: [`Tree`] owns a [`Store`] and a [`Policy`] and is the store's only writer.

use std::fmt;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::op::{Op, OpKind, Payload};
use crate::policy::{AllowAll, Policy};
use crate::position::Position;
use crate::report::{ApplyError, ApplyReport};
use crate::store::{Child, Effect, Placement, Store};

mod apply;
mod local;

pub use local::{LocalError, LocalOp, Place};

const PAGE: usize = 256;

/// A replicated tree: applies ops from any replica (undo/do/redo in total order), makes local
/// ops, and answers reads. See the crate docs for an example.
pub struct Tree<S: Store, P: Policy = AllowAll> {
    store: S,
    policy: P,
    replica: ReplicaId,
}

impl<S: Store, P: Policy + fmt::Debug> fmt::Debug for Tree<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("replica", &self.replica)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Tree<S, AllowAll> {
    /// A tree over `store` whose local ops are made by `replica`, with no access control.
    pub fn new(store: S, replica: ReplicaId) -> Self {
        Self::with_policy(store, replica, AllowAll)
    }
}

impl<S: Store, P: Policy> Tree<S, P> {
    /// A tree over `store` whose local ops are made by `replica`, deciding every op with `policy`.
    pub fn with_policy(store: S, replica: ReplicaId, policy: P) -> Self {
        Self {
            store,
            policy,
            replica,
        }
    }

    /// The replica that makes this tree's local ops.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// The store (read-only: the tree is its only writer).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Applies a batch of ops from any replicas in one transaction.
    ///
    /// Each op is validated, de-duplicated, parked until its causal predecessors are logged, or
    /// applied in total order by undo/do/redo (`spec/ops.md`). Invalid ops are rejected one by one
    /// in the report; the rest of the batch applies. On a store error the whole batch is rolled
    /// back and nothing changes.
    pub fn apply<I: IntoIterator<Item = Op>>(
        &mut self,
        ops: I,
    ) -> Result<ApplyReport<P::Reason>, ApplyError<S::Error>> {
        self.store.begin().map_err(ApplyError::Store)?;
        match apply::run(&mut self.store, &self.policy, ops) {
            Ok(report) => match self.store.commit() {
                Ok(()) => Ok(report),
                Err(e) => {
                    let _ = self.store.rollback();
                    Err(ApplyError::Store(e))
                }
            },
            Err(e) => {
                let _ = self.store.rollback();
                Err(ApplyError::Store(e))
            }
        }
    }

    // ---- reads ----

    /// The parent of `node` (`None`: ROOT, TRASH or unknown).
    pub fn parent(&self, node: NodeId) -> Result<Option<NodeId>, S::Error> {
        if node.is_reserved() {
            return Ok(None);
        }
        self.store.parent(node)
    }

    /// Where `node` is and which op put it there.
    pub fn placement(&self, node: NodeId) -> Result<Option<Placement>, S::Error> {
        if node.is_reserved() {
            return Ok(None);
        }
        self.store.placement(node)
    }

    /// Up to `limit` children of `parent` in sibling order, after `after` (a child from the
    /// previous page; `None` for the first page).
    pub fn children(
        &self,
        parent: NodeId,
        after: Option<&Child>,
        limit: usize,
    ) -> Result<Vec<Child>, S::Error> {
        self.store
            .children(parent, after.map(|c| (&c.position, c.node)), limit)
    }

    /// Number of children of `parent`.
    pub fn child_count(&self, parent: NodeId) -> Result<u64, S::Error> {
        self.store.child_count(parent)
    }

    /// The descendants of `node` in depth-first pre-order with their depth below `node`
    /// (children are depth 1), read page by page.
    pub fn subtree(&self, node: NodeId) -> Subtree<'_, S> {
        Subtree {
            store: &self.store,
            stack: vec![Frame::new(node, 0)],
        }
    }

    /// Ancestors of `node` from its parent up to ROOT or TRASH (or the last known one).
    pub fn ancestors(&self, node: NodeId) -> Result<Vec<NodeId>, S::Error> {
        let mut out = Vec::new();
        let mut n = node;
        while let Some(p) = self.parent(n)? {
            out.push(p);
            n = p;
        }
        Ok(out)
    }

    /// Number of nodes (live and in TRASH; ROOT and TRASH not counted).
    pub fn node_count(&self) -> Result<u64, S::Error> {
        self.store.node_count()
    }

    /// True if `node` is ROOT, TRASH or a placed node.
    pub fn exists(&self, node: NodeId) -> Result<bool, S::Error> {
        Ok(node.is_reserved() || self.store.parent(node)?.is_some())
    }

    /// True if TRASH is an ancestor of `node`.
    pub fn is_deleted(&self, node: NodeId) -> Result<bool, S::Error> {
        if self.store.child_count(NodeId::TRASH)? == 0 {
            return Ok(false);
        }
        let mut n = node;
        while let Some(p) = self.parent(n)? {
            if p == NodeId::TRASH {
                return Ok(true);
            }
            n = p;
        }
        Ok(false)
    }

    /// The payload of `node`.
    pub fn payload(&self, node: NodeId) -> Result<Option<Payload>, S::Error> {
        Ok(self.store.payload(node)?.map(|p| p.bytes))
    }

    /// Checks the store's consistency: one acyclic parent chain per node, children index equal
    /// to the placements, a gap-free log with increasing Lamport timestamps per replica, and
    /// placements and payloads written by logged, applied ops. Cost: O(log + nodes).
    pub fn check_invariants(&self) -> Result<(), InvariantError<S::Error>> {
        let s = &self.store;
        let min = LogKey::new(Lamport::new(0), ReplicaId::from_bytes([0; 32]));
        let entries = s.log_after(min)?;
        let violation = |v| Err(InvariantError::Violation(v));
        if entries.len() as u64 != s.log_len()? {
            return violation(Violation::LogLength);
        }
        let mut per_replica: FxHashMap<ReplicaId, Vec<(u64, Lamport)>> = FxHashMap::default();
        let mut effects: FxHashMap<OpId, (Effect, &Op)> = FxHashMap::default();
        let mut nodes: FxHashSet<NodeId> = FxHashSet::default();
        let mut prev: Option<LogKey> = None;
        for e in &entries {
            if prev.is_some_and(|p| p >= e.op.key()) {
                return violation(Violation::LogOrder { op: e.op.id() });
            }
            prev = Some(e.op.key());
            if e.effect != Effect::Applied && !e.undo.is_empty() {
                return violation(Violation::NoopWithUndo { op: e.op.id() });
            }
            let id = e.op.id();
            per_replica
                .entry(id.replica())
                .or_default()
                .push((id.seq(), e.op.lamport()));
            effects.insert(id, (e.effect, &e.op));
            nodes.insert(e.op.node());
            if let OpKind::Create { parent, .. } | OpKind::Move { parent, .. } = e.op.kind() {
                nodes.insert(*parent);
            }
        }
        for (replica, mut seqs) in per_replica {
            seqs.sort_unstable();
            for (i, w) in seqs.iter().enumerate() {
                if w.0 != i as u64 + 1 {
                    return violation(Violation::LogGap {
                        replica,
                        seq: i as u64 + 1,
                    });
                }
                if i > 0 && seqs[i - 1].1 >= w.1 {
                    return violation(Violation::LamportOrder {
                        op: OpId::new(replica, w.0),
                    });
                }
            }
            if s.max_seq(replica)? != seqs.len() as u64 {
                return violation(Violation::LogGap {
                    replica,
                    seq: seqs.len() as u64,
                });
            }
        }
        let applied = |id: &OpId| matches!(effects.get(id), Some((Effect::Applied, _)));
        let node_count = s.node_count()?;
        let mut placed = 0u64;
        let mut parents: FxHashSet<NodeId> = FxHashSet::default();
        for &node in &nodes {
            if node.is_reserved() {
                continue;
            }
            if let Some(by) = s.payload_set_by(node)? {
                let writer = effects.get(&by).map(|(_, op)| op.kind());
                let ok = applied(&by)
                    && matches!(
                        writer,
                        Some(
                            OpKind::SetPayload { .. }
                                | OpKind::Create {
                                    payload: Some(_),
                                    ..
                                }
                        )
                    );
                if !ok {
                    return violation(Violation::PayloadWriter { node });
                }
            }
            let Some(p) = s.placement(node)? else {
                continue;
            };
            placed += 1;
            parents.insert(p.parent);
            if !applied(&p.placed_by) {
                return violation(Violation::PlacedByUnknown { node });
            }
            let by_delete = matches!(
                effects.get(&p.placed_by).map(|(_, op)| op.kind()),
                Some(OpKind::Delete { .. })
            );
            if (p.parent == NodeId::TRASH) != by_delete {
                return violation(Violation::TrashPlacement { node });
            }
            let mut n = p.parent;
            let mut steps = 0u64;
            while let Some(up) = self.parent(n)? {
                steps += 1;
                if up == node || steps > node_count {
                    return violation(Violation::Cycle { node });
                }
                n = up;
            }
            if n == node {
                return violation(Violation::Cycle { node });
            }
        }
        if placed != node_count {
            return violation(Violation::NodeCount {
                counted: placed,
                stored: node_count,
            });
        }
        let mut indexed = 0u64;
        for parent in parents {
            let mut cursor: Option<Child> = None;
            let mut listed = 0u64;
            loop {
                let page = self.children(parent, cursor.as_ref(), PAGE)?;
                for c in &page {
                    let p = s.placement(c.node)?;
                    if p.is_none_or(|p| p.parent != parent || p.position != c.position) {
                        return violation(Violation::ChildIndex { node: c.node });
                    }
                    if cursor
                        .as_ref()
                        .is_some_and(|prev| (&prev.position, prev.node) >= (&c.position, c.node))
                    {
                        return violation(Violation::ChildIndex { node: c.node });
                    }
                    cursor = Some(c.clone());
                    listed += 1;
                }
                if page.len() < PAGE {
                    break;
                }
            }
            if listed != s.child_count(parent)? {
                return violation(Violation::ChildIndex { node: parent });
            }
            indexed += listed;
        }
        if indexed != node_count {
            return violation(Violation::NodeCount {
                counted: indexed,
                stored: node_count,
            });
        }
        Ok(())
    }
}

/// A broken invariant found by [`Tree::check_invariants`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Violation {
    /// `log_len` disagrees with the entries listed.
    LogLength,
    /// `log_after` is not in strictly increasing key order.
    LogOrder { op: OpId },
    /// A replica's logged sequence numbers have a gap (or `max_seq` disagrees).
    LogGap { replica: ReplicaId, seq: u64 },
    /// A replica's Lamport timestamps do not increase with its sequence numbers.
    LamportOrder { op: OpId },
    /// A no-op entry has undo records.
    NoopWithUndo { op: OpId },
    /// A node's placement was not written by a logged, applied op.
    PlacedByUnknown { node: NodeId },
    /// A node in TRASH not put there by a delete, or put elsewhere by one.
    TrashPlacement { node: NodeId },
    /// A payload not written by a logged, applied create or set-payload.
    PayloadWriter { node: NodeId },
    /// The node is its own ancestor.
    Cycle { node: NodeId },
    /// The ordered-children index disagrees with the placements.
    ChildIndex { node: NodeId },
    /// `node_count` disagrees with the placements.
    NodeCount { counted: u64, stored: u64 },
}

/// The result of a failed [`Tree::check_invariants`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvariantError<E: std::error::Error + 'static> {
    /// The store failed while checking.
    #[error("store: {0}")]
    Store(#[source] E),
    /// An invariant does not hold.
    #[error("invariant violated: {0:?}")]
    Violation(Violation),
}

impl<E: std::error::Error + 'static> From<E> for InvariantError<E> {
    fn from(e: E) -> Self {
        InvariantError::Store(e)
    }
}

struct Frame {
    parent: NodeId,
    depth: usize,
    page: std::vec::IntoIter<Child>,
    cursor: Option<(Position, NodeId)>,
    more: bool,
}

impl Frame {
    fn new(parent: NodeId, depth: usize) -> Self {
        Frame {
            parent,
            depth,
            page: Vec::new().into_iter(),
            cursor: None,
            more: true,
        }
    }
}

/// Depth-first pre-order walk of a subtree (see [`Tree::subtree`]).
pub struct Subtree<'a, S> {
    store: &'a S,
    stack: Vec<Frame>,
}

impl<S> fmt::Debug for Subtree<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subtree")
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Iterator for Subtree<'_, S> {
    type Item = Result<(NodeId, usize), S::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let top = self.stack.last_mut()?;
            if let Some(c) = top.page.next() {
                let depth = top.depth + 1;
                top.cursor = Some((c.position, c.node));
                self.stack.push(Frame::new(c.node, depth));
                return Some(Ok((c.node, depth)));
            }
            if top.more {
                let cursor = top.cursor.as_ref().map(|(p, n)| (p, *n));
                match self.store.children(top.parent, cursor, PAGE) {
                    Ok(page) => {
                        top.more = page.len() == PAGE;
                        top.page = page.into_iter();
                    }
                    Err(e) => {
                        self.stack.clear();
                        return Some(Err(e));
                    }
                }
                continue;
            }
            self.stack.pop();
        }
    }
}
