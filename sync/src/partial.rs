//! A partial replica: a materialized projection of subtree(X) plus the path from X up to ROOT.
//!
//! It does not replay ops: a subset of a Kleppmann log replayed alone can give a different tree
//! (cycle checks and defensive deletes look outside the scope). Instead the full replica sends the
//! *result* for the scope — each node's parent, position, placing op and payload — and this type
//! holds it, keyed so that deltas ([`crate::Message::Gone`], [`crate::Message::Nodes`]) apply in
//! O(change). It also makes local ops (create, move, delete, payload) that a full replica accepts:
//! its own replica id and gap-free seqs, Lamport timestamps above everything it has seen, and a
//! delete's `seen` vector equal to the last synced frontier. See `spec/sync.md` ("Partial replica").
//!
//! The state lives in a [`PartialStore`]: [`MemoryPartial`] (the default, and the reference model)
//! or `SqlitePartial` (feature `sqlite`, one file per replica, see `spec/sync.md` §"Partial
//! replica storage (SQLite)"). The logic here is written once against the trait, so the session
//! has one code path for both.

use std::convert::Infallible;

use canopy_tree::{
    Lamport, NodeId, Op, OpId, OpKind, Place, Position, PositionError, ReplicaId, VersionVector,
    MAX_PAYLOAD_LEN,
};
use rustc_hash::{FxHashMap, FxHashSet};

mod snapshot;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

#[cfg(feature = "sqlite")]
pub use sqlite::{SqlitePartial, SqlitePartialError};
pub use store::{MemoryPartial, PartialMeta, PartialStore};

use crate::wire::{gone_digest, NodeRecord, PathEntry, PayloadState, WireError};

/// Why a local op (or a read) on a partial replica failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartialError<E: std::error::Error + 'static = Infallible> {
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
    /// [`PartialReplica::check_invariants`] found a broken invariant.
    #[error("invariant: {0}")]
    Invalid(#[from] PartialViolation),
    /// The store failed (the batch was rolled back).
    #[error("store: {0}")]
    Store(#[source] E),
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

/// Children read per store call when walking a sibling list.
const PAGE: usize = 256;

fn never<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => match e {},
    }
}

/// The state of a partial replica of subtree(`scope`), kept in a [`PartialStore`] `S`. See the
/// module docs.
///
/// The meta record (scope, checkpoint, counters, path) and the replica's own ops are cached in
/// memory; node records are read from the store on demand.
#[derive(Clone, Debug)]
pub struct PartialReplica<S: PartialStore = MemoryPartial> {
    store: S,
    meta: PartialMeta,
    /// Every op this replica made (it may be their only holder), in seq order.
    own: Vec<Op>,
    in_batch: bool,
    /// `meta` changed in the current batch: written at its commit.
    meta_dirty: bool,
    /// Signs local ops before they are logged (authorized documents).
    signer: Option<OpSigner>,
}

/// Signs a partial replica's local ops before they are logged and pushed: for an authorized
/// document, `canopy_caps::sign_op` with the writer's key, the document id, a time and the
/// writer's chain (the responder's ingest refuses unsigned ops). The op is signed once, when it
/// is made, so a resent op is the same bytes.
#[derive(Clone)]
pub struct OpSigner(std::sync::Arc<dyn Fn(Op) -> Op + Send + Sync>);

impl OpSigner {
    /// A signer from a function that returns the op with its attestation.
    pub fn new(sign: impl Fn(Op) -> Op + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(sign))
    }
}

impl std::fmt::Debug for OpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpSigner")
    }
}

impl PartialReplica<MemoryPartial> {
    /// An empty in-memory partial replica of the subtree under `scope`, making its own ops as
    /// `replica` (a replica id no other replica uses). Its first sync is cold.
    pub fn new(scope: NodeId, replica: ReplicaId) -> Self {
        never(Self::init(MemoryPartial::new(), scope, replica))
    }

