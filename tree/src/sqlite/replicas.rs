//! Replica interning (32-byte key ↔ compact integer) with its cache, and the open batch's row-count
//! changes, written at commit.

use rusqlite::{params, OptionalExtension};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{fixed, Result, SqliteStore, SqliteStoreError, Tx};
use crate::id::ReplicaId;

/// Replica interning cache, and count changes not yet written (flushed at commit).
#[derive(Debug, Default)]
pub(super) struct Replicas {
    /// Key → compact index.
    pub(super) idx: FxHashMap<ReplicaId, i64>,
    /// Compact index → key.
    pub(super) key: FxHashMap<i64, ReplicaId>,
    /// Change of the `nodes` and `ops` row counts in the open batch (flushed at commit).
    pub(super) counts: (i64, i64),
    /// Keys known to have no index, valid only inside the open batch (the write lock keeps
    /// other connections from adding them); cleared when a batch begins or ends.
    pub(super) unknown: FxHashSet<ReplicaId>,
}

impl Replicas {
    fn remember(&mut self, replica: ReplicaId, i: i64) {
        self.idx.insert(replica, i);
        self.key.insert(i, replica);
        self.unknown.remove(&replica);
    }
}

impl SqliteStore {
    /// The compact index of `replica`, if it has one.
    pub(super) fn replica_index(&self, replica: ReplicaId) -> Result<Option<i64>> {
        {
            let reps = self.reps.borrow();
            if let Some(&i) = reps.idx.get(&replica) {
                return Ok(Some(i));
            }
            if self.tx != Tx::None && reps.unknown.contains(&replica) {
                return Ok(None);
            }
        }
        let i: Option<i64> = self
            .conn
            .prepare_cached("SELECT idx FROM replicas WHERE key = ?1")?
            .query_row([replica.as_bytes()], |r| r.get(0))
            .optional()?;
        let mut reps = self.reps.borrow_mut();
        match i {
            Some(i) => reps.remember(replica, i),
            None if self.tx != Tx::None => {
                reps.unknown.insert(replica);
            }
            None => {}
        }
        Ok(i)
    }

    /// The compact index of `replica`, assigning one if needed (inside the current batch).
    pub(super) fn intern(&mut self, replica: ReplicaId) -> Result<i64> {
        if let Some(i) = self.replica_index(replica)? {
            return Ok(i);
        }
        self.conn
            .prepare_cached("INSERT INTO replicas(key) VALUES (?1)")?
            .execute([replica.as_bytes()])?;
        let i = self.conn.last_insert_rowid();
        self.reps.borrow_mut().remember(replica, i);
        Ok(i)
    }

    /// The replica key of a compact index.
    pub(super) fn replica_key(&self, i: i64) -> Result<ReplicaId> {
        if let Some(&k) = self.reps.borrow().key.get(&i) {
            return Ok(k);
        }
        let k: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT key FROM replicas WHERE idx = ?1")?
            .query_row([i], |r| r.get(0))
            .optional()?;
        let k = k.ok_or(SqliteStoreError::UnknownReplicaIndex(i))?;
        let k = ReplicaId::from_bytes(fixed(&k, "replicas", "key")?);
        self.reps.borrow_mut().remember(k, i);
        Ok(k)
    }

    /// Records a change of the node and op counts (written at commit, or now outside a batch).
    pub(super) fn count_delta(&mut self, nodes: i64, ops: i64) -> Result<()> {
        let c = &mut self.reps.get_mut().counts;
        c.0 += nodes;
        c.1 += ops;
        if self.tx == Tx::None {
            self.flush_counts()?;
        }
        Ok(())
    }

    /// Writes the batch's count changes to the `counts` table.
    pub(super) fn flush_counts(&self) -> Result<()> {
        let (nodes, ops) = std::mem::take(&mut self.reps.borrow_mut().counts);
        for (name, d) in [("nodes", nodes), ("ops", ops)] {
            if d != 0 {
                self.conn
                    .prepare_cached("UPDATE counts SET n = n + ?2 WHERE name = ?1")?
                    .execute(params![name, d])?;
            }
        }
        Ok(())
    }
}
