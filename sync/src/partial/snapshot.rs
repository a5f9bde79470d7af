//! Persistence of a [`PartialReplica`]: a self-contained snapshot.
//!
//! ```text
//! snapshot = magic:"cnpyPR01" scope:[16] replica:[32] checkpoint:bytes last_seq:varint
//!            tainted:u8 path:bytes count:varint record{count} count:varint op:bytes{count}
//! ```
//! `checkpoint` and `path` are encoded Checkpoint and Path messages (`spec/sync.md`), records as
//! in Nodes, ops as in `spec/ops.md`.

use canopy_tree::{NodeId, Op, ReplicaId};

use super::{never, MemoryPartial, PartialError, PartialReplica, PartialStore, SnapshotError};
use crate::wire::{put_record, put_varint, Message, Reader, WireError};

const SNAPSHOT_MAGIC: &[u8; 8] = b"cnpyPR01";

impl PartialReplica<MemoryPartial> {
    // ---- persistence ----

    /// A self-contained snapshot (scope, replica, last synced frontier, counters, path, nodes and
    /// own ops) to persist between sessions; [`PartialReplica::decode`] restores it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        let meta = &self.meta;
        out.extend_from_slice(meta.scope.as_bytes());
        out.extend_from_slice(meta.replica.as_bytes());
        let m = Message::Checkpoint {
            frontier: meta.since.clone(),
            max_lamport: meta.max_lamport,
        }
        .encode();
        put_bytes(&mut out, &m);
        put_varint(&mut out, meta.last_seq);
        out.push(u8::from(meta.tainted));
        let p = Message::Path {
            entries: meta.path.clone(),
            total: 0,
            reset: false,
        }
        .encode();
        put_bytes(&mut out, &p);
        let records = self.records();
        put_varint(&mut out, records.len() as u64);
        for r in &records {
            put_record(&mut out, r);
        }
        put_varint(&mut out, self.own.len() as u64);
        for op in &self.own {
            put_bytes(&mut out, &op.encode());
        }
        out
    }

    /// Restores a snapshot written by [`PartialReplica::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(8)? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Magic);
        }
        let scope = NodeId::from_bytes(r.array()?);
        let replica = ReplicaId::from_bytes(r.array()?);
        let mut me = PartialReplica::new(scope, replica);
        match Message::decode(r.bytes()?)? {
            Message::Checkpoint {
                frontier,
                max_lamport,
            } => {
                me.meta.since = frontier;
                me.meta.max_lamport = max_lamport;
            }
            _ => return Err(SnapshotError::Magic),
        }
        me.meta.last_seq = r.varint()?;
        me.meta.tainted = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(SnapshotError::Magic),
        };
        match Message::decode(r.bytes()?)? {
            Message::Path { entries, .. } => me.meta.path = entries,
            _ => return Err(SnapshotError::Magic),
        }
        let meta = me.meta.clone();
        never(me.store.set_meta(&meta));
        let n = r.varint()?;
        for _ in 0..n {
            let rec = r.record()?;
            never(me.apply_record(rec));
        }
        let n = r.varint()?;
        for _ in 0..n {
            let op = Op::decode(r.bytes()?).map_err(WireError::from)?;
            never(me.store.push_own(&op));
            me.own.push(op);
        }
        if r.at != bytes.len() {
            return Err(WireError::TrailingBytes {
                count: bytes.len() - r.at,
            }
            .into());
        }
        match me.check_invariants() {
            Ok(()) => Ok(me),
            Err(PartialError::Invalid(v)) => Err(v.into()),
            Err(PartialError::Store(e)) => match e {},
            // check_invariants reports nothing else
            Err(_) => Err(SnapshotError::Magic),
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