    /// Copies this replica (nodes, checkpoint, counters, path, own ops) into `store`, replacing
    /// what it held, in one batch.
    pub fn copy_into<T: PartialStore>(&self, store: T) -> Result<PartialReplica<T>, T::Error> {
        let mut to = PartialReplica::init(store, self.meta.scope, self.meta.replica)?;
        let records = never(self.store.records());
        to.batch(|to| {
            to.meta = self.meta.clone();
            to.meta_dirty = true;
            for r in &records {
                to.store.put(r)?;
            }
            for op in &self.own {
                to.store.push_own(op)?;
            }
            to.own = self.own.clone();
            Ok(())
        })?;
        Ok(to)
    }
}

/// Reads of a replica whose store cannot fail (the in-memory one).
impl<S: PartialStore<Error = Infallible>> PartialReplica<S> {
    /// Number of held nodes (the scope root not counted).
    pub fn len(&self) -> usize {
        never(self.store.count()) as usize
    }
    /// True if no node under the scope root is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True if `node` is held (in the scope, not the root).
    pub fn contains(&self, node: NodeId) -> bool {
        never(self.holds(node))
    }
    /// The parent of a held node.
    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        never(self.store.parent(node))
    }
    /// The payload of a held node.
    pub fn payload(&self, node: NodeId) -> Option<PayloadState> {
        never(self.store.node(node)).map(|r| r.payload)
    }
    /// Children of `parent` (the scope root or a held node) in sibling order.
    pub fn children(&self, parent: NodeId) -> Vec<NodeId> {
        never(self.all_children(parent))
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }
    /// Every held node as a record, sorted by node id (for comparisons and persistence).
    pub fn records(&self) -> Vec<NodeRecord> {
        never(self.store.records())
    }
}

impl<S: PartialStore> PartialReplica<S> {
    /// Starts a new, empty replica of the subtree under `scope` in `store` (dropping whatever the
    /// store held), making its own ops as `replica`. Its first sync is cold.
    pub fn init(store: S, scope: NodeId, replica: ReplicaId) -> Result<Self, S::Error> {
        let mut me = Self {
            store,
            meta: PartialMeta::new(scope, replica),
            own: Vec::new(),
            in_batch: false,
            meta_dirty: true,
            signer: None,
        };
        me.batch(|me| {
            me.store.clear()?;
            for op in me.store.own_ops()? {
                me.store.remove_own(op.id())?;
            }
            Ok(())
        })?;
        Ok(me)
    }

    /// Opens the replica a store holds (`None` if it holds none yet: use
    /// [`PartialReplica::init`]).
    pub fn open(store: S) -> Result<Option<Self>, S::Error> {
        let Some(meta) = store.meta()? else {
            return Ok(None);
        };
        let own = store.own_ops()?;
        Ok(Some(Self {
            store,
            meta,
            own,
            in_batch: false,
            meta_dirty: false,
            signer: None,
        }))
    }

    /// Signs every local op made from now on with `signer` (an authorized document).
    pub fn set_signer(&mut self, signer: OpSigner) {
        self.signer = Some(signer);
    }

