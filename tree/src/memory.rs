//! The in-memory [`Store`]: the reference model other stores are property-tested against.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::ops::Bound;

use rustc_hash::FxHashMap;

use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::op::{Op, VersionVector};
use crate::position::Position;
use crate::store::{Child, Effect, LogEntry, PayloadRecord, Placement, Store, Undo};

/// One write, recorded inside a transaction so `rollback` can reverse it.
#[derive(Debug)]
enum Journal {
    Placement(NodeId, Option<Placement>),
    Payload(NodeId, Option<PayloadRecord>),
    LogInserted(OpId),
    LogUpdated(OpId, Effect, Vec<Undo>),
    PendingInserted(OpId, OpId),
    PendingTaken(OpId, Vec<Op>),
}

/// A [`Store`] held in memory (hash maps and ordered indexes). Never fails.
///
/// Transactions are real: writes between [`Store::begin`] and [`Store::rollback`] are undone
/// from a journal of the values they replaced.
#[derive(Debug, Default)]
pub struct MemoryStore {
    placements: FxHashMap<NodeId, Placement>,
    children: FxHashMap<NodeId, BTreeSet<(Position, NodeId)>>,
    payloads: FxHashMap<NodeId, PayloadRecord>,
    log: BTreeMap<LogKey, LogEntry>,
    keys: FxHashMap<OpId, LogKey>,
    max_seq: FxHashMap<ReplicaId, u64>,
    pending: FxHashMap<OpId, Vec<Op>>,
    pending_awaits: FxHashMap<OpId, OpId>,
    journal: Option<Vec<Journal>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&mut self, j: Journal) {
        if let Some(journal) = &mut self.journal {
            journal.push(j);
        }
    }

    fn place(&mut self, node: NodeId, placement: Option<Placement>) -> Option<Placement> {
        let old = match placement {
            Some(p) => {
                self.children
                    .entry(p.parent)
                    .or_default()
                    .insert((p.position.clone(), node));
                self.placements.insert(node, p)
            }
            None => self.placements.remove(&node),
        };
        if let Some(o) = &old {
            if let Some(set) = self.children.get_mut(&o.parent) {
                let same = self
                    .placements
                    .get(&node)
                    .is_some_and(|n| n.parent == o.parent && n.position == o.position);
                if !same {
                    set.remove(&(o.position.clone(), node));
                    if set.is_empty() {
                        self.children.remove(&o.parent);
                    }
                }
            }
        }
        old
    }

    fn log_remove(&mut self, id: OpId) {
        if let Some(key) = self.keys.remove(&id) {
            self.log.remove(&key);
            let seq = id.seq();
            // The log is gap-free per replica and rollback undoes in reverse, so the removed op
            // is the replica's last.
            if seq <= 1 {
                self.max_seq.remove(&id.replica());
            } else {
                self.max_seq.insert(id.replica(), seq - 1);
            }
        }
    }

    fn pending_put(&mut self, awaits: OpId, op: Op) {
        self.pending_awaits.insert(op.id(), awaits);
        self.pending.entry(awaits).or_default().push(op);
    }
}

impl Store for MemoryStore {
    type Error = Infallible;

    fn placement(&self, node: NodeId) -> Result<Option<Placement>, Infallible> {
        Ok(self.placements.get(&node).cloned())
    }

    fn parent(&self, node: NodeId) -> Result<Option<NodeId>, Infallible> {
        Ok(self.placements.get(&node).map(|p| p.parent))
    }

    fn set_placement(
        &mut self,
        node: NodeId,
        placement: Option<&Placement>,
    ) -> Result<(), Infallible> {
        let old = self.place(node, placement.cloned());
        self.record(Journal::Placement(node, old));
        Ok(())
    }

    fn payload(&self, node: NodeId) -> Result<Option<PayloadRecord>, Infallible> {
        Ok(self.payloads.get(&node).cloned())
    }

    fn payload_set_by(&self, node: NodeId) -> Result<Option<OpId>, Infallible> {
        Ok(self.payloads.get(&node).map(|p| p.set_by))
    }

