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
mod suffix;

pub(crate) use suffix::Rewind;

pub use local::{LocalError, LocalOp, Place};

const PAGE: usize = 256;

/// A replicated tree: applies ops from any replica (undo/do/redo in total order), makes local
/// ops, and answers reads. See the crate docs for an example.
pub struct Tree<S: Store, P: Policy = AllowAll> {
    store: S,
    policy: P,
    replica: ReplicaId,
    scratch: apply::Scratch,
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
            scratch: apply::Scratch::default(),
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

    /// The policy, to change its inputs (e.g. register proofs). Decisions already logged are
    /// not revisited: call [`Tree::redecide_from`] when a change can alter them.
    pub fn policy_mut(&mut self) -> &mut P {
        &mut self.policy
    }

    /// Re-decides every logged op whose Lamport timestamp is `from` or later, in one transaction:
    /// undo back to it, then redo with the current policy (never a whole-log replay unless `from`
    /// is the first op's). The report's `ops` are the re-decided ops whose effect changed, with
    /// their new outcome; `events` are the net tree changes.
    pub fn redecide_from(
        &mut self,
        from: Lamport,
    ) -> Result<ApplyReport<P::Reason>, ApplyError<S::Error>> {
        self.in_batch(|store, policy, scratch| apply::redecide(store, policy, scratch, from))
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
        self.in_batch(|store, policy, scratch| apply::run(store, policy, scratch, ops))
    }

    /// Runs `f` as one batch: `begin`, then `commit`, or `rollback` on any store error.
    fn in_batch<R>(
        &mut self,
        f: impl FnOnce(&mut S, &P, &mut apply::Scratch) -> Result<R, S::Error>,
    ) -> Result<R, ApplyError<S::Error>> {
        self.store.begin().map_err(ApplyError::Store)?;
        let result = f(&mut self.store, &self.policy, &mut self.scratch)
            .and_then(|r| self.store.commit().map(|()| r));
        result.map_err(|e| {
            let _ = self.store.rollback();
            ApplyError::Store(e)
        })
    }