    /// The store (for reads the replica does not wrap).
    pub fn store(&self) -> &S {
        &self.store
    }
    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }
    /// The scope root.
    pub fn scope(&self) -> NodeId {
        self.meta.scope
    }
    /// The replica id of this replica's own ops.
    pub fn replica(&self) -> ReplicaId {
        self.meta.replica
    }
    /// The full replica's frontier at the last completed sync (empty before the first).
    pub fn since(&self) -> &VersionVector {
        &self.meta.since
    }
    /// The path from the scope root up to ROOT or TRASH (scope root first).
    pub fn path(&self) -> &[PathEntry] {
        &self.meta.path
    }
    /// The meta record (scope, checkpoint, counters, path) as stored.
    pub fn meta(&self) -> &PartialMeta {
        &self.meta
    }
    /// Number of held nodes (the scope root not counted).
    pub fn count(&self) -> Result<u64, S::Error> {
        self.store.count()
    }
    /// True if `node` is held (in the scope, not the root).
    pub fn holds(&self, node: NodeId) -> Result<bool, S::Error> {
        Ok(self.store.parent(node)?.is_some())
    }
    /// A held node's record (parent, position, placing op, payload).
    pub fn node(&self, node: NodeId) -> Result<Option<NodeRecord>, S::Error> {
        self.store.node(node)
    }
    /// One keyset page of the children of `parent` in sibling order: up to `limit` children after
    /// `after` (the last entry of the previous page). Reads only that page from the store.
    pub fn children_page(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>, S::Error> {
        self.store.children(parent, after, limit)
    }
    /// Walks subtree(`root`) below `root` in depth-first sibling order, reading one page of
    /// children at a time (memory: one page per level of depth).
    pub fn subtree(&self, root: NodeId) -> Subtree<'_, S> {
        Subtree {
            replica: self,
            stack: vec![Level {
                parent: root,
                page: Vec::new().into_iter(),
                last: None,
                done: false,
            }],
        }
    }
    /// Every held node as a record, sorted by node id (reads the whole replica).
    pub fn all_records(&self) -> Result<Vec<NodeRecord>, S::Error> {
        self.store.records()
    }
    /// Local ops not covered by [`PartialReplica::since`] (the last responder does not have them
    /// yet): pushed at the next sync.
    pub fn unacked(&self) -> &[Op] {
        let acked = self.meta.since.get(&self.meta.replica);
        let i = self.own.partition_point(|op| op.id().seq() <= acked);
        &self.own[i..]
    }

    /// Every op this replica made. They are kept: after syncing with a full replica that lacks
    /// some of them (its checkpoint is lower), the next sync pushes them again.
    pub fn own_ops(&self) -> &[Op] {
        &self.own
    }

    fn all_children(&self, parent: NodeId) -> Result<Vec<(Position, NodeId)>, S::Error> {
        let mut out: Vec<(Position, NodeId)> = Vec::new();
        loop {
            let after = out.last().map(|(p, n)| (p, *n));
            let page = self.store.children(parent, after, PAGE)?;
            let more = page.len() == PAGE;
            out.extend(page);
            if !more {
                return Ok(out);
            }
        }
    }

    // ---- batches ----

    /// Runs `f` as one store batch (nested calls join the outer batch). On error the store rolls
    /// back and the cached meta record and own ops are reloaded from it.
    pub(crate) fn batch<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, S::Error>,
    ) -> Result<R, S::Error> {
        if self.in_batch {
            return f(self);
        }
        self.store.begin()?;
        self.in_batch = true;
        let r = f(self).and_then(|v| {
            if self.meta_dirty {
                self.store.set_meta(&self.meta)?;
            }
            self.store.commit()?;
            Ok(v)
        });
        self.in_batch = false;
        match r {
            Ok(v) => {
                self.meta_dirty = false;
                Ok(v)
            }
            Err(e) => {
                // best effort: a store that cannot roll back or reload fails again on next use
                let _ = self.store.rollback();
                if let Ok(Some(meta)) = self.store.meta() {
                    self.meta = meta;
                    self.meta_dirty = false;
                }
                if let Ok(own) = self.store.own_ops() {
                    self.own = own;
                }
                Err(e)
            }
        }
    }

    // ---- applying a delta (the session calls these) ----

    /// Drops everything held and the checkpoint: the next items rebuild the scope from nothing,
    /// and if they are cut short the next sync starts cold again.
    pub(crate) fn start_cold(&mut self) -> Result<(), S::Error> {
        self.batch(|me| {
            me.meta.since = VersionVector::new();
            me.meta.path.clear();
            me.meta_dirty = true;
            me.store.clear()
        })
    }

    /// Adopts a new path. A held node that is now an ancestor of the scope root left the scope
    /// (the responder does not name it in Gone: the path carries it), so it goes, with what is
    /// held under it.
    pub(crate) fn set_path(&mut self, path: Vec<PathEntry>) -> Result<(), S::Error> {
        self.batch(|me| {
            for e in &path {
                if me.holds(e.node)? {
                    me.remove_subtree(e.node)?;
                }
            }
            me.meta.path = path;
            me.meta_dirty = true;
            Ok(())
        })
    }

    pub(crate) fn apply_gone(&mut self, digest: &[u8; 16]) -> Result<(), S::Error> {
        self.batch(|me| match me.store.by_digest(digest)? {
            Some(node) => me.remove_subtree(node),
            None => Ok(()),
        })
    }

    pub(crate) fn apply_record(&mut self, r: NodeRecord) -> Result<(), S::Error> {
        if r.node.is_reserved() || r.node == self.meta.scope {
            return Ok(());
        }
        self.batch(|me| me.store.put(&r))
    }

    /// Adopts the responder's checkpoint, then re-applies the own ops it does not cover on top
    /// of the responder's state (optimistically, as when they were made).
    pub(crate) fn checkpoint(
        &mut self,
        frontier: VersionVector,
        max_lamport: u64,
    ) -> Result<(), S::Error> {
        self.batch(|me| {
            me.meta.last_seq = me.meta.last_seq.max(frontier.get(&me.meta.replica));
            me.meta.max_lamport = me.meta.max_lamport.max(max_lamport);
            me.meta.since = frontier;
            me.meta_dirty = true;
            let pending: Vec<Op> = me.unacked().to_vec();
            // own ops the responder could not apply yet (it lacks ops they depend on): shown on
            // top of its state, and the next sync asks for a full snapshot, since what is held is
            // no longer exactly the responder's state at `since`
            me.meta.tainted = !pending.is_empty();
            if me.meta.tainted {
                for op in &pending {
                    me.apply_optimistic(op)?;
                }
                me.prune_unreachable()?;
            }
            Ok(())
        })
    }

    /// True if the next sync must ask for a full snapshot (see [`PartialReplica::checkpoint`]).
    pub(crate) fn needs_reset(&self) -> bool {
        self.meta.tainted
    }

    /// Checks that each of `nodes` that is held hangs under the scope root through held nodes;
    /// the session calls it on a delta's records before adopting it. Each held node's parent is
    /// read once (nodes already found to reach the root end the walks that meet them), so the
    /// cost is O(nodes + their distinct held ancestors), not O(nodes × depth).
    pub(crate) fn reaches_scope(&self, nodes: &[NodeId]) -> Result<bool, S::Error> {
        // node -> index of the walk that first met it; walks before the current one all reached
        // the scope root (else this returned false)
        let mut met: FxHashMap<NodeId, usize> = FxHashMap::default();
        for (i, n) in nodes.iter().enumerate() {
            let mut up = *n;
            loop {
                if up == self.meta.scope {
                    break;
                }
                match met.get(&up) {
                    Some(&w) if w == i => return Ok(false), // a cycle among held nodes
                    Some(_) => break,
                    None => {}
                }
                match self.store.parent(up)? {
                    Some(p) => {
                        met.insert(up, i);
                        up = p;
                    }
                    // a start that is not held is fine (a later item removed it)
                    None if up == *n => break,
                    None => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// True if `parent` is the scope root or held (a reset stream sends parents first).
    pub(crate) fn holds_parent(&self, parent: NodeId) -> Result<bool, S::Error> {
        self.is_parent_ok(parent)
    }

    /// True if some own op is not covered by `frontier`: its optimistic effect may have removed
    /// nodes that a delta computed before the op still places things under.
    pub(crate) fn has_unacked_beyond(&self, frontier: &VersionVector) -> bool {
        self.own
            .last()
            .is_some_and(|op| op.id().seq() > frontier.get(&self.meta.replica))
    }

    /// After a delta that does not hang together (a faulty or malicious responder): drops what
    /// does not reach the scope root and asks for a full snapshot at the next sync.
    pub(crate) fn quarantine(&mut self) -> Result<(), S::Error> {
        self.batch(|me| {
            me.prune_unreachable()?;
            me.meta.tainted = true;
            me.meta_dirty = true;
            Ok(())
        })
    }

    /// Drops held nodes that no longer hang under the scope root (reads every node id).
    fn prune_unreachable(&mut self) -> Result<(), S::Error> {
        let mut keep: FxHashSet<NodeId> = FxHashSet::default();
        let mut stack = vec![self.meta.scope];
        while let Some(n) = stack.pop() {
            for (_, c) in self.all_children(n)? {
                if keep.insert(c) {
                    stack.push(c);
                }
            }
        }
        for n in self.store.node_ids()? {
            if !keep.contains(&n) {
                self.store.remove(n)?;
            }
        }
        Ok(())
    }

    /// The local effect of an own op on the projection (skipped where it no longer applies).
    fn apply_optimistic(&mut self, op: &Op) -> Result<(), S::Error> {
        match op.kind() {
            OpKind::Create {
                node,
                parent,
                position,
                payload,
            } if self.is_parent_ok(*parent)? && !self.is_under(*parent, *node)? => {
                let payload = match payload {
                    Some(b) => PayloadState::Present {
                        bytes: b.clone(),
                        set_by: op.id(),
                    },
                    None => self
                        .store
                        .node(*node)?
                        .map_or(PayloadState::None, |h| h.payload),
                };
                self.apply_record(NodeRecord {
                    node: *node,
                    parent: *parent,
                    position: position.clone(),
                    placed_by: op.id(),
                    payload,
                })?;
            }
            OpKind::Move {
                node,
                parent,
                position,
            } => {
                if let Some(h) = self.store.node(*node)? {
                    if self.is_parent_ok(*parent)? && !self.is_under(*parent, *node)? {
                        self.apply_record(NodeRecord {
                            node: *node,
                            parent: *parent,
                            position: position.clone(),
                            placed_by: op.id(),
                            payload: h.payload,
                        })?;
                    }
                }
            }
            OpKind::Delete { node, .. } if self.holds(*node)? => {
                self.remove_subtree(*node)?;
            }
            OpKind::SetPayload { node, payload } => {
                if let Some(mut h) = self.store.node(*node)? {
                    h.payload = PayloadState::Present {
                        bytes: payload.clone(),
                        set_by: op.id(),
                    };
                    self.store.put(&h)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// True if `node` is `ancestor` or held below it (stops at a cycle among held nodes).
    fn is_under(&self, node: NodeId, ancestor: NodeId) -> Result<bool, S::Error> {
        let mut up = node;
        let mut seen: FxHashSet<NodeId> = FxHashSet::default();
        loop {
            if up == ancestor {
                return Ok(true);
            }
            if !seen.insert(up) {
                return Ok(false);
            }
            match self.store.parent(up)? {
                Some(p) => up = p,
                None => return Ok(false),
            }
        }
    }

    /// Drops a local op the full replica refused as invalid or equivocating (it will never be
    /// logged there).
    pub(crate) fn drop_refused(&mut self, id: OpId) -> Result<(), S::Error> {
        if !self.own.iter().any(|op| op.id() == id) {
            return Ok(());
        }
        self.batch(|me| {
            me.store.remove_own(id)?;
            me.own.retain(|op| op.id() != id);
            Ok(())
        })
    }

    /// Removes `node` and everything held under it, reading one page of children at a time.
    fn remove_subtree(&mut self, node: NodeId) -> Result<(), S::Error> {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            stack.extend(self.all_children(n)?.into_iter().map(|(_, c)| c));
            self.store.remove(n)?;
        }
        Ok(())
    }

    // ---- local ops ----

    fn next_id(&self) -> Result<(OpId, Lamport), PartialError<S::Error>> {
        let seq = self
            .meta
            .last_seq
            .checked_add(1)
            .ok_or(PartialError::SeqExhausted)?;
        let lamport = self
            .meta
            .max_lamport
            .checked_add(1)
            .ok_or(PartialError::SeqExhausted)?;
        if seq >= 1 << 63 || lamport >= 1 << 63 {
            return Err(PartialError::SeqExhausted);
        }
        Ok((OpId::new(self.meta.replica, seq), Lamport::new(lamport)))
    }

    /// Records an own op (in the current batch).
    fn commit_local(&mut self, op: &Op) -> Result<(), S::Error> {
        self.store.push_own(op)?;
        self.meta.last_seq = op.id().seq();
        self.meta.max_lamport = op.lamport().get();
        self.meta_dirty = true;
        self.own.push(op.clone());
        Ok(())
    }

    fn is_parent_ok(&self, parent: NodeId) -> Result<bool, S::Error> {
        Ok(parent == self.meta.scope || self.holds(parent)?)
    }

    fn position_for(
        &self,
        parent: NodeId,
        place: Place,
        moving: Option<NodeId>,
    ) -> Result<Position, PartialError<S::Error>> {
        let st = PartialError::Store;
        // the first sibling other than the moving node in a page of two
        let other =
            |page: Vec<(Position, NodeId)>| page.into_iter().find(|(_, n)| Some(*n) != moving);
        let sibling = |s: NodeId| -> Result<Position, PartialError<S::Error>> {
            match self.store.node(s).map_err(st)? {
                Some(r) if r.parent == parent && Some(s) != moving => Ok(r.position),
                _ => Err(PartialError::SiblingNotUnder { sibling: s, parent }),
            }
        };
        let r = &self.meta.replica;
        Ok(match place {
            Place::First => match other(self.store.children(parent, None, 2).map_err(st)?) {
                Some((p, _)) => Position::before(&p, r)?,
                None => Position::first(r),
            },
            Place::Last => match other(self.store.children_rev(parent, None, 2).map_err(st)?) {
                Some((p, _)) => Position::after(&p, r)?,
                None => Position::first(r),
            },
            Place::After(s) => {
                let at = sibling(s)?;
                let next = self.store.children(parent, Some((&at, s)), 2).map_err(st)?;
                match other(next) {
                    Some((hi, _)) if hi != at => Position::between(&at, &hi, r)?,
                    _ => Position::after(&at, r)?,
                }
            }
            Place::Before(s) => {
                let at = sibling(s)?;
                let prev = self
                    .store
                    .children_rev(parent, Some((&at, s)), 2)
                    .map_err(st)?;
                match other(prev) {
                    Some((lo, _)) if lo != at => Position::between(&lo, &at, r)?,
                    _ => Position::before(&at, r)?,
                }
            }
        })
    }

    /// Applies a local op's record and logs the op, in one batch.
    fn local(
        &mut self,
        op: Op,
        write: impl FnOnce(&mut Self) -> Result<(), S::Error>,
    ) -> Result<Op, PartialError<S::Error>> {
        let op = match &self.signer {
            Some(s) => (s.0)(op),
            None => op,
        };
        self.batch(|me| {
            write(me)?;
            me.commit_local(&op)
        })
        .map_err(PartialError::Store)?;
        Ok(op)
    }

    /// Creates `node` under `parent` (the scope root or a held node) and returns the op to push.
    pub fn create(
        &mut self,
        node: NodeId,
        parent: NodeId,
        place: Place,
        payload: Option<Vec<u8>>,
    ) -> Result<Op, PartialError<S::Error>> {
        let st = PartialError::Store;
        if node.is_reserved() || node == self.meta.scope || self.holds(node).map_err(st)? {
            return Err(PartialError::NodeExists { node });
        }
        if !self.is_parent_ok(parent).map_err(st)? {
            return Err(PartialError::NotInScope { node: parent });
        }
        if let Some(p) = &payload {
            if p.len() > MAX_PAYLOAD_LEN {
                return Err(PartialError::PayloadTooLarge { len: p.len() });
            }
        }
        let position = self.position_for(parent, place, None)?;
        let (id, lamport) = self.next_id()?;
        let record = NodeRecord {
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
        };
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
        self.local(op, |me| me.apply_record(record))
    }

    /// Moves a held node under `parent` (the scope root or a held node outside its subtree).
    pub fn move_node(
        &mut self,
        node: NodeId,
        parent: NodeId,
        place: Place,
    ) -> Result<Op, PartialError<S::Error>> {
        let st = PartialError::Store;
        let Some(held) = self.store.node(node).map_err(st)? else {
            return Err(PartialError::NotInScope { node });
        };
        if !self.is_parent_ok(parent).map_err(st)? {
            return Err(PartialError::NotInScope { node: parent });
        }
        if self.is_under(parent, node).map_err(st)? {
            return Err(PartialError::Cycle { node, parent });
        }
        let position = self.position_for(parent, place, Some(node))?;
        let (id, lamport) = self.next_id()?;
        let record = NodeRecord {
            node,
            parent,
            position: position.clone(),
            placed_by: id,
            payload: held.payload,
        };
        let op = Op::new(
            id,
            lamport,
            OpKind::Move {
                node,
                parent,
                position,
            },
        );
        self.local(op, |me| me.apply_record(record))
    }

    /// Deletes a held node (it leaves the scope with its subtree). The delete's `seen` vector is
    /// the last synced frontier plus this replica's own earlier ops.
    pub fn delete(&mut self, node: NodeId) -> Result<Op, PartialError<S::Error>> {
        if !self.holds(node).map_err(PartialError::Store)? {
            return Err(PartialError::NotInScope { node });
        }
        let (id, lamport) = self.next_id()?;
        let mut seen = self.meta.since.clone();
        seen.set(self.meta.replica, id.seq() - 1);
        let op = Op::new(id, lamport, OpKind::Delete { node, seen });
        self.local(op, |me| me.remove_subtree(node))
    }

    /// Replaces the payload of a held node.
    pub fn set_payload(
        &mut self,
        node: NodeId,
        payload: Vec<u8>,
    ) -> Result<Op, PartialError<S::Error>> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(PartialError::PayloadTooLarge { len: payload.len() });
        }
        let Some(mut record) = self.store.node(node).map_err(PartialError::Store)? else {
            return Err(PartialError::NotInScope { node });
        };
        let (id, lamport) = self.next_id()?;
        record.payload = PayloadState::Present {
            bytes: payload.clone(),
            set_by: id,
        };
        let op = Op::new(id, lamport, OpKind::SetPayload { node, payload });
        self.local(op, |me| me.store.put(&record))
    }

    /// Checks that every held node hangs under the scope root through held nodes, exactly once,
    /// and that the sibling and digest indexes match the records (reads the whole replica).
    pub fn check_invariants(&self) -> Result<(), PartialError<S::Error>> {
        let st = PartialError::Store;
        let mut seen: FxHashSet<NodeId> = FxHashSet::default();
        let mut stack = vec![self.meta.scope];
        while let Some(parent) = stack.pop() {
            for (pos, n) in self.all_children(parent).map_err(st)? {
                let r = self
                    .store
                    .node(n)
                    .map_err(st)?
                    .ok_or(PartialViolation::ChildIndex { node: n })?;
                if r.parent != parent || r.position != pos || !seen.insert(n) {
                    return Err(PartialViolation::ChildIndex { node: n }.into());
                }
                if self.store.by_digest(&gone_digest(n)).map_err(st)? != Some(n) {
                    return Err(PartialViolation::ChildIndex { node: n }.into());
                }
                stack.push(n);
            }
        }
        if seen.len() as u64 != self.store.count().map_err(st)? {
            // some held node is not reachable from the scope root through the index
            for n in self.store.node_ids().map_err(st)? {
                if !seen.contains(&n) {
                    let parent = self.store.parent(n).map_err(st)?;
                    return Err(match parent {
                        Some(p) if !self.is_parent_ok(p).map_err(st)? => {
                            PartialViolation::Orphan { node: n }
                        }
                        _ => PartialViolation::Unreachable { node: n },
                    }
                    .into());
                }
            }
            return Err(PartialViolation::ChildIndex {
                node: self.meta.scope,
            }
            .into());
        }
        Ok(())
    }
}

/// One level of a [`Subtree`] walk.
#[derive(Debug)]
struct Level {
    parent: NodeId,
    page: std::vec::IntoIter<(Position, NodeId)>,
    last: Option<(Position, NodeId)>,
    done: bool,
}

/// A depth-first walk of a partial replica's subtree (see [`PartialReplica::subtree`]): yields
/// each node below the root with its depth (1 for the root's children), in sibling order.
#[derive(Debug)]
pub struct Subtree<'a, S: PartialStore> {
    replica: &'a PartialReplica<S>,
    stack: Vec<Level>,
}

impl<S: PartialStore> Iterator for Subtree<'_, S> {
    type Item = Result<(NodeId, usize), S::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let depth = self.stack.len();
            let level = self.stack.last_mut()?;
            if let Some((pos, n)) = level.page.next() {
                level.last = Some((pos, n));
                self.stack.push(Level {
                    parent: n,
                    page: Vec::new().into_iter(),
                    last: None,
                    done: false,
                });
                return Some(Ok((n, depth)));
            }
            if level.done {
                self.stack.pop();
                continue;
            }
            let after = level.last.as_ref().map(|(p, n)| (p, *n));
            match self.replica.store.children(level.parent, after, PAGE) {
                Ok(page) => {
                    level.done = page.len() < PAGE;
                    level.page = page.into_iter();
                }
                Err(e) => {
                    self.stack.clear();
                    return Some(Err(e));
                }
            }
        }
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
