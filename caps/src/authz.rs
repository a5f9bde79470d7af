//! Authorized apply: signed ops, document identity, and the one [`AuthzState::authorize`] that decides tree
//! writes at replay time and filters reads (`spec/caps.md` §Authorized apply, `spec/ops.md`
//! §Signed ops).
//!
//! An op is signed by its replica key over `"canopy/op/v2" ‖ doc ‖ time ‖ chain ‖ op` (the op's
//! version-1 encoding). `chain` is a [`ChainRef`]: the digest of the ordered delegation CIDs
//! that authorize the replica. Delegations, chains and revocations travel as [`Entry`] items
//! and are kept once. [`AuthzPolicy`] is the `canopy_tree::Policy` that decides every op
//! against the replay-time tree; [`Authz`] is the verified ingest in front of it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use canopy_tree::{
    Attestation, Decision as TreeDecision, Lamport, NodeId, Op, OpKind, Policy as TreePolicy,
    ReplayView, Store,
};
use cid::Cid;
use sha2::{Digest, Sha256};

use crate::tree::{authorize as authorize_chain, Ability, Decision as ChainDecision, TreeRequest};
use crate::verify::{Context, OpRef};
use crate::{Did, Proofs, Revocation, Revocations, SecretKey, Verifier, VerifyError};

mod entry;
mod ingest;
mod pipeline;

pub use entry::{
    Entry, EntryDecodeError, Evidence, EvidenceError, GenesisError, MAX_ENTRY_BYTES,
    MAX_EVIDENCE_BYTES,
};
pub use ingest::{
    Accepted, Authz, Equivocation, IngestError, IngestReport, OpenError, Verified, MAX_HELD,
};

/// Domain separator of an op signature.
pub const OP_SIGNATURE_DOMAIN: &[u8] = b"canopy/op/v2";
const DOC_DOMAIN: &[u8] = b"canopy/doc/v1";
const CHAIN_DOMAIN: &[u8] = b"canopy/chain/v1";

macro_rules! digest_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            /// From its 32 bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            /// Its 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &hex::encode(self.0)[..8])
            }
        }

        impl FromStr for $name {
            type Err = hex::FromHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut b = [0u8; 32];
                hex::decode_to_slice(s, &mut b)?;
                Ok(Self(b))
            }
        }
    };
}

digest_id!(
    /// A document id: `SHA-256("canopy/doc/v1" ‖ owner public key ‖ nonce)`.
    DocumentId
);
digest_id!(
    /// A delegation chain reference: `SHA-256("canopy/chain/v1" ‖ (len:u8 ‖ CID bytes)*)` over
    /// the chain's CIDs, root first. The empty chain (the owner acting) has a reference too.
    ChainRef
);

/// A document: its owner (root subject of every chain) and the nonce that makes its id unique.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Document {
    owner: Did,
    nonce: [u8; 16],
    id: DocumentId,
}

impl Document {
    /// The document of `owner` with `nonce` (the id is derived, so it cannot be claimed for
    /// another owner).
    pub fn new(owner: Did, nonce: [u8; 16]) -> Self {
        let mut h = Sha256::new();
        h.update(DOC_DOMAIN);
        h.update(owner.public_key());
        h.update(nonce);
        Self {
            owner,
            nonce,
            id: DocumentId(h.finalize().into()),
        }
    }

    /// A new document owned by `owner`, with a random nonce.
    pub fn create<R: rand_core::CryptoRngCore + ?Sized>(owner: &SecretKey, rng: &mut R) -> Self {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        Self::new(owner.did(), nonce)
    }

    /// The owner.
    pub fn owner(&self) -> &Did {
        &self.owner
    }
    /// The nonce.
    pub fn nonce(&self) -> &[u8; 16] {
        &self.nonce
    }
    /// The id.
    pub fn id(&self) -> DocumentId {
        self.id
    }
}