    /// [`Tree::apply`] with more in the same transaction: `writes` runs first on the store
    /// (e.g. a policy layer's [`Store::doc_entry_insert`] and [`Store::held_insert`] records
    /// for the inputs this batch brought), then the batch applies, then, when `redecide_from`
    /// is given, every logged op from that Lamport time on is re-decided as by
    /// [`Tree::redecide_from`]. All of it commits together or, on a store error, not at all.
    /// Returns the apply report and the re-decision's.
    #[allow(clippy::type_complexity)]
    pub fn apply_with<I, F>(
        &mut self,
        ops: I,
        writes: F,
        redecide_from: Option<Lamport>,
    ) -> Result<(ApplyReport<P::Reason>, Option<ApplyReport<P::Reason>>), ApplyError<S::Error>>
    where
        I: IntoIterator<Item = Op>,
        F: FnOnce(&mut S) -> Result<(), S::Error>,
    {
        self.in_batch(|store, policy, scratch| {
            writes(store)?;
            let report = apply::run(store, policy, scratch, ops)?;
            let redecided = match redecide_from {
                Some(from) => Some(apply::redecide(store, policy, scratch, from)?),
                None => None,
            };
            Ok((report, redecided))
        })
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
        if node.is_reserved() || self.store.child_count(NodeId::TRASH)? == 0 {
            return Ok(false);
        }
        self.store.is_within(node, NodeId::TRASH)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::policy::{Decision, ReplayView};
    use crate::report::{ChangeEvent, Outcome, Rejection};

    fn r(b: u8) -> ReplicaId {
        ReplicaId::from_bytes([b; 32])
    }
    fn n(b: u8) -> NodeId {
        NodeId::from_bytes([b; 16])
    }
    fn pos(b: u8) -> Position {
        Position::from_bytes(&[0x80, b | 1])
    }
    fn create(rep: u8, seq: u64, lamport: u64, node: NodeId, parent: NodeId) -> Op {
        Op::new(
            OpId::new(r(rep), seq),
            Lamport::new(lamport),
            OpKind::Create {
                node,
                parent,
                position: pos(seq as u8),
                payload: None,
            },
        )
    }
    fn mv(rep: u8, seq: u64, lamport: u64, node: NodeId, parent: NodeId) -> Op {
        Op::new(
            OpId::new(r(rep), seq),
            Lamport::new(lamport),
            OpKind::Move {
                node,
                parent,
                position: pos(seq as u8),
            },
        )
    }

    #[test]
    fn out_of_order_ops_wait_and_release() {
        let mut t = Tree::new(MemoryStore::new(), r(9));
        let second = create(1, 2, 2, n(2), n(1));
        let rep = t.apply([second.clone()]).unwrap();
        assert_eq!(
            rep.ops[0].outcome,
            Outcome::Pending {
                awaits: OpId::new(r(1), 1)
            }
        );
        assert_eq!(
            t.apply([second.clone()]).unwrap().ops[0].outcome,
            Outcome::Duplicate
        );
        let rep = t.apply([create(1, 1, 1, n(1), NodeId::ROOT)]).unwrap();
        assert_eq!(rep.ops[0].outcome, Outcome::Applied);
        assert_eq!(rep.released.len(), 1);
        assert_eq!(rep.released[0].outcome, Outcome::Applied);
        assert_eq!(rep.events.len(), 2);
        assert_eq!(t.ancestors(n(2)).unwrap(), vec![n(1), NodeId::ROOT]);
        assert_eq!(t.store().pending_len().unwrap(), 0);
        t.check_invariants().unwrap();
    }

    #[test]
    fn invalid_ops_are_rejected_individually() {
        let mut t = Tree::new(MemoryStore::new(), r(9));
        let good = create(1, 1, 5, n(1), NodeId::ROOT);
        let bad = [
            create(2, 0, 1, n(2), NodeId::ROOT),
            create(2, 1, 0, n(2), NodeId::ROOT),
            create(2, 1, 1, NodeId::ROOT, NodeId::ROOT),
            mv(2, 1, 1, n(2), NodeId::TRASH),
            Op::new(
                OpId::new(r(2), 1),
                Lamport::new(1),
                OpKind::Create {
                    node: n(2),
                    parent: NodeId::ROOT,
                    position: Position::from_bytes(&[1, 0]),
                    payload: None,
                },
            ),
            create(1, 2, 5, n(3), NodeId::ROOT),
            create(1, 1, 6, n(4), NodeId::ROOT),
        ];
        let rep = t.apply([good].into_iter().chain(bad)).unwrap();
        let outcomes: Vec<_> = rep.ops.iter().map(|o| o.outcome.clone()).collect();
        assert_eq!(outcomes[0], Outcome::Applied);
        assert_eq!(outcomes[1], Outcome::Rejected(Rejection::SeqZero));
        assert_eq!(outcomes[2], Outcome::Rejected(Rejection::LamportZero));
        assert!(matches!(
            outcomes[3],
            Outcome::Rejected(Rejection::ReservedNode { .. })
        ));
        assert_eq!(outcomes[4], Outcome::Rejected(Rejection::ParentTrash));
        assert!(matches!(
            outcomes[5],
            Outcome::Rejected(Rejection::InvalidPosition(_))
        ));
        assert!(matches!(
            outcomes[6],
            Outcome::Rejected(Rejection::LamportNotIncreasing { .. })
        ));
        assert_eq!(outcomes[7], Outcome::Rejected(Rejection::Equivocation));
        assert_eq!(t.node_count().unwrap(), 1);
        assert_eq!(t.store().log_len().unwrap(), 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn undo_redo_churn_is_not_reported() {
        let mut t = Tree::new(MemoryStore::new(), r(9));
        t.apply([
            create(1, 1, 1, n(1), NodeId::ROOT),
            create(1, 2, 2, n(2), NodeId::ROOT),
            mv(1, 3, 10, n(1), n(2)),
        ])
        .unwrap();
        // An older op forces undo and redo of the move; only its own effect is reported.
        let rep = t.apply([create(2, 1, 3, n(3), NodeId::ROOT)]).unwrap();
        assert_eq!(rep.events.len(), 1);
        assert!(matches!(rep.events[0], ChangeEvent::Created { node, .. } if node == n(3)));
        assert_eq!(t.parent(n(1)).unwrap(), Some(n(2)));
        t.check_invariants().unwrap();
    }

    /// Denies creates under the `locked` subtree, judged at replay time.
    #[derive(Debug)]
    struct Lock(NodeId);
    impl Policy for Lock {
        type Reason = &'static str;
        fn decide<S: Store>(
            &self,
            op: &Op,
            view: &ReplayView<'_, S>,
        ) -> Result<Decision<&'static str>, S::Error> {
            match (op.kind(), view.new_parent()) {
                (OpKind::Create { .. }, Some(p)) if view.is_within(p, self.0)? => {
                    Ok(Decision::Deny { reason: "locked" })
                }
                _ => Ok(Decision::Allow),
            }
        }
    }

    #[test]
    fn policy_is_decided_at_replay_time_and_redecided_on_redo() {
        let mut t = Tree::with_policy(MemoryStore::new(), r(9), Lock(n(5)));
        t.apply([
            create(1, 1, 1, n(5), NodeId::ROOT),
            create(1, 2, 2, n(2), NodeId::ROOT),
            create(1, 3, 4, n(3), n(2)),
        ])
        .unwrap();
        assert_eq!(t.parent(n(3)).unwrap(), Some(n(2)));
        let created = OpId::new(r(1), 3);
        let effect =
            |t: &Tree<MemoryStore, Lock>| t.store().entry(created).unwrap().unwrap().effect;
        assert_eq!(effect(&t), Effect::Applied);
        // An older move puts n2 under the locked n5: on redo, creating n3 under n2 is denied.
        let rep = t.apply([mv(2, 1, 3, n(2), n(5))]).unwrap();
        assert_eq!(rep.ops[0].outcome, Outcome::Applied);
        assert_eq!(effect(&t), Effect::Denied);
        assert!(!t.exists(n(3)).unwrap());
        assert!(rep.events.contains(&ChangeEvent::Removed { node: n(3) }));
        // A direct create under the lock is denied with the policy's reason.
        let rep = t.apply([create(3, 1, 9, n(6), n(5))]).unwrap();
        assert_eq!(rep.ops[0].outcome, Outcome::Denied { reason: "locked" });
        t.check_invariants().unwrap();
    }

    #[test]
    fn redecide_from_revisits_only_the_suffix_and_reports_changes() {
        let mut t = Tree::with_policy(MemoryStore::new(), r(9), Lock(n(7)));
        t.apply([
            create(1, 1, 1, n(5), NodeId::ROOT),
            create(1, 2, 2, n(2), NodeId::ROOT),
            create(1, 3, 4, n(3), n(5)),
        ])
        .unwrap();
        // Nothing changed in the policy's inputs: nothing to report.
        let rep = t.redecide_from(Lamport::new(1)).unwrap();
        assert!(rep.ops.is_empty() && rep.events.is_empty());
        // The lock now covers n5: re-deciding from lamport 3 denies the create of n3.
        t.policy_mut().0 = n(5);
        let rep = t.redecide_from(Lamport::new(3)).unwrap();
        assert_eq!(rep.ops.len(), 1);
        assert_eq!(rep.ops[0].id, OpId::new(r(1), 3));
        assert_eq!(rep.ops[0].outcome, Outcome::Denied { reason: "locked" });
        assert_eq!(rep.events, vec![ChangeEvent::Removed { node: n(3) }]);
        // Re-deciding after the op leaves it alone.
        t.policy_mut().0 = n(7);
        assert!(t.redecide_from(Lamport::new(5)).unwrap().ops.is_empty());
        assert!(!t.exists(n(3)).unwrap());
        t.check_invariants().unwrap();
    }

    #[test]
    fn subtree_walk_and_paging() {
        let mut t = Tree::new(MemoryStore::new(), r(1));
        let a = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
        let mut kids = Vec::new();
        for _ in 0..300 {
            kids.push(t.create(a, Place::Last, None).unwrap().node());
        }
        let g = t.create(kids[0], Place::First, None).unwrap().node();
        let b = t.create(NodeId::ROOT, Place::First, None).unwrap().node();
        let walk: Vec<_> = t.subtree(NodeId::ROOT).map(|x| x.unwrap()).collect();
        assert_eq!(walk.len(), 303);
        assert_eq!(walk[0], (b, 1));
        assert_eq!(walk[1], (a, 1));
        assert_eq!(walk[2], (kids[0], 2));
        assert_eq!(walk[3], (g, 3));
        assert_eq!(walk[4], (kids[1], 2));
        let page1 = t.children(a, None, 100).unwrap();
        let page2 = t.children(a, page1.last(), 100).unwrap();
        assert_eq!(page2[0].node, kids[100]);
        t.move_node(kids[5], a, Place::Before(kids[2])).unwrap();
        t.move_node(kids[7], a, Place::After(kids[0])).unwrap();
        let order: Vec<_> = t
            .children(a, None, 4)
            .unwrap()
            .iter()
            .map(|c| c.node)
            .collect();
        assert_eq!(order, vec![kids[0], kids[7], kids[1], kids[5]]);
        assert!(matches!(
            t.move_node(a, kids[3], Place::Last),
            Err(LocalError::Cycle { .. })
        ));
        assert!(matches!(
            t.move_node(kids[1], a, Place::After(kids[1])),
            Err(LocalError::SiblingIsNode)
        ));
        assert!(matches!(
            t.move_node(kids[1], a, Place::After(b)),
            Err(LocalError::SiblingNotUnder { .. })
        ));
        t.check_invariants().unwrap();
    }
}
