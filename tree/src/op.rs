//! The op model: what a replica says about the tree.

use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::position::Position;

/// Opaque payload bytes attached to a node (last writer wins in op order).
pub type Payload = Vec<u8>;

/// What a replica had seen when it made an op: for each replica, the highest gap-free `seq`.
///
/// Carried by deletes (see `spec/delete.md`). Entries are kept sorted by replica, without zeros.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct VersionVector(Vec<(ReplicaId, u64)>);

impl VersionVector {
    /// An empty vector (has seen nothing).
    pub fn new() -> Self {
        Self::default()
    }
    /// Builds a vector from entries already strictly sorted by replica, without zeros (decoder).
    pub(crate) fn from_sorted(entries: Vec<(ReplicaId, u64)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        Self(entries)
    }
    /// Highest seq seen of `replica` (0 if none).
    pub fn get(&self, replica: &ReplicaId) -> u64 {
        match self.0.binary_search_by(|(r, _)| r.cmp(replica)) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }
    /// Sets the highest seq seen of `replica`; 0 removes the entry.
    pub fn set(&mut self, replica: ReplicaId, seq: u64) {
        match self.0.binary_search_by(|(r, _)| r.cmp(&replica)) {
            Ok(i) if seq == 0 => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = seq,
            Err(_) if seq == 0 => {}
            Err(i) => self.0.insert(i, (replica, seq)),
        }
    }
    /// True if the op `id` is covered (`id.seq <= self[id.replica]`).
    pub fn covers(&self, id: &OpId) -> bool {
        id.seq() <= self.get(&id.replica())
    }
    /// Entries in replica order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (ReplicaId, u64)> + '_ {
        self.0.iter().copied()
    }
    /// Number of replicas with a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True if no replica has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ReplicaId, u64)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (r, s) in iter {
            if s > v.get(&r) {
                v.set(r, s);
            }
        }
        v
    }
}

/// The kinds of tree op. Create is a move from nowhere; restore is a move out of TRASH.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum OpKind {
    /// Create `node` under `parent` at `position`, optionally with a payload.
    Create {
        node: NodeId,
        parent: NodeId,
        position: Position,
        payload: Option<Payload>,
    },
    /// Move `node` under `parent` at `position` (a restore when `node` is in TRASH).
    Move {
        node: NodeId,
        parent: NodeId,
        position: Position,
    },
    /// Move `node` to TRASH. `seen` is what the deleting replica had seen (defensive delete).
    Delete { node: NodeId, seen: VersionVector },
    /// Replace the payload of `node`.
    SetPayload { node: NodeId, payload: Payload },
}

impl OpKind {
    /// The node the op acts on.
    pub fn node(&self) -> NodeId {
        match self {
            OpKind::Create { node, .. }
            | OpKind::Move { node, .. }
            | OpKind::Delete { node, .. }
            | OpKind::SetPayload { node, .. } => *node,
        }
    }
}

/// A replica's signature over an op, with what it binds (`spec/ops.md` §Signed ops).
///
/// Opaque to the tree: it is encoded with the op (codec version 2), compared when telling a
/// duplicate from an equivocation, and stored in the log, but never checked here. Checking it
/// (and the chain it names) is `canopy-caps`' job, before the op reaches [`crate::Tree::apply`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Attestation {
    doc: [u8; 32],
    time: u64,
    chain: [u8; 32],
    signature: [u8; 64],
}

impl Attestation {
    /// An attestation: document id, the op's wall-clock time (unix seconds), the digest of its
    /// delegation chain, and the signature.
    pub const fn new(doc: [u8; 32], time: u64, chain: [u8; 32], signature: [u8; 64]) -> Self {
        Self {
            doc,
            time,
            chain,
            signature,
        }
    }
    /// The document the op belongs to.
    pub const fn doc(&self) -> &[u8; 32] {
        &self.doc
    }
    /// The op's signed wall-clock time (unix seconds).
    pub const fn time(&self) -> u64 {
        self.time
    }
    /// The digest of the op's delegation chain.
    pub const fn chain(&self) -> &[u8; 32] {
        &self.chain
    }
    /// The Ed25519 signature.
    pub const fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

/// A tree op with its identity and Lamport timestamp, optionally signed ([`Attestation`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Op {
    id: OpId,
    lamport: Lamport,
    kind: OpKind,
    attestation: Option<Box<Attestation>>,
}

impl Op {
    /// Builds an op. Validation (reserved nodes, seq ≥ 1, lamport ≥ 1) happens at apply and decode.
    pub fn new(id: OpId, lamport: Lamport, kind: OpKind) -> Self {
        Self {
            id,
            lamport,
            kind,
            attestation: None,
        }
    }
    /// The op with `attestation` attached (replacing any earlier one).
    pub fn with_attestation(mut self, attestation: Attestation) -> Self {
        self.attestation = Some(Box::new(attestation));
        self
    }
    /// The op's signature and what it binds, if signed.
    pub fn attestation(&self) -> Option<&Attestation> {
        self.attestation.as_deref()
    }
    /// The op without its attestation.
    pub fn unsigned(&self) -> Op {
        Op::new(self.id, self.lamport, self.kind.clone())
    }
    /// The op's id.
    pub fn id(&self) -> OpId {
        self.id
    }
    /// The op's Lamport timestamp.
    pub fn lamport(&self) -> Lamport {
        self.lamport
    }
    /// The op's place in the total order.
    pub fn key(&self) -> LogKey {
        LogKey::new(self.lamport, self.id.replica())
    }
    /// What the op does.
    pub fn kind(&self) -> &OpKind {
        &self.kind
    }
    /// The node the op acts on.
    pub fn node(&self) -> NodeId {
        self.kind.node()
    }
}
