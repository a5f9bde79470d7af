//! The store's read cache: placements, child counts, per-replica log frontiers and the number of
//! pending ops, as the open batch sees them (`spec/sqlite.md` §Read cache).
//!
//! An applied op reads the same rows again and again: its own node before and after the write,
//! its parent's ancestors for the policy, the child count of TRASH for revival, its id in the
//! log and in `pending` for admission. Inside a batch the store holds SQLite's write lock, and
//! every write goes through the store, so each cached answer is kept exact by the write that
//! changes it. The cache is only consulted inside a batch. It outlives a batch only when the
//! batch was a top-level transaction that committed, and it is dropped when the next batch
//! begins if anything else wrote to the database meanwhile: another connection (`PRAGMA
//! data_version` changed) or this connection outside the store (`total_changes` changed). A
//! rollback drops it.

use rustc_hash::FxHashMap;

use crate::id::NodeId;
use crate::store::{PayloadRecord, Placement};

/// Most cached placements (and, separately, child counts and replicas) before the cache is
/// emptied: bounds its memory on very large batches and long sessions.
pub(super) const CACHE_LIMIT: usize = 1 << 14;

/// Most cached payloads before that part of the cache is emptied.
pub(super) const PAYLOAD_CACHE_LIMIT: usize = 1 << 12;

/// Largest payload kept in the cache (larger ones are read from SQLite each time), so the
/// payload cache holds at most [`PAYLOAD_CACHE_LIMIT`] × 1 KiB.
pub(super) const PAYLOAD_CACHE_BYTES: usize = 1 << 10;

/// Cached reads (see the module docs for when they are valid).
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// Node → its placement (`None`: the node has no row).
    pub(super) nodes: FxHashMap<NodeId, Option<Placement>>,
    /// Node → its payload (`None`: no row); only payloads of at most [`PAYLOAD_CACHE_BYTES`].
    pub(super) payloads: FxHashMap<NodeId, Option<PayloadRecord>>,
    /// Parent → number of rows with that parent.
    pub(super) children: FxHashMap<NodeId, u64>,
    /// Replica index → highest logged seq (no logged op of the replica has a greater one).
    pub(super) max_seq: FxHashMap<i64, u64>,
    /// Number of rows in `pending`.
    pub(super) pending: Option<u64>,
    /// `(PRAGMA data_version, total_changes)` when the last top-level batch committed: the cache
    /// is still exact at the next `begin` if both are unchanged.
    pub(super) committed_at: Option<(i64, u64)>,
    /// `PRAGMA data_version` when the open top-level batch began (no other connection can
    /// commit until it ends, so it is also the value after its commit).
    pub(super) begun_at: Option<i64>,
}

impl Cache {
    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.nodes.clear();
        self.payloads.clear();
        self.children.clear();
        self.max_seq.clear();
        self.pending = None;
        self.committed_at = None;
        self.begun_at = None;
    }

    /// Remembers a placement read from the database.
    pub(super) fn remember_node(&mut self, node: NodeId, placement: Option<Placement>) {
        if self.nodes.len() >= CACHE_LIMIT {
            self.nodes.clear();
        }
        self.nodes.insert(node, placement);
    }

    /// Remembers a payload read from the database or written (forgets it if too large).
    pub(super) fn remember_payload(&mut self, node: NodeId, payload: Option<&PayloadRecord>) {
        if payload.is_some_and(|p| p.bytes.len() > PAYLOAD_CACHE_BYTES) {
            self.payloads.remove(&node);
            return;
        }
        if self.payloads.len() >= PAYLOAD_CACHE_LIMIT {
            self.payloads.clear();
        }
        self.payloads.insert(node, payload.cloned());
    }

    /// Remembers a child count read from the database.
    pub(super) fn remember_children(&mut self, parent: NodeId, n: u64) {
        if self.children.len() >= CACHE_LIMIT {
            self.children.clear();
        }
        self.children.insert(parent, n);
    }

    /// Records that `node` moved from `old` (`None`: it had no row) to `new` (`None`: its row
    /// is gone). `old_known` is false when the old placement was not cached: then the child
    /// counts cannot be adjusted and are forgotten.
    pub(super) fn placed(
        &mut self,
        node: NodeId,
        old_known: bool,
        old_parent: Option<NodeId>,
        new: Option<&Placement>,
    ) {
        if !old_known {
            self.children.clear();
        } else {
            let new_parent = new.map(|p| p.parent);
            if old_parent != new_parent {
                if let Some(n) = old_parent.and_then(|p| self.children.get_mut(&p)) {
                    *n = n.saturating_sub(1);
                }
                if let Some(n) = new_parent.and_then(|p| self.children.get_mut(&p)) {
                    *n += 1;
                }
            }
        }
        self.remember_node(node, new.cloned());
    }

    /// Records that op `seq` of the replica with index `rep` was logged.
    pub(super) fn logged(&mut self, rep: i64, seq: u64) {
        if let Some(m) = self.max_seq.get_mut(&rep) {
            *m = (*m).max(seq);
        }
    }

    /// Remembers a replica's highest logged seq read from the database.
    pub(super) fn remember_max_seq(&mut self, rep: i64, seq: u64) {
        if self.max_seq.len() >= CACHE_LIMIT {
            self.max_seq.clear();
        }
        self.max_seq.insert(rep, seq);
    }
}
