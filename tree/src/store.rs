//! The storage trait: op log + materialized tree. The in-memory store is its reference model.
//!
//! The engine (`Tree`) is the only writer; it drives a store through these primitive reads and
//! writes inside one `begin`/`commit` per applied batch. A store keeps no semantics of its own: no
//! cycle checks, no ordering decisions. Every method is a plain read or write so that any two
//! stores given the same calls hold the same state (the SQLite store is property-tested against
//! [`crate::MemoryStore`]).

use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::op::{Op, Payload, VersionVector};
use crate::position::Position;

/// Where a node sits and which op put it there.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Placement {
    /// The parent (ROOT, TRASH or a user node).
    pub parent: NodeId,
    /// Position among the parent's children.
    pub position: Position,
    /// The create, move or delete op that put the node here (or the op that revived it).
    pub placed_by: OpId,
}

/// A node's payload and the op that set it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PayloadRecord {
    /// The bytes.
    pub bytes: Payload,
    /// The create or set-payload op that wrote them.
    pub set_by: OpId,
}

/// A child in sibling order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Child {
    /// The child node.
    pub node: NodeId,
    /// Its position under the parent.
    pub position: Position,
}

/// How a logged op took effect when last (re)applied. Persisted; re-decided on redo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Effect {
    /// The op changed the tree.
    Applied,
    /// A move that would have made the node its own ancestor: a no-op that stays in the log.
    SkippedCycle,
    /// A delete that had not seen content now in the subtree: a no-op (`spec/delete.md`).
    SkippedUnseen,
    /// The policy denied the op: a no-op that stays in the log.
    Denied,
}

impl Effect {
    /// Stable code for storage.
    pub fn code(self) -> u8 {
        match self {
            Effect::Applied => 0,
            Effect::SkippedCycle => 1,
            Effect::SkippedUnseen => 2,
            Effect::Denied => 3,
        }
    }
    /// Inverse of [`Effect::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Effect::Applied,
            1 => Effect::SkippedCycle,
            2 => Effect::SkippedUnseen,
            3 => Effect::Denied,
            _ => return None,
        })
    }
}

/// The prior state of something an op changed, recorded so the op can be undone without replay.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Undo {
    /// `node` was at `prior` (`None`: it did not exist) before the op.
    Placement {
        node: NodeId,
        prior: Option<Placement>,
    },
    /// `node` had payload `prior` before the op.
    Payload {
        node: NodeId,
        prior: Option<PayloadRecord>,
    },
}

/// One op in the log with its current effect and undo records (applied in order, undone in reverse).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LogEntry {
    /// The op.
    pub op: Op,
    /// How it took effect.
    pub effect: Effect,
    /// What it changed, to restore on undo.
    pub undo: Vec<Undo>,
}

/// Storage for one document: op log, materialized tree, payloads, pending ops.
///
/// ROOT and TRASH are implicit: they never have a placement. Every other node that exists has
/// exactly one placement.
pub trait Store {
    /// The store's error (I/O, corruption). The in-memory store uses `Infallible`.
    type Error: std::error::Error + Send + Sync + 'static;

    // ---- materialized tree ----

    /// Where `node` sits, if it exists.
    fn placement(&self, node: NodeId) -> Result<Option<Placement>, Self::Error>;
    /// Places `node` (`None` removes it). Maintains the ordered-children index.
    fn set_placement(
        &mut self,
        node: NodeId,
        placement: Option<&Placement>,
    ) -> Result<(), Self::Error>;
    /// The parent of `node`, if it exists. Provided; stores may answer it more cheaply than
    /// [`Store::placement`] (ancestor walks call it once per level).
    fn parent(&self, node: NodeId) -> Result<Option<NodeId>, Self::Error> {
        Ok(self.placement(node)?.map(|p| p.parent))
    }
    /// True if `node` is `root` or a descendant of it (walks `node`'s ancestors; the tree is
    /// acyclic, so the walk ends). Provided; the engine's cycle checks and `is_deleted` call it,
    /// so stores may answer it without a call per level.
    fn is_within(&self, node: NodeId, root: NodeId) -> Result<bool, Self::Error> {
        let mut n = node;
        loop {
            if n == root {
                return Ok(true);
            }
            if n.is_reserved() {
                return Ok(false);
            }
            match self.parent(n)? {
                Some(p) => n = p,
                None => return Ok(false),
            }
        }
    }
    /// The op that set the payload of `node`, without reading the bytes. Provided; stores may
    /// answer it more cheaply than [`Store::payload`] (a delete checks it for a whole subtree).
    fn payload_set_by(&self, node: NodeId) -> Result<Option<OpId>, Self::Error> {
        Ok(self.payload(node)?.map(|p| p.set_by))
    }
    /// The payload of `node`.
    fn payload(&self, node: NodeId) -> Result<Option<PayloadRecord>, Self::Error>;
    /// Sets (`None` clears) the payload of `node`.
    fn set_payload(
        &mut self,
        node: NodeId,
        payload: Option<&PayloadRecord>,
    ) -> Result<(), Self::Error>;
    /// Up to `limit` children of `parent` in `(position, node)` order, strictly after the cursor
    /// `after` (`None`: from the first child). A keyset page: cost is O(limit + log n).
    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<Child>, Self::Error>;
    /// The child of `parent` immediately before the cursor `before` (`None`: the last child).
    fn child_before(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
    ) -> Result<Option<Child>, Self::Error>;
    /// Number of children of `parent`.
    fn child_count(&self, parent: NodeId) -> Result<u64, Self::Error>;
    /// Number of nodes with a placement (live or in TRASH; ROOT and TRASH not counted).
    fn node_count(&self) -> Result<u64, Self::Error>;

