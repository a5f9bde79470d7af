//! The in-memory [`Store`]: the reference model other stores are property-tested against.

use std::collections::BTreeMap;
use std::convert::Infallible;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::op::{Op, VersionVector};
use crate::position::Position;
use crate::store::{Child, Effect, LogEntry, PayloadRecord, Placement, Store, Undo};

mod arena;
mod kids;
mod order;
use arena::Chunked;
use kids::Kids;
use order::LogOrder;

const NONE: u32 = u32::MAX;

/// One write, recorded inside a transaction so `rollback` can reverse it (large variants boxed
/// to keep the journal small).
#[derive(Debug)]
enum Journal {
    Placement(NodeId, Option<Box<Placement>>),
    Payload(NodeId, Option<Box<PayloadRecord>>),
    /// The last entry of the arena was inserted.
    LogInserted,
    LogUpdated(Box<(OpId, Effect, Vec<Undo>)>),
    PendingInserted(Box<(OpId, OpId)>),
    PendingTaken(Box<(OpId, Vec<Op>)>),
    /// The last document entry was inserted.
    DocEntryInserted,
    /// A held op was inserted or removed: its id and the op held before.
    Held(OpId, Option<Box<Op>>),
}

/// A [`Store`] held in memory (hash maps and ordered indexes). Never fails.
///
/// Transactions are real: writes between [`Store::begin`] and [`Store::rollback`] are undone
/// from a journal of the values they replaced.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// `places[slot]`: the placement of the node in that slot (see `index`).
    places: Chunked<Option<Placement>>,
    /// Number of placed nodes.
    placed: u64,
    /// Ancestor walks run on dense indexes: `index[node]` is the node's slot, `up[slot]` the
    /// parent's slot (`NONE`: not placed), `ids[slot]` the node.
    index: FxHashMap<NodeId, u32>,
    up: Vec<u32>,
    ids: Vec<NodeId>,
    children: FxHashMap<NodeId, Kids>,
    payloads: FxHashMap<NodeId, PayloadRecord>,
    /// Entries in insertion order; `order` indexes them by key, `replicas` by op id: entry
    /// `seq` of a replica is at `replicas[replica][seq - 1]` (the log is gap-free per replica).
    entries: Chunked<LogEntry>,
    order: LogOrder,
    replicas: FxHashMap<ReplicaId, Vec<u32>>,
    pending: FxHashMap<OpId, Vec<Op>>,
    pending_awaits: FxHashMap<OpId, OpId>,
    /// Document entries in arrival order, `(key, kind, bytes)`, and their keys.
    doc_entries: Vec<([u8; 32], u8, Vec<u8>)>,
    doc_keys: FxHashSet<[u8; 32]>,
    held: BTreeMap<OpId, Op>,
    journal: Vec<Journal>,
    in_txn: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn record(&mut self, j: Journal) {
        if self.in_txn {
            self.journal.push(j);
        }
    }

    #[inline]
    fn index(&self, id: &OpId) -> Option<usize> {
        let seqs = self.replicas.get(&id.replica())?;
        let i = *seqs.get(usize::try_from(id.seq().checked_sub(1)?).ok()?)?;
        (i != NONE).then_some(i as usize)
    }

    #[inline]
    fn get(&self, id: &OpId) -> Option<&LogEntry> {
        self.index(id).and_then(|i| self.entries.get(i))
    }

    #[inline]
    fn get_mut(&mut self, id: &OpId) -> Option<&mut LogEntry> {
        self.index(id).and_then(|i| self.entries.get_mut(i))
    }

    #[inline]
    fn slot(&mut self, node: NodeId) -> u32 {
        let (up, ids) = (&mut self.up, &mut self.ids);
        let places = &mut self.places;
        *self.index.entry(node).or_insert_with(|| {
            up.push(NONE);
            ids.push(node);
            places.push(None);
            (ids.len() - 1) as u32
        })
    }

    fn place(&mut self, node: NodeId, placement: Option<Placement>) -> Option<Placement> {
        let slot = self.slot(node) as usize;
        let old = match placement {
            Some(p) => {
                self.children
                    .entry(p.parent)
                    .or_default()
                    .insert((p.position.clone(), node));
                self.up[slot] = self.slot(p.parent);
                self.places.get_mut(slot).and_then(|x| x.replace(p))
            }
            None => {
                self.up[slot] = NONE;
                self.places.get_mut(slot).and_then(|x| x.take())
            }
        };
        match (&old, self.places.get(slot).and_then(|x| x.as_ref())) {
            (None, Some(_)) => self.placed += 1,
            (Some(_), None) => self.placed -= 1,
            _ => {}
        }
        if let Some(o) = &old {
            if let Some(set) = self.children.get_mut(&o.parent) {
                let same = self
                    .places
                    .get(slot)
                    .and_then(|x| x.as_ref())
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

    /// Removes the most recently inserted entry (rollback undoes inserts in reverse).
    fn log_remove_last(&mut self) {
        if let Some(e) = self.entries.pop() {
            let id = e.op.id();
            self.order.remove(&e.op.key());
            // Rollback undoes in reverse, so the removed op is its replica's last.
            if let Some(seqs) = self.replicas.get_mut(&id.replica()) {
                seqs.pop();
                while seqs.last() == Some(&NONE) {
                    seqs.pop();
                }
                if seqs.is_empty() {
                    self.replicas.remove(&id.replica());
                }
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

    #[inline]
    fn placement(&self, node: NodeId) -> Result<Option<Placement>, Infallible> {
        Ok(self
            .index
            .get(&node)
            .and_then(|&i| self.places.get(i as usize)?.clone()))
    }

    #[inline]
    fn parent(&self, node: NodeId) -> Result<Option<NodeId>, Infallible> {
        Ok(self
            .index
            .get(&node)
            .and_then(|&i| self.ids.get(*self.up.get(i as usize)? as usize))
            .copied())
    }

    #[inline]
    fn is_within(&self, node: NodeId, root: NodeId) -> Result<bool, Infallible> {
        if node == root {
            return Ok(true);
        }
        let (Some(&start), Some(&target)) = (self.index.get(&node), self.index.get(&root)) else {
            return Ok(false);
        };
        let mut cur = self.up[start as usize];
        while cur != NONE {
            if cur == target {
                return Ok(true);
            }
            cur = self.up[cur as usize];
        }
        Ok(false)
    }

    #[inline]
    fn set_placement(
        &mut self,
        node: NodeId,
        placement: Option<&Placement>,
    ) -> Result<(), Infallible> {
        let old = self.place(node, placement.cloned());
        if self.in_txn {
            self.journal
                .push(Journal::Placement(node, old.map(Box::new)));
        }
        Ok(())
    }

    #[inline]
    fn payload(&self, node: NodeId) -> Result<Option<PayloadRecord>, Infallible> {
        Ok(self.payloads.get(&node).cloned())
    }

    #[inline]
    fn payload_set_by(&self, node: NodeId) -> Result<Option<OpId>, Infallible> {
        Ok(self.payloads.get(&node).map(|p| p.set_by))
    }

    #[inline]
    fn set_payload(
        &mut self,
        node: NodeId,
        payload: Option<&PayloadRecord>,
    ) -> Result<(), Infallible> {
        let old = match payload {
            Some(p) => self.payloads.insert(node, p.clone()),
            None => self.payloads.remove(&node),
        };
        if self.in_txn {
            self.journal.push(Journal::Payload(node, old.map(Box::new)));
        }
        Ok(())
    }

    #[inline]
    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<Child>, Infallible> {
        let Some(kids) = self.children.get(&parent) else {
            return Ok(Vec::new());
        };
        let after = after.map(|(p, n)| (p.clone(), n));
        Ok(kids.page(after.as_ref(), limit))
    }

    #[inline]
    fn child_before(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
    ) -> Result<Option<Child>, Infallible> {
        let Some(kids) = self.children.get(&parent) else {
            return Ok(None);
        };
        let before = before.map(|(p, n)| (p.clone(), n));
        Ok(kids.before(before.as_ref()))
    }

    #[inline]
    fn child_count(&self, parent: NodeId) -> Result<u64, Infallible> {
        Ok(self.children.get(&parent).map_or(0, |s| s.len() as u64))
    }

    #[inline]
    fn node_count(&self) -> Result<u64, Infallible> {
        Ok(self.placed)
    }

    #[inline]
    fn entry(&self, id: OpId) -> Result<Option<LogEntry>, Infallible> {
        Ok(self.get(&id).cloned())
    }

    #[inline]
    fn entry_lamport(&self, id: OpId) -> Result<Option<Lamport>, Infallible> {
        Ok(self.get(&id).map(|e| e.op.lamport()))
    }

    #[inline]
    fn log_insert(&mut self, entry: &LogEntry) -> Result<(), Infallible> {
        self.log_push(entry.clone())
    }

    #[inline]
    fn log_push(&mut self, entry: LogEntry) -> Result<(), Infallible> {
        let id = entry.op.id();
        let index = self.entries.len() as u32;
        self.order.insert(entry.op.key(), index);
        self.entries.push(entry);
        let seqs = self.replicas.entry(id.replica()).or_default();
        let slot = usize::try_from(id.seq().saturating_sub(1)).unwrap_or(usize::MAX);
        if slot == seqs.len() {
            seqs.push(index);
        } else {
            // Out-of-order insert (the engine never does this): keep the index correct anyway.
            if slot > seqs.len() {
                seqs.resize(slot + 1, NONE);
            }
            seqs[slot] = index;
        }
        self.record(Journal::LogInserted);
        Ok(())
    }

    #[inline]
    fn log_update(&mut self, id: OpId, effect: Effect, undo: &[Undo]) -> Result<(), Infallible> {
        let Some(e) = self.get_mut(&id) else {
            return Ok(());
        };
        let old_effect = std::mem::replace(&mut e.effect, effect);
        let old_undo = std::mem::replace(&mut e.undo, undo.to_vec());
        self.record(Journal::LogUpdated(Box::new((id, old_effect, old_undo))));
        Ok(())
    }

    #[inline]
    fn log_last(&self) -> Result<Option<LogKey>, Infallible> {
        Ok(self.order.last())
    }

    #[inline]
    fn log_after(&self, key: LogKey) -> Result<Vec<LogEntry>, Infallible> {
        Ok(self
            .order
            .after(Some(key))
            .into_iter()
            .filter_map(|i| self.entries.get(i as usize).cloned())
            .collect())
    }

    #[inline]
    fn log_len(&self) -> Result<u64, Infallible> {
        Ok(self.entries.len() as u64)
    }

    #[inline]
    fn max_seq(&self, replica: ReplicaId) -> Result<u64, Infallible> {
        Ok(self.replicas.get(&replica).map_or(0, |s| s.len() as u64))
    }

    #[inline]
    fn frontier(&self) -> Result<VersionVector, Infallible> {
        Ok(self
            .replicas
            .iter()
            .map(|(r, s)| (*r, s.len() as u64))
            .collect())
    }

    #[inline]
    fn max_lamport(&self) -> Result<Lamport, Infallible> {
        Ok(self.order.last().map(|k| k.lamport()).unwrap_or_default())
    }

    #[inline]
    fn pending_insert(&mut self, awaits: OpId, op: &Op) -> Result<(), Infallible> {
        self.pending_put(awaits, op.clone());
        self.record(Journal::PendingInserted(Box::new((awaits, op.id()))));
        Ok(())
    }

    #[inline]
    fn pending_take(&mut self, awaits: OpId) -> Result<Vec<Op>, Infallible> {
        let ops = self.pending.remove(&awaits).unwrap_or_default();
        for op in &ops {
            self.pending_awaits.remove(&op.id());
        }
        if !ops.is_empty() {
            self.record(Journal::PendingTaken(Box::new((awaits, ops.clone()))));
        }
        Ok(ops)
    }

    #[inline]
    fn pending_get(&self, id: OpId) -> Result<Option<Op>, Infallible> {
        Ok(self.pending_awaits.get(&id).and_then(|a| {
            self.pending
                .get(a)
                .and_then(|ops| ops.iter().find(|o| o.id() == id).cloned())
        }))
    }

    #[inline]
    fn pending_len(&self) -> Result<u64, Infallible> {
        Ok(self.pending_awaits.len() as u64)
    }

    fn doc_entry_insert(
        &mut self,
        key: &[u8; 32],
        kind: u8,
        bytes: &[u8],
    ) -> Result<bool, Infallible> {
        if !self.doc_keys.insert(*key) {
            return Ok(false);
        }
        self.doc_entries.push((*key, kind, bytes.to_vec()));
        self.record(Journal::DocEntryInserted);
        Ok(true)
    }

    fn doc_entries(&self) -> Result<Vec<(u8, Vec<u8>)>, Infallible> {
        Ok(self
            .doc_entries
            .iter()
            .map(|(_, k, b)| (*k, b.clone()))
            .collect())
    }

    fn held_insert(&mut self, op: &Op) -> Result<(), Infallible> {
        let old = self.held.insert(op.id(), op.clone());
        self.record(Journal::Held(op.id(), old.map(Box::new)));
        Ok(())
    }

    fn held_remove(&mut self, id: OpId) -> Result<(), Infallible> {
        if let Some(old) = self.held.remove(&id) {
            self.record(Journal::Held(id, Some(Box::new(old))));
        }
        Ok(())
    }

    fn held_ops(&self) -> Result<Vec<Op>, Infallible> {
        Ok(self.held.values().cloned().collect())
    }

    #[inline]
    fn begin(&mut self) -> Result<(), Infallible> {
        self.journal.clear();
        self.in_txn = true;
        Ok(())
    }

    #[inline]
    fn commit(&mut self) -> Result<(), Infallible> {
        self.journal.clear();
        self.in_txn = false;
        Ok(())
    }

    #[inline]
    fn rollback(&mut self) -> Result<(), Infallible> {
        if !self.in_txn {
            return Ok(());
        }
        self.in_txn = false;
        let journal = std::mem::take(&mut self.journal);
        for j in journal.into_iter().rev() {
            match j {
                Journal::Placement(node, old) => {
                    self.place(node, old.map(|b| *b));
                }
                Journal::Payload(node, old) => {
                    match old {
                        Some(p) => self.payloads.insert(node, *p),
                        None => self.payloads.remove(&node),
                    };
                }
                Journal::LogInserted => self.log_remove_last(),
                Journal::LogUpdated(b) => {
                    let (id, effect, undo) = *b;
                    if let Some(e) = self.get_mut(&id) {
                        e.effect = effect;
                        e.undo = undo;
                    }
                }
                Journal::PendingInserted(b) => {
                    let (awaits, id) = *b;
                    self.pending_awaits.remove(&id);
                    if let Some(ops) = self.pending.get_mut(&awaits) {
                        ops.retain(|o| o.id() != id);
                        if ops.is_empty() {
                            self.pending.remove(&awaits);
                        }
                    }
                }
                Journal::PendingTaken(b) => {
                    let (awaits, ops) = *b;
                    for op in ops {
                        self.pending_put(awaits, op);
                    }
                }
                Journal::DocEntryInserted => {
                    if let Some((key, _, _)) = self.doc_entries.pop() {
                        self.doc_keys.remove(&key);
                    }
                }
                Journal::Held(id, old) => {
                    match old {
                        Some(op) => self.held.insert(id, *op),
                        None => self.held.remove(&id),
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Lamport;
    use crate::op::OpKind;

    fn snapshot(s: &MemoryStore) -> String {
        let mut placements: Vec<_> = s
            .ids
            .iter()
            .zip(s.places.iter())
            .filter_map(|(n, p)| Some((n, p.as_ref()?)))
            .collect();
        placements.sort_by_key(|(n, _)| **n);
        let mut payloads: Vec<_> = s.payloads.iter().collect();
        payloads.sort_by_key(|(n, _)| **n);
        let mut pending: Vec<_> = s.pending_awaits.iter().collect();
        pending.sort();
        let mut children: Vec<_> = s.children.iter().collect();
        children.sort_by_key(|(n, _)| **n);
        let log: Vec<_> = s
            .order
            .after(None)
            .into_iter()
            .filter_map(|i| s.entries.get(i as usize))
            .collect();
        format!(
            "{placements:?}{payloads:?}{pending:?}{children:?}{log:?}{:?}{:?}{:?}",
            s.frontier(),
            s.doc_entries,
            s.held
        )
    }

    #[test]
    fn rollback_restores_every_write() {
        let r = ReplicaId::from_bytes([1; 32]);
        let n = |b: u8| NodeId::from_bytes([b; 16]);
        let pos = Position::from_bytes(&[0x80, 1]);
        let op = |seq: u64| {
            Op::new(
                OpId::new(r, seq),
                Lamport::new(seq),
                OpKind::Move {
                    node: n(1),
                    parent: NodeId::ROOT,
                    position: pos.clone(),
                },
            )
        };
        let place = |parent, by| Placement {
            parent,
            position: pos.clone(),
            placed_by: OpId::new(r, by),
        };
        let mut s = MemoryStore::new();
        s.begin().unwrap();
        s.set_placement(n(1), Some(&place(NodeId::ROOT, 1)))
            .unwrap();
        s.log_insert(&LogEntry {
            op: op(1),
            effect: Effect::Applied,
            undo: vec![],
        })
        .unwrap();
        s.pending_insert(OpId::new(r, 2), &op(3)).unwrap();
        assert!(s.doc_entry_insert(&[1; 32], 0x10, b"a").unwrap());
        s.held_insert(&op(5)).unwrap();
        s.commit().unwrap();
        let before = snapshot(&s);

        s.begin().unwrap();
        s.set_placement(n(1), Some(&place(n(2), 2))).unwrap();
        s.set_placement(n(2), Some(&place(NodeId::ROOT, 2)))
            .unwrap();
        s.set_payload(
            n(1),
            Some(&PayloadRecord {
                bytes: vec![1],
                set_by: OpId::new(r, 2),
            }),
        )
        .unwrap();
        s.log_update(OpId::new(r, 1), Effect::Denied, &[]).unwrap();
        s.log_insert(&LogEntry {
            op: op(2),
            effect: Effect::Applied,
            undo: vec![],
        })
        .unwrap();
        assert_eq!(s.pending_take(OpId::new(r, 2)).unwrap().len(), 1);
        s.pending_insert(OpId::new(r, 9), &op(10)).unwrap();
        assert!(!s.doc_entry_insert(&[1; 32], 0x10, b"a").unwrap());
        assert!(s.doc_entry_insert(&[2; 32], 0x12, b"b").unwrap());
        s.held_remove(OpId::new(r, 5)).unwrap();
        s.held_insert(&op(6)).unwrap();
        assert_ne!(snapshot(&s), before);
        s.rollback().unwrap();
        assert_eq!(snapshot(&s), before);
        assert_eq!(s.max_seq(r).unwrap(), 1);
        assert_eq!(s.pending_get(OpId::new(r, 3)).unwrap(), Some(op(3)));
        assert_eq!(s.held_ops().unwrap(), vec![op(5)]);
        assert_eq!(s.doc_entries().unwrap(), vec![(0x10, b"a".to_vec())]);
    }
}