/// The reference of a chain of delegation CIDs (root first).
pub fn chain_ref(chain: &[Cid]) -> ChainRef {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    for c in chain {
        let b = c.to_bytes();
        h.update([b.len() as u8]);
        h.update(&b);
    }
    ChainRef(h.finalize().into())
}

/// The bytes an op signature covers: `"canopy/op/v2" ‖ doc ‖ time:u64be ‖ chain ‖ op`, where
/// `op` is the version-1 encoding of the op.
pub fn signing_input(doc: &DocumentId, time: u64, chain: &ChainRef, op: &Op) -> Vec<u8> {
    let mut out = Vec::with_capacity(OP_SIGNATURE_DOMAIN.len() + 72 + 96);
    out.extend_from_slice(OP_SIGNATURE_DOMAIN);
    out.extend_from_slice(&doc.0);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&chain.0);
    op.encode_unsigned_into(&mut out);
    out
}

/// Why an op could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// An op's replica id is its signer's public key.
    #[error("op replica is not the signing key {key}")]
    WrongReplica {
        /// The signing key.
        key: Did,
    },
}

/// Signs `op` (whose replica must be `key`'s public key) for document `doc` at `time` under the
/// chain `chain`; returns the op with its [`Attestation`].
pub fn sign_op(
    key: &SecretKey,
    doc: &DocumentId,
    time: u64,
    chain: &ChainRef,
    op: Op,
) -> Result<Op, SignError> {
    let did = key.did();
    if op.id().replica().as_bytes() != did.public_key() {
        return Err(SignError::WrongReplica { key: did });
    }
    let signature = key.sign(&signing_input(doc, time, chain, &op));
    Ok(op.with_attestation(Attestation::new(doc.0, time, chain.0, signature)))
}

/// A proof an op or request needs that is not known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Missing {
    /// The chain list behind a chain reference.
    Chain(ChainRef),
    /// A delegation named by a known chain.
    Delegation(Cid),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Chain(c) => write!(f, "chain {c}"),
            Missing::Delegation(c) => write!(f, "delegation {c}"),
        }
    }
}

/// Why an op was denied at its place in the total order (a value, re-decided on redo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The op carries no attestation (only signed ops take effect under [`AuthzPolicy`]).
    #[error("unsigned op")]
    Unsigned,
    /// A proof is unknown (only reachable by applying ops without [`Authz`]'s ingest).
    #[error("unknown proof: {0}")]
    Unknown(Missing),
    /// The op's replica equivocated: it signed two different ops with the same `(replica,
    /// seq)` at `seq`, and this op's seq is not below it (`spec/caps.md` §11.6).
    #[error("replica equivocated at seq {seq}")]
    Equivocation {
        /// The lowest equivocated seq of the replica.
        seq: u64,
    },
    /// The chain does not grant `ability` on `target`.
    #[error("{ability} on {target}: {error}")]
    Chain {
        /// The ability checked.
        ability: Ability,
        /// The node it was checked on.
        target: NodeId,
        /// The rule that failed.
        error: VerifyError,
    },
}

/// The outcome of [`AuthzState::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied, with why.
    Deny {
        /// Why.
        reason: Denial,
    },
    /// A proof has not arrived yet: decide again when it has.
    Unknown {
        /// What is missing.
        missing: Missing,
    },
}