    // ---- op log ----

    /// The logged entry of op `id`, if logged.
    fn entry(&self, id: OpId) -> Result<Option<LogEntry>, Self::Error>;
    /// The Lamport timestamp of the logged op `id`. Provided; stores may answer it without
    /// reading the whole entry (checked for every applied op's predecessor).
    fn entry_lamport(&self, id: OpId) -> Result<Option<Lamport>, Self::Error> {
        Ok(self.entry(id)?.map(|e| e.op.lamport()))
    }
    /// Adds a new entry (its key is not yet in the log).
    fn log_insert(&mut self, entry: &LogEntry) -> Result<(), Self::Error>;
    /// Adds a new entry, taking ownership. Provided (calls [`Store::log_insert`]); stores that keep
    /// entries in memory override it to avoid a copy.
    fn log_push(&mut self, entry: LogEntry) -> Result<(), Self::Error> {
        self.log_insert(&entry)
    }
    /// Replaces the effect and undo records of the logged op `id` after a redo.
    fn log_update(&mut self, id: OpId, effect: Effect, undo: &[Undo]) -> Result<(), Self::Error>;
    /// The greatest key in the log.
    fn log_last(&self) -> Result<Option<LogKey>, Self::Error>;
    /// Entries with key strictly greater than `key`, in ascending order.
    fn log_after(&self, key: LogKey) -> Result<Vec<LogEntry>, Self::Error>;
    /// Number of logged ops.
    fn log_len(&self) -> Result<u64, Self::Error>;
    /// Highest logged seq of `replica` (the log is gap-free per replica, so this is its frontier).
    fn max_seq(&self, replica: ReplicaId) -> Result<u64, Self::Error>;
    /// Highest logged seq of every replica.
    fn frontier(&self) -> Result<VersionVector, Self::Error>;
    /// Greatest Lamport timestamp in the log (0 when empty).
    fn max_lamport(&self) -> Result<Lamport, Self::Error> {
        Ok(self.log_last()?.map(|k| k.lamport()).unwrap_or_default())
    }

    // ---- pending ops (waiting for an op they depend on) ----

    /// Parks `op` until the op `awaits` is logged.
    fn pending_insert(&mut self, awaits: OpId, op: &Op) -> Result<(), Self::Error>;
    /// Removes and returns the ops parked on `awaits`.
    fn pending_take(&mut self, awaits: OpId) -> Result<Vec<Op>, Self::Error>;
    /// A parked op with id `id`, if any.
    fn pending_get(&self, id: OpId) -> Result<Option<Op>, Self::Error>;
    /// Number of parked ops.
    fn pending_len(&self) -> Result<u64, Self::Error>;

    // ---- document entries and held ops (for a policy layer; opaque to the engine) ----

    /// Adds a document entry of `kind` with `bytes` under `key` (a digest the caller derives
    /// from the entry) unless an entry with that key is stored; returns whether it was added.
    /// Entries are kept in arrival order. The engine never calls it: a policy layer (e.g. the
    /// authorized apply's delegations, chains and revocations) writes its inputs here, inside
    /// the transaction of the batch that brought them, so a reopened store still has them.
    fn doc_entry_insert(
        &mut self,
        key: &[u8; 32],
        kind: u8,
        bytes: &[u8],
    ) -> Result<bool, Self::Error>;
    /// Every document entry as `(kind, bytes)`, in arrival order.
    fn doc_entries(&self) -> Result<Vec<(u8, Vec<u8>)>, Self::Error>;
    /// Holds `op` outside the log (waiting for something the engine does not know, such as a
    /// proof); replaces a held op with the same id.
    fn held_insert(&mut self, op: &Op) -> Result<(), Self::Error>;
    /// Removes the held op `id` (nothing if it is not held).
    fn held_remove(&mut self, id: OpId) -> Result<(), Self::Error>;
    /// Every held op, in op-id order.
    fn held_ops(&self) -> Result<Vec<Op>, Self::Error>;

    // ---- transactions ----

    /// Starts the transaction of one applied batch.
    fn begin(&mut self) -> Result<(), Self::Error>;
    /// Commits the batch.
    fn commit(&mut self) -> Result<(), Self::Error>;
    /// Abandons the batch after a store error; the store is as before `begin`.
    fn rollback(&mut self) -> Result<(), Self::Error>;
}
