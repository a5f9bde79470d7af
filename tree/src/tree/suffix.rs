//! The log suffix after a late op, indexed so that an op which commutes with every op of it can
//! be spliced into the log without undoing and redoing the suffix (`spec/ops.md`, "Late ops
//! that commute with the suffix").
//!
//! The state at a time `t` inside the suffix is read without undoing anything: a node's parent
//! at `t` is the prior parent recorded by the first suffix entry after `t` that placed it (its
//! undo record), else its current parent ([`Rewind`]).

use rustc_hash::FxHashMap;

use crate::id::{LogKey, NodeId, OpId};
use crate::op::OpKind;
use crate::store::{LogEntry, Store, Undo};

/// The suffix of the log after the batch's first late op, indexed by node.
#[derive(Default)]
pub(crate) struct Suffix {
    /// `(node, key, parent before)` for every placement an entry changed, sorted by node and,
    /// within a node, by key.
    moves: Vec<(NodeId, LogKey, Option<NodeId>)>,
    /// `(node, key, op)` for every payload an entry wrote, sorted like `moves`.
    payloads: Vec<(NodeId, LogKey, OpId)>,
    /// Per node, the greatest key of an entry naming it (as the op's node or target parent, or
    /// in an undo record as the node or its prior parent), whatever the entry's effect.
    named: FxHashMap<NodeId, LogKey>,
    /// The greatest key of a delete in the suffix.
    last_delete: Option<LogKey>,
}

impl Suffix {
    pub(crate) fn clear(&mut self) {
        self.moves.clear();
        self.payloads.clear();
        self.named.clear();
        self.last_delete = None;
    }

    /// Indexes `entries` (the log after some key, in ascending key order), replacing what was
    /// indexed before.
    pub(crate) fn index(&mut self, entries: &[LogEntry]) {
        self.clear();
        for e in entries {
            let key = e.op.key();
            self.named.insert(e.op.node(), key);
            match e.op.kind() {
                OpKind::Create { parent, .. } | OpKind::Move { parent, .. } => {
                    self.named.insert(*parent, key);
                }
                OpKind::Delete { .. } => self.last_delete = Some(key),
                OpKind::SetPayload { .. } => {}
            }
            for u in &e.undo {
                match u {
                    Undo::Placement { node, prior } => {
                        let before = prior.as_ref().map(|p| p.parent);
                        self.moves.push((*node, key, before));
                        self.named.insert(*node, key);
                        if let Some(b) = before {
                            self.named.insert(b, key);
                        }
                    }
                    Undo::Payload { node, .. } => self.payloads.push((*node, key, e.op.id())),
                }
            }
        }
        // Stable: within a node the entries stay in key order.
        self.moves.sort_by_key(|m| m.0);
        self.payloads.sort_by_key(|p| p.0);
    }

    /// True if an entry after `at` names `node` (see `named`).
    pub(crate) fn names(&self, node: NodeId, at: LogKey) -> bool {
        self.named.get(&node).is_some_and(|k| *k > at)
    }

    /// True if a delete comes after `at`.
    pub(crate) fn deletes_after(&self, at: LogKey) -> bool {
        self.last_delete.is_some_and(|k| k > at)
    }

    /// The parent `node` had before the first entry after `at` that placed it (`None` inside:
    /// it did not exist), or `None` if no entry after `at` placed it.
    fn moved_after(&self, node: NodeId, at: LogKey) -> Option<Option<NodeId>> {
        let from = self.moves.partition_point(|m| m.0 < node);
        self.moves[from..]
            .iter()
            .take_while(|m| m.0 == node)
            .find(|m| m.1 > at)
            .map(|m| m.2)
    }

    /// The first entry after `at` that wrote the payload of `node`.
    pub(crate) fn payload_written_after(&self, node: NodeId, at: LogKey) -> Option<OpId> {
        let from = self.payloads.partition_point(|p| p.0 < node);
        self.payloads[from..]
            .iter()
            .take_while(|p| p.0 == node)
            .find(|p| p.1 > at)
            .map(|p| p.2)
    }

    /// The tree as it was immediately before the op with key `at` (which is not in the
    /// suffix), as far as parents go.
    pub(crate) fn at(&self, at: LogKey) -> Rewind<'_> {
        Rewind { suffix: self, at }
    }
}

/// Parents as they were at a time inside an indexed [`Suffix`], read without undoing.
#[derive(Clone, Copy)]
pub(crate) struct Rewind<'a> {
    suffix: &'a Suffix,
    at: LogKey,
}

impl<'a> Rewind<'a> {
    /// The parent of `node` at this time.
    pub(crate) fn parent<S: Store>(
        &self,
        store: &S,
        node: NodeId,
    ) -> Result<Option<NodeId>, S::Error> {
        match self.suffix.moved_after(node, self.at) {
            Some(before) => Ok(before),
            None => store.parent(node),
        }
    }

    /// The indexed suffix.
    pub(crate) fn suffix(&self) -> &'a Suffix {
        self.suffix
    }
}