impl Verdict {
    /// True for [`Verdict::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// What a document's authorization depends on: its owner, the delegations, chains and
/// revocations known so far, and a verifier cache of checked delegations (by CID).
#[derive(Debug)]
pub struct AuthzState {
    document: Document,
    proofs: Proofs,
    chains: HashMap<ChainRef, Vec<Cid>>,
    revocations: Revocations,
    /// The delegations some revocation names (a chain naming none of them decides the same for
    /// every op, so its allowed requests may be answered from `allowed`).
    revoked: HashSet<Cid>,
    verifier: RefCell<Verifier>,
    /// Requests a chain allowed, with the times at which the same verdict holds (a cache of
    /// [`AuthzState::authorize`]'s full check; see there for when it is bypassed).
    allowed: RefCell<HashMap<AllowKey, TimeWindow>>,
    /// Lowest Lamport timestamp of a decided op under each chain (one hash look-up per decided
    /// op; a delegation's first use is the minimum over the chains that name it).
    first_use: RefCell<HashMap<ChainRef, Lamport>>,
    /// Chains whose delegations are all known (proofs are never forgotten, so a chain stays
    /// complete): one look-up instead of one per delegation in [`AuthzState::missing`].
    complete: RefCell<HashSet<ChainRef>>,
    /// Lowest equivocated seq of each replica with equivocation evidence.
    equivocations: HashMap<[u8; 32], u64>,
    signer: Option<Signer>,
}

/// What this replica signs its local ops with.
struct Signer {
    key: SecretKey,
    chain: ChainRef,
    time: u64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key.did())
            .field("chain", &self.chain)
            .field("time", &self.time)
            .finish()
    }
}

impl AuthzState {
    /// The state of `document` with nothing known but the empty chain (the owner acting).
    pub fn new(document: Document) -> Self {
        let mut chains = HashMap::new();
        chains.insert(chain_ref(&[]), Vec::new());
        Self {
            document,
            proofs: Proofs::new(),
            chains,
            revocations: Revocations::new(),
            revoked: HashSet::new(),
            verifier: RefCell::new(Verifier::new()),
            allowed: RefCell::new(HashMap::new()),
            first_use: RefCell::new(HashMap::new()),
            complete: RefCell::new(HashSet::new()),
            equivocations: HashMap::new(),
            signer: None,
        }
    }

    /// The document.
    pub fn document(&self) -> &Document {
        &self.document
    }

    /// The delegations known so far.
    pub fn proofs(&self) -> &Proofs {
        &self.proofs
    }

    /// The revocations known so far.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The chain behind a reference, if known.
    pub fn chain(&self, r: &ChainRef) -> Option<&[Cid]> {
        self.chains.get(r).map(Vec::as_slice)
    }

    /// Registers delegation bytes (decoded and signature-checked when a chain first uses them).
    pub(crate) fn add_delegation(&mut self, bytes: Vec<u8>) -> Cid {
        self.proofs.insert(bytes)
    }

    /// Registers a chain; returns its reference.
    pub fn add_chain(&mut self, chain: Vec<Cid>) -> ChainRef {
        let r = chain_ref(&chain);
        self.chains.entry(r).or_insert(chain);
        r
    }

    pub(crate) fn add_revocation(&mut self, r: Revocation) {
        self.revoked.insert(*r.delegation());
        self.revocations.insert(r);
    }

    /// Notes evidence that `replica` equivocated at `seq`; true when that lowers (or sets) the
    /// replica's cutoff.
    pub(crate) fn add_equivocation(&mut self, replica: [u8; 32], seq: u64) -> bool {
        match self.equivocations.get(&replica) {
            Some(&s) if s <= seq => false,
            _ => {
                self.equivocations.insert(replica, seq);
                true
            }
        }
    }

    /// The lowest seq at which `replica` is known to have equivocated: its ops from there on
    /// are denied ([`Denial::Equivocation`]).
    pub fn equivocated_from(&self, replica: &[u8; 32]) -> Option<u64> {
        self.equivocations.get(replica).copied()
    }

    pub(crate) fn note_use(&self, chain: &ChainRef, lamport: Lamport) {
        let mut first = self.first_use.borrow_mut();
        let e = first.entry(*chain).or_insert(lamport);
        if lamport < *e {
            *e = lamport;
        }
    }

    /// Lowest Lamport timestamp of a decided op whose chain names `cid`.
    pub(crate) fn first_use(&self, cid: &Cid) -> Option<Lamport> {
        self.first_use
            .borrow()
            .iter()
            .filter(|(chain, _)| self.chains.get(chain).is_some_and(|c| c.contains(cid)))
            .map(|(_, l)| *l)
            .min()
    }