    fn set_payload(
        &mut self,
        node: NodeId,
        payload: Option<&PayloadRecord>,
    ) -> Result<(), Infallible> {
        let old = match payload {
            Some(p) => self.payloads.insert(node, p.clone()),
            None => self.payloads.remove(&node),
        };
        self.record(Journal::Payload(node, old));
        Ok(())
    }

    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<Child>, Infallible> {
        let Some(set) = self.children.get(&parent) else {
            return Ok(Vec::new());
        };
        let lower = match after {
            Some((p, n)) => Bound::Excluded((p.clone(), n)),
            None => Bound::Unbounded,
        };
        Ok(set
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(position, node)| Child {
                node: *node,
                position: position.clone(),
            })
            .collect())
    }

    fn child_before(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
    ) -> Result<Option<Child>, Infallible> {
        let Some(set) = self.children.get(&parent) else {
            return Ok(None);
        };
        let upper = match before {
            Some((p, n)) => Bound::Excluded((p.clone(), n)),
            None => Bound::Unbounded,
        };
        Ok(set
            .range((Bound::Unbounded, upper))
            .next_back()
            .map(|(position, node)| Child {
                node: *node,
                position: position.clone(),
            }))
    }

    fn child_count(&self, parent: NodeId) -> Result<u64, Infallible> {
        Ok(self.children.get(&parent).map_or(0, |s| s.len() as u64))
    }

    fn node_count(&self) -> Result<u64, Infallible> {
        Ok(self.placements.len() as u64)
    }

    fn entry(&self, id: OpId) -> Result<Option<LogEntry>, Infallible> {
        Ok(self.keys.get(&id).and_then(|k| self.log.get(k)).cloned())
    }

    fn entry_lamport(&self, id: OpId) -> Result<Option<Lamport>, Infallible> {
        Ok(self.keys.get(&id).map(|k| k.lamport()))
    }

    fn log_insert(&mut self, entry: &LogEntry) -> Result<(), Infallible> {
        let id = entry.op.id();
        let key = entry.op.key();
        self.keys.insert(id, key);
        self.log.insert(key, entry.clone());
        let m = self.max_seq.entry(id.replica()).or_default();
        *m = (*m).max(id.seq());
        self.record(Journal::LogInserted(id));
        Ok(())
    }

    fn log_update(&mut self, id: OpId, effect: Effect, undo: &[Undo]) -> Result<(), Infallible> {
        let Some(e) = self.keys.get(&id).and_then(|k| self.log.get_mut(k)) else {
            return Ok(());
        };
        let old_effect = std::mem::replace(&mut e.effect, effect);
        let old_undo = std::mem::replace(&mut e.undo, undo.to_vec());
        self.record(Journal::LogUpdated(id, old_effect, old_undo));
        Ok(())
    }

    fn log_last(&self) -> Result<Option<LogKey>, Infallible> {
        Ok(self.log.keys().next_back().copied())
    }

    fn log_after(&self, key: LogKey) -> Result<Vec<LogEntry>, Infallible> {
        Ok(self
            .log
            .range((Bound::Excluded(key), Bound::Unbounded))
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn log_len(&self) -> Result<u64, Infallible> {
        Ok(self.log.len() as u64)
    }

    fn max_seq(&self, replica: ReplicaId) -> Result<u64, Infallible> {
        Ok(self.max_seq.get(&replica).copied().unwrap_or(0))
    }

    fn frontier(&self) -> Result<VersionVector, Infallible> {
        Ok(self.max_seq.iter().map(|(r, s)| (*r, *s)).collect())
    }

    fn max_lamport(&self) -> Result<Lamport, Infallible> {
        Ok(self
            .log
            .keys()
            .next_back()
            .map(|k| k.lamport())
            .unwrap_or_default())
    }

    fn pending_insert(&mut self, awaits: OpId, op: &Op) -> Result<(), Infallible> {
        self.pending_put(awaits, op.clone());
        self.record(Journal::PendingInserted(awaits, op.id()));
        Ok(())
    }

    fn pending_take(&mut self, awaits: OpId) -> Result<Vec<Op>, Infallible> {
        let ops = self.pending.remove(&awaits).unwrap_or_default();
        for op in &ops {
            self.pending_awaits.remove(&op.id());
        }
        if !ops.is_empty() {
            self.record(Journal::PendingTaken(awaits, ops.clone()));
        }
        Ok(ops)
    }

    fn pending_get(&self, id: OpId) -> Result<Option<Op>, Infallible> {
        Ok(self.pending_awaits.get(&id).and_then(|a| {
            self.pending
                .get(a)
                .and_then(|ops| ops.iter().find(|o| o.id() == id).cloned())
        }))
    }

    fn pending_len(&self) -> Result<u64, Infallible> {
        Ok(self.pending_awaits.len() as u64)
    }

    fn begin(&mut self) -> Result<(), Infallible> {
        self.journal = Some(Vec::new());
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Infallible> {
        self.journal = None;
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), Infallible> {
        let Some(journal) = self.journal.take() else {
            return Ok(());
        };
        for j in journal.into_iter().rev() {
            match j {
                Journal::Placement(node, old) => {
                    self.place(node, old);
                }
                Journal::Payload(node, old) => {
                    match old {
                        Some(p) => self.payloads.insert(node, p),
                        None => self.payloads.remove(&node),
                    };
                }
                Journal::LogInserted(id) => self.log_remove(id),
                Journal::LogUpdated(id, effect, undo) => {
                    if let Some(e) = self.keys.get(&id).and_then(|k| self.log.get_mut(k)) {
                        e.effect = effect;
                        e.undo = undo;
                    }
                }
                Journal::PendingInserted(awaits, id) => {
                    self.pending_awaits.remove(&id);
                    if let Some(ops) = self.pending.get_mut(&awaits) {
                        ops.retain(|o| o.id() != id);
                        if ops.is_empty() {
                            self.pending.remove(&awaits);
                        }
                    }
                }
                Journal::PendingTaken(awaits, ops) => {
                    for op in ops {
                        self.pending_put(awaits, op);
                    }
                }
            }
        }
        Ok(())
    }
}
