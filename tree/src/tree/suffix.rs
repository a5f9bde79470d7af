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

/// Most entries kept indexed between batches; past it the index is dropped and rebuilt from the
/// next late op on.
const LIMIT: usize = 1 << 13;

/// Fewest entries a batch must have read to index the suffix for the index to be kept after the
/// batch: below it, reading the suffix again is cheaper than adding every logged entry (a
/// replica whose late ops sort just before its own last few).
const KEEP_MIN: usize = 256;

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
    /// The index is kept after this batch (and logged entries are added to it).
    keep: bool,
    /// The log's length when the index was last brought up to date (another writer shows).
    log_len: u64,
    /// A batch started and has not finished: the index may hold entries that were rolled back.
    open: bool,
    /// Per node, `(key, parent before)` for every placement an entry changed.
    moves: FxHashMap<NodeId, History<Option<NodeId>>>,
    /// Per node, `(key, op)` for every payload an entry wrote.
    payloads: FxHashMap<NodeId, History<OpId>>,
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
            self.keep = false;
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
        if !self.keep || self.len > LIMIT {
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
    fn active(&self) -> bool {
        self.from.is_some()
    }

    /// Extends the index down to `key`, given `entries`: the log after `key`.
    pub(crate) fn extend(&mut self, key: LogKey, entries: &[LogEntry]) {
        let from = self.from;
        let mut read = 0;
        for e in entries {
            if from.is_some_and(|f| e.op.key() > f) {
                break;
            }
            self.index(e);
            read += 1;
        }
        self.from = Some(key);
        self.keep |= read >= KEEP_MIN;
    }

    /// Adds an entry the engine logs, if the index is kept beyond this batch. (Within a batch,
    /// late ops come in key order, so an entry logged now never follows a later one's key.)
    pub(crate) fn add(&mut self, e: &LogEntry) {
        if self.keep {
            self.index(e);
        }
    }

    fn index(&mut self, e: &LogEntry) {
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
                    record(&mut self.moves, *node, key, before);
                    self.name(*node, key);
                    if let Some(b) = before {
                        self.name(b, key);
                    }
                }
                Undo::Payload { node, .. } => {
                    record(&mut self.payloads, *node, key, e.op.id());
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
        self.moves.get(&node)?.first_after(at)
    }

    /// The first entry after `at` that wrote the payload of `node`.
    pub(crate) fn payload_written_after(&self, node: NodeId, at: LogKey) -> Option<OpId> {
        self.payloads.get(&node)?.first_after(at)
    }

    /// The tree as it was immediately before the op with key `at` (which is not in the
    /// suffix), as far as parents go.
    pub(crate) fn at(&self, at: LogKey) -> Rewind<'_> {
        Rewind { suffix: self, at }
    }
}

/// A node's indexed changes, `(key, value)`, in the order they were indexed (not key order:
/// spliced entries come before entries indexed earlier); most nodes have one.
struct History<T> {
    first: (LogKey, T),
    more: Vec<(LogKey, T)>,
}

impl<T: Copy> History<T> {
    /// The value of the change with the smallest key above `at`.
    fn first_after(&self, at: LogKey) -> Option<T> {
        std::iter::once(&self.first)
            .chain(&self.more)
            .filter(|(k, _)| *k > at)
            .min_by_key(|(k, _)| *k)
            .map(|(_, v)| *v)
    }
}

fn record<T>(map: &mut FxHashMap<NodeId, History<T>>, node: NodeId, key: LogKey, value: T) {
    match map.entry(node) {
        std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().more.push((key, value)),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(History {
                first: (key, value),
                more: Vec::new(),
            });
        }
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