    /// What is missing to decide under `chain`, if anything.
    pub fn missing(&self, chain: &ChainRef) -> Option<Missing> {
        if self.complete.borrow().contains(chain) {
            return None;
        }
        let missing = match self.chains.get(chain) {
            None => Some(Missing::Chain(*chain)),
            Some(cids) => cids
                .iter()
                .find(|c| self.proofs.get(c).is_none())
                .map(|c| Missing::Delegation(*c)),
        };
        if missing.is_none() {
            self.complete.borrow_mut().insert(*chain);
        }
        missing
    }

    /// Signs this replica's local ops with `key` under `chain` (must be registered), at the
    /// time last set by [`AuthzState::set_time`].
    pub fn set_signer(&mut self, key: SecretKey, chain: ChainRef, time: u64) {
        self.signer = Some(Signer { key, chain, time });
    }

    /// The wall-clock time (unix seconds) that local ops are signed with from now on (the
    /// crate does no IO: the caller reads the clock).
    pub fn set_time(&mut self, time: u64) {
        if let Some(s) = &mut self.signer {
            s.time = time;
        }
    }

    /// **The** authorization decision: may `actor`, holding the chain `chain`, exercise `ability`
    /// on `target`, whose ancestors (parent first, up to ROOT) are `ancestors`, at `time`?
    ///
    /// `op` is the op being decided (its replica and seq meet revocation cutoffs); `None` for
    /// a request that is not an op, such as a read, which any applicable revocation denies.
    #[allow(clippy::too_many_arguments)]
    pub fn authorize(
        &self,
        actor: &Did,
        chain: &ChainRef,
        ability: Ability,
        target: NodeId,
        ancestors: &[NodeId],
        time: u64,
        op: Option<OpRef>,
    ) -> Verdict {
        let key = AllowKey {
            chain: *chain,
            actor: *actor.public_key(),
            ability,
            target,
            ancestors: ancestors.to_vec(),
        };
        self.authorize_key(key, actor, time, op)
    }

    /// [`AuthzState::authorize`] of the request `key` (which owns the ancestor path, so the
    /// replay path builds it once).
    fn authorize_key(&self, key: AllowKey, actor: &Did, time: u64, op: Option<OpRef>) -> Verdict {
        // Nothing revoked: the cache answers first. An entry is only made when the chain and all
        // its delegations were known, and proofs are never forgotten, so nothing is missing.
        if self.revoked.is_empty() {
            if let Some(w) = self.allowed.borrow().get(&key) {
                if w.contains(time) {
                    return Verdict::Allow;
                }
            }
        }
        let chain = &key.chain;
        if let Some(missing) = self.missing(chain) {
            return Verdict::Unknown { missing };
        }
        let cids = &self.chains[chain];
        // A revocation naming a delegation of the chain makes the verdict depend on the op:
        // no cache then.
        let revocable = !self.revoked.is_empty() && cids.iter().any(|c| self.revoked.contains(c));
        if !revocable && !self.revoked.is_empty() {
            if let Some(w) = self.allowed.borrow().get(&key) {
                if w.contains(time) {
                    return Verdict::Allow;
                }
            }
        }
        let (ability, target) = (key.ability, key.target);
        let path: Vec<[u8; 16]> = key.ancestors.iter().map(|a| *a.as_bytes()).collect();
        let request = TreeRequest {
            owner: &self.document.owner,
            actor,
            ability,
            node: target.as_bytes(),
            ancestors: &path,
        };
        let ctx = Context {
            time,
            revocations: &self.revocations,
            op,
        };
        let mut verifier = self.verifier.borrow_mut();
        match authorize_chain(&mut verifier, &self.proofs, cids, &request, &ctx) {
            ChainDecision::Allow(a) => {
                // The same request is allowed at any time inside the chain's validity window.
                let mut window = TimeWindow {
                    from: 0,
                    until: a.expiration(),
                };
                for cid in cids {
                    if let Ok(d) = verifier.delegation(cid, &self.proofs) {
                        window.from = window.from.max(d.not_before().unwrap_or(0));
                    }
                }
                let mut allowed = self.allowed.borrow_mut();
                if allowed.len() >= ALLOW_CACHE_LIMIT {
                    allowed.clear();
                }
                allowed.insert(key, window);
                Verdict::Allow
            }
            ChainDecision::Deny {
                reason: VerifyError::UnavailableProof { cid },
            } => Verdict::Unknown {
                missing: Missing::Delegation(cid),
            },
            ChainDecision::Deny { reason } => Verdict::Deny {
                reason: Denial::Chain {
                    ability,
                    target,
                    error: reason,
                },
            },
        }
    }
}

