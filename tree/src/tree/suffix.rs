//! The log suffix after a late op, indexed so that an op which commutes with every op of it can
//! be spliced into the log without undoing and redoing the suffix (`spec/ops.md`, "Late ops
//! that commute with the suffix").
//!
//! The state at a time `t` inside the suffix is read without undoing anything: a node's parent
//! at `t` is the prior parent recorded by the first suffix entry after `t` that placed it (its
//! undo record), else its current parent ([`Rewind`]).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::op::OpKind;
use crate::store::{LogEntry, Store, Undo};

/// Most entries kept indexed between batches; past it the index is dropped and rebuilt from the
/// next late op on.
const LIMIT: usize = 1 << 16;

/// The log after some key `from`, indexed by node. Kept between batches (concurrent writers'
/// late ops land near the end of the log batch after batch, so one index serves many batches):
/// every entry the engine logs is added; anything that rewrites logged entries' undo records
/// (an undo/redo pass, a re-decision) or may not have committed (a failed batch) drops it.
#[derive(Default)]
pub(crate) struct Suffix {
    /// Entries with a key greater than `from` are indexed (`None`: nothing is).
    from: Option<LogKey>,
    /// Entries indexed.
    len: usize,
    /// The log's length when the index was last brought up to date (another writer shows).
    log_len: u64,
    /// A batch started and has not finished: the index may hold entries that were rolled back.
    open: bool,
    /// `(node, key) → parent before` for every placement an entry changed.
    moves: BTreeMap<(NodeId, LogKey), Option<NodeId>>,
    /// `(node, key) → op` for every payload an entry wrote.
    payloads: BTreeMap<(NodeId, LogKey), OpId>,
    /// Per node, the greatest key of an entry naming it (as the op's node or target parent, or
    /// in an undo record as the node or its prior parent), whatever the entry's effect.
    named: FxHashMap<NodeId, LogKey>,
    /// The greatest key of an indexed delete.
    last_delete: Option<LogKey>,
}

impl Suffix {
    /// Drops the index.
    pub(crate) fn reset(&mut self) {
        if self.from.is_some() {
            self.moves.clear();
            self.payloads.clear();
            self.named.clear();
            self.last_delete = None;
            self.from = None;
            self.len = 0;
        }
    }

    /// At the start of a batch: drops the index if the last batch did not finish (it may have
    /// been rolled back) or the log's length (`log_len`, asked only while an index is kept)
    /// changed without the engine.
    pub(crate) fn begin<E>(&mut self, log_len: impl FnOnce() -> Result<u64, E>) -> Result<(), E> {
        if self.open || (self.active() && log_len()? != self.log_len) {
            self.reset();
        }
        self.open = true;
        Ok(())
    }

    /// At the end of a batch that completed (`log_len`: the log's length, asked only while an
    /// index is kept).
    pub(crate) fn finish<E>(&mut self, log_len: impl FnOnce() -> Result<u64, E>) -> Result<(), E> {
        if self.len > LIMIT {
            self.reset();
        }
        if self.active() {
            self.log_len = log_len()?;
        }
        self.open = false;
        Ok(())
    }

    /// True if every entry with a key greater than `key` is indexed.
    pub(crate) fn covers(&self, key: LogKey) -> bool {
        self.from.is_some_and(|f| f <= key)
    }

    /// True while an index is kept (entries logged from now on must be added).
    pub(crate) fn active(&self) -> bool {
        self.from.is_some()
    }

    /// Extends the index down to `key`, given `entries`: the log after `key`.
    pub(crate) fn extend(&mut self, key: LogKey, entries: &[LogEntry]) {
        let from = self.from;
        for e in entries {
            if from.is_some_and(|f| e.op.key() > f) {
                break;
            }
            self.add(e);
        }
        self.from = Some(key);
    }

    /// Indexes one entry.
    pub(crate) fn add(&mut self, e: &LogEntry) {
        let key = e.op.key();
        self.len += 1;
        self.name(e.op.node(), key);
        match e.op.kind() {
            OpKind::Create { parent, .. } | OpKind::Move { parent, .. } => self.name(*parent, key),
            OpKind::Delete { .. } => {
                self.last_delete = self.last_delete.max(Some(key));
            }
            OpKind::SetPayload { .. } => {}
        }
        for u in &e.undo {
            match u {
                Undo::Placement { node, prior } => {
                    let before = prior.as_ref().map(|p| p.parent);
                    self.moves.insert((*node, key), before);
                    self.name(*node, key);
                    if let Some(b) = before {
                        self.name(b, key);
                    }
                }
                Undo::Payload { node, .. } => {
                    self.payloads.insert((*node, key), e.op.id());
                }
            }
        }
    }

    fn name(&mut self, node: NodeId, key: LogKey) {
        let k = self.named.entry(node).or_insert(key);
        if *k < key {
            *k = key;
        }
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
        self.moves
            .range((node, at)..=(node, MAX_KEY))
            .find(|((_, k), _)| *k > at)
            .map(|(_, before)| *before)
    }

    /// The first entry after `at` that wrote the payload of `node`.
    pub(crate) fn payload_written_after(&self, node: NodeId, at: LogKey) -> Option<OpId> {
        self.payloads
            .range((node, at)..=(node, MAX_KEY))
            .find(|((_, k), _)| *k > at)
            .map(|(_, op)| *op)
    }

    /// The tree as it was immediately before the op with key `at` (which is not in the
    /// suffix), as far as parents go.
    pub(crate) fn at(&self, at: LogKey) -> Rewind<'_> {
        Rewind { suffix: self, at }
    }
}

/// The greatest possible log key.
const MAX_KEY: LogKey = LogKey::new(Lamport::new(u64::MAX), ReplicaId::from_bytes([0xff; 32]));

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