/// A request that a chain allowed, as far as it does not depend on time or the op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AllowKey {
    chain: ChainRef,
    actor: [u8; 32],
    ability: Ability,
    target: NodeId,
    ancestors: Vec<NodeId>,
}

/// The times at which every delegation of a chain is valid: `from <= t < until`.
#[derive(Debug, Clone, Copy)]
struct TimeWindow {
    from: u64,
    until: Option<u64>,
}

impl TimeWindow {
    fn contains(&self, t: u64) -> bool {
        t >= self.from && self.until.is_none_or(|u| t < u)
    }
}

/// Most cached allowed requests before the cache is emptied.
const ALLOW_CACHE_LIMIT: usize = 1 << 16;

/// The `canopy_tree::Policy` of authorized apply: decides each signed op with [`AuthzState::authorize`]
/// against the replay-time tree (`spec/caps.md` §Authorized apply).
#[derive(Debug)]
pub struct AuthzPolicy {
    state: AuthzState,
}

impl AuthzPolicy {
    /// The policy over `state`.
    pub fn new(state: AuthzState) -> Self {
        Self { state }
    }
    /// The state.
    pub fn state(&self) -> &AuthzState {
        &self.state
    }
    /// The state, to register proofs (re-decide logged ops when that can change them).
    pub fn state_mut(&mut self) -> &mut AuthzState {
        &mut self.state
    }
}

/// The abilities an op needs, each on a target node: `(ability, target)`.
fn requirements(op: &Op, old_parent: Option<NodeId>) -> [(Ability, Option<NodeId>); 2] {
    match op.kind() {
        OpKind::Create { parent, .. } => [(Ability::WriteCreate, Some(*parent)), NONE],
        OpKind::Move { node, parent, .. } => match old_parent {
            // A move of a node not created yet acts as a create.
            None => [(Ability::WriteCreate, Some(*parent)), NONE],
            // A restore: the node as it is in TRASH must be deletable, so only a grant that is
            // not scoped to a subtree (the owner, or a whole-document grant) may revive.
            Some(p) if p == NodeId::TRASH => [
                (Ability::WriteDelete, Some(*node)),
                (Ability::WriteMove, Some(*parent)),
            ],
            Some(p) => [
                (Ability::WriteMove, Some(p)),
                (Ability::WriteMove, Some(*parent)),
            ],
        },
        OpKind::Delete { node, .. } => [(Ability::WriteDelete, Some(*node)), NONE],
        OpKind::SetPayload { node, .. } => [(Ability::WritePayload, Some(*node)), NONE],
        _ => [(Ability::Write, None), NONE],
    }
}

const NONE: (Ability, Option<NodeId>) = (Ability::All, None);

impl TreePolicy for AuthzPolicy {
    type Reason = Denial;

    fn decide<S: Store>(
        &self,
        op: &Op,
        view: &ReplayView<'_, S>,
    ) -> Result<TreeDecision<Denial>, S::Error> {
        let Some(att) = op.attestation() else {
            return Ok(TreeDecision::Deny {
                reason: Denial::Unsigned,
            });
        };
        let actor = Did::from_public_key(*op.id().replica().as_bytes());
        let chain = ChainRef(*att.chain());
        self.state.note_use(&chain, op.lamport());
        // (No hash look-up on the hot path while no replica has equivocated.)
        if !self.state.equivocations.is_empty() {
            if let Some(seq) = self.state.equivocated_from(op.id().replica().as_bytes()) {
                if op.id().seq() >= seq {
                    return Ok(TreeDecision::Deny {
                        reason: Denial::Equivocation { seq },
                    });
                }
            }
        }
        let reqs = requirements(op, view.old_parent());
        if reqs[0].1.is_none() {
            return Ok(TreeDecision::Deny {
                reason: Denial::Chain {
                    ability: Ability::Write,
                    target: op.node(),
                    error: VerifyError::InvalidClaim(crate::ClaimError::NoProof),
                },
            });
        }
        let opref = OpRef {
            replica: *op.id().replica().as_bytes(),
            seq: op.id().seq(),
        };
        for (ability, target) in reqs {
            let Some(target) = target else { continue };
            let mut ancestors = Vec::with_capacity(4);
            for a in view.ancestors(target) {
                ancestors.push(a?);
            }
            let key = AllowKey {
                chain,
                actor: *actor.public_key(),
                ability,
                target,
                ancestors,
            };
            match self
                .state
                .authorize_key(key, &actor, att.time(), Some(opref))
            {
                Verdict::Allow => {}
                Verdict::Deny { reason } => return Ok(TreeDecision::Deny { reason }),
                Verdict::Unknown { missing } => {
                    return Ok(TreeDecision::Deny {
                        reason: Denial::Unknown(missing),
                    })
                }
            }
        }
        Ok(TreeDecision::Allow)
    }

    /// The tree is read only through ancestor walks from the op's targets; the rest (chains,
    /// proofs, revocation cutoffs by seq, equivocation cutoffs, the signed time) does not depend
    /// on the op's place in the log (first-use notes keep the minimum).
    fn reads_paths_only(&self) -> bool {
        true
    }

    fn attest(&self, op: &Op) -> Option<Attestation> {
        let s = self.state.signer.as_ref()?;
        let doc = self.state.document.id;
        let signature = s.key.sign(&signing_input(&doc, s.time, &s.chain, op));
        Some(Attestation::new(doc.0, s.time, s.chain.0, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_tree::{Lamport, OpId, ReplicaId};

    #[test]
    fn ids_round_trip_and_bind_their_inputs() {
        let owner = SecretKey::from_bytes(&[1; 32]);
        let d = Document::new(owner.did(), [0; 16]);
        assert_ne!(d.id(), Document::new(owner.did(), [1; 16]).id());
        let other = SecretKey::from_bytes(&[2; 32]);
        assert_ne!(d.id(), Document::new(other.did(), [0; 16]).id());
        assert_eq!(d.id().to_string().parse::<DocumentId>().unwrap(), d.id());
        assert_ne!(chain_ref(&[]), chain_ref(&[crate::cid_of(b"x")]));
    }

    #[test]
    fn signed_op_round_trips_and_signature_covers_everything() {
        let key = SecretKey::from_bytes(&[3; 32]);
        let doc = Document::new(key.did(), [0; 16]).id();
        let op = Op::new(
            OpId::new(ReplicaId::from_bytes(*key.did().public_key()), 1),
            Lamport::new(1),
            OpKind::SetPayload {
                node: NodeId::from_bytes([5; 16]),
                payload: b"hi".to_vec(),
            },
        );
        let signed = sign_op(&key, &doc, 7, &chain_ref(&[]), op.clone()).unwrap();
        let bytes = signed.encode();
        assert_eq!(bytes[0], canopy_tree::VERSION_SIGNED);
        assert_eq!(Op::decode(&bytes).unwrap(), signed);
        assert_eq!(signed.unsigned(), op);
        let other = SecretKey::from_bytes(&[4; 32]);
        assert!(matches!(
            sign_op(&other, &doc, 7, &chain_ref(&[]), op),
            Err(SignError::WrongReplica { .. })
        ));
    }
}
