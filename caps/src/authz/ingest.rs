//! Verified ingest: decode → document check → batch signature verification → equivocation
//! check → hold ops whose proofs are unknown → authorized apply (`spec/caps.md` §11.4), and
//! the replica's life cycle over a store: the genesis entry that names the stored document
//! (§11.1, §11.5) and equivocation evidence with its per-replica cutoff (§11.6).

use std::collections::HashMap;

use canopy_tree::{
    ApplyError, ChangeEvent, Lamport, LogKey, NodeId, Op, OpId, OpReport, Outcome, Rejection,
    ReplicaId, Store, Tree,
};
use cid::Cid;
use sha2::{Digest, Sha256};

use super::{AuthzPolicy, AuthzState, ChainRef, Denial, Document, DocumentId, Entry, Missing};
use super::{EntryDecodeError, Evidence, Verdict};
use crate::{Ability, DecodeError, Did};

/// Two different signed ops with the same `(replica, seq)`, as reported for the op that was
/// refused; the pair is also recorded as [`Evidence`] when both signatures verify
/// (`spec/caps.md` §11.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    /// The op known first (logged, parked or held).
    pub first: Op,
    /// The conflicting op (not accepted).
    pub second: Op,
}

/// Why one ingested item was rejected. Nothing of it was kept; the rest of the batch goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The bytes are not an entry.
    #[error("decode: {0}")]
    Decode(#[from] EntryDecodeError),
    /// An op without a signature.
    #[error("unsigned op {id}")]
    Unsigned {
        /// The op.
        id: OpId,
    },
    /// An op signed for another document.
    #[error("op {id} is for document {got}, not {expected}")]
    WrongDocument {
        /// The op.
        id: OpId,
        /// This document.
        expected: DocumentId,
        /// The op's.
        got: DocumentId,
    },
    /// The op's signature does not verify under its replica key.
    #[error("op {id}: bad signature")]
    BadSignature {
        /// The op.
        id: OpId,
    },
    /// The op's replica key is not a usable Ed25519 key (not a point, or of small order).
    #[error("op {id}: replica key is not a valid signing key")]
    BadReplicaKey {
        /// The op.
        id: OpId,
    },
    /// A delegation whose signature does not verify.
    #[error("delegation {cid}: bad signature")]
    BadDelegation {
        /// The delegation.
        cid: Cid,
    },
    /// A delegation entry whose envelope does not decode (`cid`: of the bytes given).
    #[error("delegation {cid}: {source}")]
    MalformedDelegation {
        /// The CID of the bytes.
        cid: Cid,
        /// Why.
        source: DecodeError,
    },
    /// The op is invalid for the tree.
    #[error("invalid op {id}: {rejection}")]
    Invalid {
        /// The op.
        id: OpId,
        /// Why.
        rejection: Rejection,
    },
    /// Another signed op with the same id is known. The op is not logged; the pair is recorded
    /// as equivocation evidence (listed in [`IngestReport::equivocations`] when it is new).
    #[error("equivocation by {}", .0.second.id())]
    Equivocation(Box<Equivocation>),
    /// The genesis of another document.
    #[error("genesis of document {found}, not {expected}")]
    WrongGenesis {
        /// This document.
        expected: DocumentId,
        /// The entry's.
        found: DocumentId,
    },
    /// The op's proofs are unknown and [`MAX_HELD`] ops are already held: send the proofs
    /// first.
    #[error("op {id}: proof {missing} unknown and the hold is full")]
    HoldFull {
        /// The op.
        id: OpId,
        /// What it would wait for.
        missing: Missing,
    },
}

/// Most ops held for unknown proofs at once (a peer cannot grow the hold without bound).
pub const MAX_HELD: usize = 100_000;

/// What became of one accepted item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accepted {
    /// An op reached the tree: applied, denied (logged no-op), parked on its predecessor, or a
    /// duplicate.
    Op {
        /// The op.
        id: OpId,
        /// What the tree did.
        outcome: Outcome<Denial>,
    },
    /// An op whose proof is unknown: held (never applied unverified) until it arrives.
    Held {
        /// The op.
        id: OpId,
        /// What it waits for.
        missing: Missing,
    },
    /// A delegation was registered.
    Delegation {
        /// Its CID.
        cid: Cid,
    },
    /// A chain was registered.
    Chain {
        /// Its reference.
        chain: ChainRef,
    },
    /// A revocation was registered (affected logged ops were re-decided).
    Revocation {
        /// Its CID.
        cid: Cid,
    },
    /// This document's genesis (already known: nothing to do).
    Genesis {
        /// The document.
        document: DocumentId,
    },
    /// Equivocation evidence was registered: the replica's ops from this `(replica, seq)` on
    /// are denied (logged ones were re-decided).
    Equivocation {
        /// The equivocated op id.
        id: OpId,
    },
}

/// The result of [`Authz::ingest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngestReport {
    /// One result per input item, in input order.
    pub items: Vec<Result<Accepted, IngestError>>,
    /// Ops held or parked by earlier batches that this batch released, and their outcome.
    pub released: Vec<OpReport<Denial>>,
    /// Logged ops whose effect changed because a revocation or equivocation evidence arrived,
    /// with their new outcome.
    pub redecided: Vec<OpReport<Denial>>,
    /// Equivocations this batch made known (received as evidence or detected here) that lower
    /// a replica's cutoff: from each `(replica, seq)` on, the replica's ops are denied.
    pub equivocations: Vec<OpId>,
    /// Net tree changes (apply first, then re-decision), in order.
    pub events: Vec<ChangeEvent>,
}

/// An authorized document replica: a [`Tree`] under [`AuthzPolicy`] with verified ingest.
///
/// ```
/// use canopy_caps::{
///     chain_ref, subtree_policy, Ability, Accepted, Authz, Delegation, DelegationFields,
///     Denial, Document, Entry, SecretKey,
/// };
/// use canopy_tree::{MemoryStore, NodeId, Outcome, Place, ReplicaId};
///
/// let owner = SecretKey::from_bytes(&[1; 32]);
/// let alice = SecretKey::from_bytes(&[2; 32]);
/// let doc = Document::new(owner.did(), [0; 16]);
/// let replica = |k: &SecretKey| ReplicaId::from_bytes(*k.did().public_key());
///
/// // The owner makes a folder and lets Alice write inside it.
/// let mut owner_side = Authz::new(MemoryStore::new(), doc, replica(&owner))?;
/// owner_side.state_mut().set_signer(owner.clone(), chain_ref(&[]), 1_700_000_000);
/// let folder = owner_side.tree_mut().create(NodeId::ROOT, Place::Last, None)?.op;
/// let other = owner_side.tree_mut().create(NodeId::ROOT, Place::Last, None)?.op;
/// let grant = Delegation::issue_with_nonce(
///     &owner,
///     DelegationFields {
///         audience: alice.did(),
///         subject: Some(owner.did()),
///         command: Ability::Write.command(),
///         policy: subtree_policy(folder.node().as_bytes(), &[]),
///         expiration: None,
///         not_before: None,
///         meta: None,
///     },
///     vec![0; 12],
/// );
/// let proofs = [Entry::Delegation(grant.clone()), Entry::Chain(vec![grant.cid()])];
///
/// // Alice's replica receives the owner's ops and the proofs, then writes.
/// let mut alice_side = Authz::new(MemoryStore::new(), doc, replica(&alice))?;
/// let mut items: Vec<Vec<u8>> = proofs.iter().map(Entry::encode).collect();
/// items.extend([folder.encode(), other.encode()]);
/// alice_side.ingest(&items)?;
/// alice_side.state_mut().set_signer(alice.clone(), chain_ref(&[grant.cid()]), 1_700_000_100);
/// let inside = alice_side.tree_mut().create(folder.node(), Place::Last, None)?;
/// let outside = alice_side.tree_mut().create(other.node(), Place::Last, None)?;
/// assert_eq!(inside.outcome, Outcome::Applied);
/// assert!(matches!(outside.outcome, Outcome::Denied { reason: Denial::Chain { .. } }));
///
/// // The owner's replica verifies and decides Alice's signed ops the same way.
/// let report = owner_side.ingest(proofs.iter().map(Entry::encode))?;
/// assert!(report.items.iter().all(|i| i.is_ok()));
/// let report = owner_side.ingest([inside.op.encode(), outside.op.encode()])?;
/// assert!(matches!(report.items[0], Ok(Accepted::Op { outcome: Outcome::Applied, .. })));
/// assert!(matches!(report.items[1], Ok(Accepted::Op { outcome: Outcome::Denied { .. }, .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Authz<S: Store> {
    tree: Tree<S, AuthzPolicy>,
    held: HashMap<Missing, Vec<Op>>,
    held_ids: HashMap<OpId, Missing>,
    /// False after [`Authz::open`] over a non-empty log until the first-use times of the
    /// logged ops' delegations were rebuilt (done once, when a revocation first arrives).
    first_use_complete: bool,
}

/// Why [`Authz::new`], [`Authz::open`] or [`Authz::open_stored`] failed, or why
/// [`Authz::proof_entries`] could not read the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[source] E),
    /// Writing the genesis failed (rolled back).
    #[error("writing the genesis: {0}")]
    Write(#[source] ApplyError<E>),
    /// The store holds another document.
    #[error("the store holds document {found}, not {expected}")]
    WrongDocument {
        /// The document asked for.
        expected: DocumentId,
        /// The stored genesis's.
        found: DocumentId,
    },
    /// The store holds ops, entries or held ops but its first document entry is not a genesis
    /// (written by code before genesis entries, or not an authorized store).
    #[error("the store is not empty but has no genesis entry")]
    NoGenesis,
    /// [`Authz::open_stored`] over an empty store: there is no document to open.
    #[error("the store is empty: no document to open")]
    NoDocument,
    /// [`Authz::new`] over a store that is not empty (use [`Authz::open`]).
    #[error("the store is not empty")]
    NotEmpty,
    /// A stored document entry does not decode (the store is corrupt or not this version's).
    #[error("stored document entry {index}: {source}")]
    Entry {
        /// Its place in arrival order.
        index: usize,
        /// Why.
        source: EntryDecodeError,
    },
    /// A stored document entry is an op (ops are kept in the log or as held ops).
    #[error("stored document entry {index} is an op")]
    OpEntry {
        /// Its place in arrival order.
        index: usize,
    },
    /// A stored held op is unsigned (the store is corrupt).
    #[error("held op {id} is unsigned")]
    UnsignedHeld {
        /// The op.
        id: OpId,
    },
}

/// A write the ingest of one batch makes beside the tree, in the batch's transaction.
enum Write {
    Entry([u8; 32], u8, Vec<u8>),
    Hold(Op),
    Release(OpId),
}

impl<S: Store> Authz<S> {
    /// A replica of `document` over a new, empty `store`, making local ops as `replica`: records
    /// the document's genesis entry as the store's first document entry (in a transaction of
    /// the store). Fails with [`OpenError::NotEmpty`] if the store holds anything; use
    /// [`Authz::open`] or [`Authz::open_stored`] for a store that may hold a document already.
    pub fn new(
        store: S,
        document: Document,
        replica: ReplicaId,
    ) -> Result<Self, OpenError<S::Error>> {
        let empty = store.log_len().map_err(OpenError::Store)? == 0
            && store.pending_len().map_err(OpenError::Store)? == 0
            && store.doc_entries().map_err(OpenError::Store)?.is_empty()
            && store.held_ops().map_err(OpenError::Store)?.is_empty();
        if !empty {
            return Err(OpenError::NotEmpty);
        }
        let mut a = Self::bare(store, document, replica);
        let Write::Entry(key, kind, bytes) = entry_write(&Entry::Genesis(document)) else {
            unreachable!("entry_write makes entry writes")
        };
        a.tree
            .apply_with(
                std::iter::empty(),
                |s| s.doc_entry_insert(&key, kind, &bytes).map(|_| ()),
                None,
            )
            .map_err(OpenError::Write)?;
        Ok(a)
    }

    fn bare(store: S, document: Document, replica: ReplicaId) -> Self {
        Self {
            tree: Tree::with_policy(store, replica, AuthzPolicy::new(AuthzState::new(document))),
            held: HashMap::new(),
            held_ids: HashMap::new(),
            first_use_complete: true,
        }
    }

    /// A replica of `document` over `store`, which may hold it from an earlier session: the
    /// store's genesis must be `document`'s ([`OpenError::WrongDocument`] otherwise,
    /// [`OpenError::NoGenesis`] for a non-empty store without one); the delegations, chains,
    /// revocations and equivocation evidence stored by earlier ingests are registered again, in
    /// arrival order, and the ops held for unknown proofs are held again (`spec/caps.md`
    /// §Persistence). Nothing is re-decided: the log's decisions were made with the same inputs.
    /// An empty store is set up as by [`Authz::new`].
    pub fn open(
        store: S,
        document: Document,
        replica: ReplicaId,
    ) -> Result<Self, OpenError<S::Error>> {
        Self::reopen(store, Some(document), replica)
    }

    /// A replica of the document whose genesis `store` holds (written by [`Authz::new`], or by
    /// ingesting a peer's [`Authz::proof_entries`] into a store opened for the
    /// [`Document`] checked with [`Document::from_genesis`]); otherwise as [`Authz::open`].
    /// [`OpenError::NoDocument`] for an empty store, [`OpenError::NoGenesis`] for a non-empty
    /// one without a genesis.
    pub fn open_stored(store: S, replica: ReplicaId) -> Result<Self, OpenError<S::Error>> {
        Self::reopen(store, None, replica)
    }

    fn reopen(
        store: S,
        expected: Option<Document>,
        replica: ReplicaId,
    ) -> Result<Self, OpenError<S::Error>> {
        let entries = store.doc_entries().map_err(OpenError::Store)?;
        let held = store.held_ops().map_err(OpenError::Store)?;
        let log_len = store.log_len().map_err(OpenError::Store)?;
        let nonempty = log_len > 0
            || !entries.is_empty()
            || !held.is_empty()
            || store.pending_len().map_err(OpenError::Store)? > 0;
        let document = match entries.first() {
            None if !nonempty => {
                return match expected {
                    Some(d) => Self::new(store, d, replica),
                    None => Err(OpenError::NoDocument),
                }
            }
            None => return Err(OpenError::NoGenesis),
            Some((_, bytes)) => match Entry::decode(bytes)
                .map_err(|source| OpenError::Entry { index: 0, source })?
            {
                Entry::Genesis(d) => d,
                _ => return Err(OpenError::NoGenesis),
            },
        };
        if let Some(e) = expected {
            if e != document {
                return Err(OpenError::WrongDocument {
                    expected: e.id(),
                    found: document.id(),
                });
            }
        }
        let mut a = Self::bare(store, document, replica);
        a.first_use_complete = log_len == 0;
        for (index, (_, bytes)) in entries.iter().enumerate().skip(1) {
            match Entry::decode(bytes).map_err(|source| OpenError::Entry { index, source })? {
                Entry::Delegation(d) => {
                    a.state_mut().add_delegation(d.to_bytes().to_vec());
                }
                Entry::Chain(c) => {
                    a.state_mut().add_chain(c);
                }
                Entry::Revocation(r) => a.state_mut().add_revocation(r),
                Entry::Equivocation(e) => {
                    a.state_mut()
                        .add_equivocation(*e.id().replica().as_bytes(), e.id().seq());
                }
                Entry::Genesis(d) if d == document => {}
                Entry::Genesis(d) => {
                    return Err(OpenError::WrongDocument {
                        expected: document.id(),
                        found: d.id(),
                    })
                }
                Entry::Op(_) => return Err(OpenError::OpEntry { index }),
            }
        }
        for op in held {
            let Some(att) = op.attestation() else {
                return Err(OpenError::UnsignedHeld { id: op.id() });
            };
            let chain = ChainRef::from_bytes(*att.chain());
            // Proofs that arrived are applied with their batch, so a held op still misses one;
            // if not (a store written by other code), the next ingest of any proof releases it.
            let missing = a.state().missing(&chain).unwrap_or(Missing::Chain(chain));
            a.hold(missing, op);
        }
        Ok(a)
    }

    /// The store, e.g. to reopen it with [`Authz::open_stored`] (ops held in memory are also in
    /// the store).
    pub fn into_store(self) -> S {
        self.tree.into_store()
    }

    /// The tree (reads).
    pub fn tree(&self) -> &Tree<S, AuthzPolicy> {
        &self.tree
    }

    /// The tree, for local ops: they are signed by the signer set with
    /// [`AuthzState::set_signer`] and decided like any other op.
    pub fn tree_mut(&mut self) -> &mut Tree<S, AuthzPolicy> {
        &mut self.tree
    }

    /// The authorization state.
    pub fn state(&self) -> &AuthzState {
        self.tree.policy().state()
    }

    /// The authorization state, e.g. to set the signer. Registering proofs goes through
    /// [`Authz::ingest`] (which re-decides what they affect).
    pub fn state_mut(&mut self) -> &mut AuthzState {
        self.tree.policy_mut().state_mut()
    }

    /// Number of ops held for a missing proof.
    pub fn held_len(&self) -> usize {
        self.held_ids.len()
    }

    /// Everything this replica knows besides the tree log, read from the store: the genesis
    /// first, then the delegations, chains and revocations in arrival order (so dependencies
    /// come first), then the held ops. What a peer needs to learn the document (owner and
    /// nonce: [`Document::from_genesis`]) and to decide this replica's ops.
    pub fn proof_entries(&self) -> Result<Vec<Entry>, OpenError<S::Error>> {
        let store = self.tree.store();
        let mut out = Vec::new();
        for (index, (_, bytes)) in store
            .doc_entries()
            .map_err(OpenError::Store)?
            .into_iter()
            .enumerate()
        {
            out.push(Entry::decode(&bytes).map_err(|source| OpenError::Entry { index, source })?);
        }
        for op in store.held_ops().map_err(OpenError::Store)? {
            out.push(Entry::Op(op));
        }
        Ok(out)
    }

    /// Sync read filtering: may `reader`, holding `chain`, exercise the read `ability` on
    /// `node` at `time`, given the node's ancestors in the current tree?
    pub fn authorize_read(
        &self,
        reader: &Did,
        chain: &ChainRef,
        ability: Ability,
        node: NodeId,
        time: u64,
    ) -> Result<Verdict, S::Error> {
        let ancestors = self.tree.ancestors(node)?;
        Ok(self
            .state()
            .authorize(reader, chain, ability, node, &ancestors, time, None))
    }

    /// Ingests encoded entries (ops, delegations, chains, revocations, the genesis, equivocation
    /// evidence) in one batch: [`Verified::check`] then [`Authz::ingest_verified`].
    ///
    /// Each item is accepted or rejected on its own (typed [`IngestError`]); a rejected item
    /// changes nothing and the rest of the batch goes on — except that an op refused as an
    /// [`IngestError::Equivocation`] leaves its evidence (`spec/caps.md` §11.6). Proof entries
    /// are registered first, so an op may come in the same batch as its delegations. On a
    /// store error the tree batch is rolled back, but proofs and evidence registered by this
    /// call stay registered (they are verified facts, and re-ingesting the batch is
    /// idempotent). Evidence for conflicts the tree itself finds is recorded in a second
    /// transaction after the batch's: if that one fails, the batch stays committed, the error
    /// is returned and the replica is as if the conflicting op had not arrived (re-sending it
    /// records the evidence).
    pub fn ingest<I, B>(&mut self, items: I) -> Result<IngestReport, ApplyError<S::Error>>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let verified = Verified::check(self.state().document().id(), items);
        self.ingest_verified(verified)
    }

    /// The second half of [`Authz::ingest`], for a batch whose signatures were checked by
    /// [`Verified::check`] (possibly on another thread, while this replica applied the previous
    /// batch).
    // Per-item results are data (one per input), not this function's error path.
    #[allow(clippy::result_large_err)]
    pub fn ingest_verified(
        &mut self,
        verified: Verified,
    ) -> Result<IngestReport, ApplyError<S::Error>> {
        let doc = self.state().document().id();
        let Verified {
            doc: checked_for,
            entries,
        } = verified;
        let mut items: Vec<Option<Result<Accepted, IngestError>>> = vec![None; entries.len()];
        let mut ops: Vec<(usize, Op)> = Vec::new();
        let mut new_proofs: Vec<Missing> = Vec::new();
        let mut revoked: Vec<Cid> = Vec::new();
        let mut writes: Vec<Write> = Vec::new();
        // New equivocation cutoffs, `(replica, seq)`.
        let mut cuts: Vec<OpId> = Vec::new();

        // 1. Proofs first; signature-checked ops are collected.
        for (i, e) in entries.into_iter().enumerate() {
            let r = match e {
                Err(err) => Err(err),
                Ok(Entry::Delegation(d)) => {
                    writes.push(entry_write(&Entry::Delegation(d.clone())));
                    let cid = self.state_mut().add_delegation(d.to_bytes().to_vec());
                    new_proofs.push(Missing::Delegation(cid));
                    Ok(Accepted::Delegation { cid })
                }
                Ok(Entry::Chain(cids)) => {
                    writes.push(entry_write(&Entry::Chain(cids.clone())));
                    let chain = self.state_mut().add_chain(cids);
                    new_proofs.push(Missing::Chain(chain));
                    Ok(Accepted::Chain { chain })
                }
                Ok(Entry::Revocation(r)) => {
                    writes.push(entry_write(&Entry::Revocation(r.clone())));
                    let cid = r.cid();
                    revoked.push(*r.delegation());
                    self.state_mut().add_revocation(r);
                    Ok(Accepted::Revocation { cid })
                }
                Ok(Entry::Equivocation(e)) => {
                    let id = e.id();
                    self.record_evidence(e, &mut writes, &mut cuts);
                    Ok(Accepted::Equivocation { id })
                }
                Ok(Entry::Genesis(d)) if d == *self.state().document() => {
                    Ok(Accepted::Genesis { document: doc })
                }
                Ok(Entry::Genesis(d)) => Err(IngestError::WrongGenesis {
                    expected: doc,
                    found: d.id(),
                }),
                Ok(Entry::Op(op)) if checked_for != doc => Err(IngestError::WrongDocument {
                    id: op.id(),
                    expected: doc,
                    got: checked_for,
                }),
                Ok(Entry::Op(op)) => {
                    ops.push((i, op));
                    continue;
                }
            };
            items[i] = Some(r);
        }

        // 2. Held duplicates and equivocations (the tree checks the log, parked ops and the
        //    batch itself), and unknown proofs.
        let mut to_apply: Vec<(Option<usize>, Op)> = Vec::with_capacity(ops.len());
        for (i, op) in ops {
            if let Some(first) = self.held_op(op.id()) {
                items[i] = Some(if first == op {
                    Ok(Accepted::Op {
                        id: op.id(),
                        outcome: Outcome::Duplicate,
                    })
                } else {
                    self.detected(&first, &op, &mut writes, &mut cuts);
                    Err(equivocation(first, op))
                });
                continue;
            }
            let chain = ChainRef::from_bytes(*op.attestation().expect("checked").chain());
            if let Some(missing) = self.state().missing(&chain) {
                // Not applied, so the tree cannot see a conflict: look it up before holding.
                let known = self.known_op(op.id()).map_err(ApplyError::Store)?;
                items[i] = Some(match known {
                    Some(first) if first != op => {
                        self.detected(&first, &op, &mut writes, &mut cuts);
                        Err(equivocation(first, op))
                    }
                    Some(_) => Ok(Accepted::Op {
                        id: op.id(),
                        outcome: Outcome::Duplicate,
                    }),
                    None if self.held_ids.len() >= MAX_HELD => Err(IngestError::HoldFull {
                        id: op.id(),
                        missing,
                    }),
                    None => {
                        writes.push(Write::Hold(op.clone()));
                        self.hold(missing, op.clone());
                        Ok(Accepted::Held {
                            id: op.id(),
                            missing,
                        })
                    }
                });
                continue;
            }
            to_apply.push((Some(i), op));
        }

        // 3. Held ops whose proofs arrived.
        for m in new_proofs {
            for op in self.held.remove(&m).unwrap_or_default() {
                self.held_ids.remove(&op.id());
                let chain =
                    ChainRef::from_bytes(*op.attestation().expect("held ops are signed").chain());
                match self.state().missing(&chain) {
                    Some(still) => self.hold(still, op),
                    None => {
                        writes.push(Write::Release(op.id()));
                        to_apply.push((None, op));
                    }
                }
            }
        }

        // 4. Authorized apply.
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(to_apply.len());
        let mut batch: Vec<Op> = Vec::with_capacity(to_apply.len());
        for (slot, op) in to_apply {
            slots.push(slot);
            batch.push(op);
        }
        // 5 (decided before the apply, run in its transaction). Revocations: re-decide from the
        //    first logged op whose chain names a revoked delegation. Ops of this batch are
        //    decided with the revocation already registered.
        if !revoked.is_empty() && !self.first_use_complete {
            self.rebuild_first_use().map_err(ApplyError::Store)?;
        }
        let revoked_from = revoked
            .iter()
            .filter_map(|c| self.state().first_use(c))
            .min();
        //    Equivocation cutoffs: re-decide from the equivocated op, if it is logged (the log is
        //    gap-free per replica, so nothing later of the replica is logged otherwise).
        let from = min_lamport(
            revoked_from,
            self.cut_from(&cuts).map_err(ApplyError::Store)?,
        );
        // `batch` is kept to report the evidence of an equivocation the tree rejects.
        let (report, redecision) = self.tree.apply_with(
            batch.iter().cloned(),
            |store| run_writes(store, &writes),
            from,
        )?;
        let mut released = report.released;
        let mut late_writes: Vec<Write> = Vec::new();
        let mut late_cuts: Vec<OpId> = Vec::new();
        // The cutoffs before the tree's equivocations are recorded, to restore if step 6 fails.
        let saved_cuts = report
            .ops
            .iter()
            .any(|r| r.outcome == Outcome::Rejected(Rejection::Equivocation))
            .then(|| self.state().equivocations.clone());
        for ((slot, r), op) in slots.into_iter().zip(report.ops).zip(batch) {
            // Ops released from the hold report the tree's outcome as it is.
            let Some(i) = slot else {
                released.push(r);
                continue;
            };
            items[i] = Some(match r.outcome {
                Outcome::Rejected(Rejection::Equivocation) => {
                    match self.known_op(op.id()).map_err(ApplyError::Store)? {
                        Some(first) if first != op => {
                            self.detected(&first, &op, &mut late_writes, &mut late_cuts);
                            Err(equivocation(first, op))
                        }
                        _ => Err(IngestError::Invalid {
                            id: r.id,
                            rejection: Rejection::Equivocation,
                        }),
                    }
                }
                Outcome::Rejected(rejection) => Err(IngestError::Invalid {
                    id: r.id,
                    rejection,
                }),
                outcome => Ok(Accepted::Op { id: r.id, outcome }),
            });
        }
        let mut events = report.events;

        let mut redecided = Vec::new();
        if let Some(r) = redecision {
            redecided = r.ops;
            events.extend(r.events);
        }
        // 6. Equivocations the tree found against the log, parked ops or the batch itself: the
        //    evidence and the re-decision it calls for, in a second transaction (if it fails,
        //    the replica is as if it had not received the conflicting op).
        if !late_writes.is_empty() {
            let done = self
                .cut_from(&late_cuts)
                .map_err(ApplyError::Store)
                .and_then(|from| {
                    self.tree.apply_with(
                        std::iter::empty(),
                        |store| run_writes(store, &late_writes),
                        from,
                    )
                });
            let (_, redecision) = match done {
                Ok(d) => d,
                Err(e) => {
                    if let Some(saved) = saved_cuts {
                        self.state_mut().equivocations = saved;
                    }
                    return Err(e);
                }
            };
            if let Some(r) = redecision {
                redecided.extend(r.ops);
                events.extend(r.events);
            }
            cuts.extend(late_cuts);
        }
        Ok(IngestReport {
            items: items
                .into_iter()
                .map(|i| i.expect("every item has a result"))
                .collect(),
            released,
            redecided,
            equivocations: cuts,
            events,
        })
    }

    /// Rebuilds the first-use times of delegations from the whole log (once after
    /// [`Authz::open`] over a non-empty log, before the first revocation is acted on).
    fn rebuild_first_use(&mut self) -> Result<(), S::Error> {
        let below = LogKey::new(Lamport::default(), ReplicaId::from_bytes([0; 32]));
        let mut uses = Vec::new();
        for e in self.tree.store().log_after(below)? {
            if let Some(att) = e.op.attestation() {
                uses.push((ChainRef::from_bytes(*att.chain()), e.op.lamport()));
            }
        }
        // A (Lamport 0, zero key) op cannot exist: Lamport times start at 1.
        for (chain, lamport) in uses {
            self.state().note_use(&chain, lamport);
        }
        self.first_use_complete = true;
        Ok(())
    }

    /// Registers equivocation evidence and queues its store record; notes the cutoff if it is
    /// new or lower.
    fn record_evidence(&mut self, e: Evidence, writes: &mut Vec<Write>, cuts: &mut Vec<OpId>) {
        let id = e.id();
        writes.push(entry_write(&Entry::Equivocation(e)));
        if self
            .state_mut()
            .add_equivocation(*id.replica().as_bytes(), id.seq())
        {
            cuts.push(id);
        }
    }

    /// Records the evidence made by `first` (known) and `second` (just verified), if it is
    /// evidence: both signed for this document with valid signatures. A known op that does not
    /// verify (applied without ingest) makes no evidence; the conflicting op is refused anyway.
    fn detected(&mut self, first: &Op, second: &Op, writes: &mut Vec<Write>, cuts: &mut Vec<OpId>) {
        let doc = self.state().document().id();
        let Ok(e) = Evidence::new(first.clone(), second.clone()) else {
            return;
        };
        if e.document() == doc && signature_valid(&doc, first) && signature_valid(&doc, second) {
            self.record_evidence(e, writes, cuts);
        }
    }

    /// Where re-decision for new equivocation cutoffs starts: the lowest Lamport time of a
    /// logged op at a cutoff.
    fn cut_from(&self, cuts: &[OpId]) -> Result<Option<Lamport>, S::Error> {
        let mut from = None;
        for id in cuts {
            from = min_lamport(from, self.tree.store().entry_lamport(*id)?);
        }
        Ok(from)
    }

    fn held_op(&self, id: OpId) -> Option<Op> {
        let m = self.held_ids.get(&id)?;
        self.held[m].iter().find(|o| o.id() == id).cloned()
    }

    /// The op with this id in the log or parked in the store.
    fn known_op(&self, id: OpId) -> Result<Option<Op>, S::Error> {
        let store = self.tree.store();
        if let Some(e) = store.entry(id)? {
            return Ok(Some(e.op));
        }
        store.pending_get(id)
    }

    fn hold(&mut self, missing: Missing, op: Op) {
        self.held_ids.insert(op.id(), missing);
        self.held.entry(missing).or_default().push(op);
    }
}

/// The store record of a document entry: keyed by the SHA-256 of its encoding, kind = its tag.
fn entry_write(e: &Entry) -> Write {
    let bytes = e.encode();
    let key: [u8; 32] = Sha256::digest(&bytes).into();
    Write::Entry(key, bytes[0], bytes)
}

fn run_writes<S: Store>(store: &mut S, writes: &[Write]) -> Result<(), S::Error> {
    for w in writes {
        match w {
            Write::Entry(key, kind, bytes) => {
                store.doc_entry_insert(key, *kind, bytes)?;
            }
            Write::Hold(op) => store.held_insert(op)?,
            Write::Release(id) => store.held_remove(*id)?,
        }
    }
    Ok(())
}

fn min_lamport(a: Option<Lamport>, b: Option<Lamport>) -> Option<Lamport> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One signed op's signature under ZIP-215, alone (the rare paths: evidence).
fn signature_valid(doc: &DocumentId, op: &Op) -> bool {
    let Some(a) = op.attestation() else {
        return false;
    };
    let Some(key) = usable_key(op.id().replica().as_bytes()) else {
        return false;
    };
    let msg = super::signing_input(doc, a.time(), &ChainRef::from_bytes(*a.chain()), op);
    let sig = ed25519_zebra::Signature::from_bytes(a.signature());
    ed25519_zebra::VerificationKey::try_from(key)
        .and_then(|vk| vk.verify(&sig, &msg))
        .is_ok()
}

fn equivocation(first: Op, second: Op) -> IngestError {
    IngestError::Equivocation(Box::new(Equivocation { first, second }))
}

/// A batch of entries decoded and signature-checked for one document: the pure, `Send` first
/// half of [`Authz::ingest`] (decode, document check, delegation signatures, op signatures in
/// one ZIP-215 batch with a per-op fallback). Only [`Verified::check`] makes one.
#[derive(Debug)]
pub struct Verified {
    doc: DocumentId,
    entries: Vec<Result<Entry, IngestError>>,
}

impl Verified {
    /// Decodes and checks `items` for document `doc`.
    pub fn check<I, B>(doc: DocumentId, items: I) -> Verified
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let mut entries: Vec<Result<Entry, IngestError>> = Vec::new();
        let mut keys: HashMap<[u8; 32], Option<ed25519_zebra::VerificationKeyBytes>> =
            HashMap::new();
        // (entry index, key, signature, signed message)
        let mut sigs = Vec::new();
        for b in items {
            let i = entries.len();
            let bytes = b.as_ref();
            let e = match Entry::decode(bytes) {
                Err(EntryDecodeError::Delegation(source)) => {
                    Err(IngestError::MalformedDelegation {
                        cid: crate::cid_of(&bytes[1..]),
                        source,
                    })
                }
                Err(e) => Err(e.into()),
                Ok(Entry::Delegation(d)) if !d.signature_valid() => {
                    Err(IngestError::BadDelegation { cid: d.cid() })
                }
                Ok(Entry::Equivocation(e)) => {
                    let (a, b) = e.ops();
                    if e.document() != doc {
                        Err(IngestError::WrongDocument {
                            id: e.id(),
                            expected: doc,
                            got: e.document(),
                        })
                    } else if usable_key(e.id().replica().as_bytes()).is_none() {
                        Err(IngestError::BadReplicaKey { id: e.id() })
                    } else if !signature_valid(&doc, a) || !signature_valid(&doc, b) {
                        Err(IngestError::BadSignature { id: e.id() })
                    } else {
                        Ok(Entry::Equivocation(e))
                    }
                }
                Ok(Entry::Op(op)) => match op.attestation() {
                    None => Err(IngestError::Unsigned { id: op.id() }),
                    Some(a) if a.doc() != doc.as_bytes() => Err(IngestError::WrongDocument {
                        id: op.id(),
                        expected: doc,
                        got: DocumentId::from_bytes(*a.doc()),
                    }),
                    Some(a) => {
                        let replica = *op.id().replica().as_bytes();
                        match *keys.entry(replica).or_insert_with(|| usable_key(&replica)) {
                            None => Err(IngestError::BadReplicaKey { id: op.id() }),
                            Some(key) => {
                                let chain = ChainRef::from_bytes(*a.chain());
                                let msg = super::signing_input(&doc, a.time(), &chain, &op);
                                let sig = ed25519_zebra::Signature::from_bytes(a.signature());
                                sigs.push((i, key, sig, msg));
                                Ok(Entry::Op(op))
                            }
                        }
                    }
                },
                Ok(e) => Ok(e),
            };
            entries.push(e);
        }
        let mut batch = ed25519_zebra::batch::Verifier::new();
        for (_, key, sig, msg) in &sigs {
            batch.queue((*key, *sig, msg));
        }
        if batch.verify(rand_core::OsRng).is_err() {
            for (i, key, sig, msg) in &sigs {
                let ok = ed25519_zebra::VerificationKey::try_from(*key)
                    .and_then(|vk| vk.verify(sig, msg))
                    .is_ok();
                if !ok {
                    if let Ok(Entry::Op(op)) = &entries[*i] {
                        let id = op.id();
                        entries[*i] = Err(IngestError::BadSignature { id });
                    }
                }
            }
        }
        Verified { doc, entries }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The key as ZIP-215 verification key bytes, unless it is not a point or has small order (a
/// small-order key would verify forged signatures).
fn usable_key(bytes: &[u8; 32]) -> Option<ed25519_zebra::VerificationKeyBytes> {
    let dalek = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()?;
    if dalek.is_weak() {
        return None;
    }
    ed25519_zebra::VerificationKey::try_from(*bytes).ok()?;
    Some(ed25519_zebra::VerificationKeyBytes::from(*bytes))
}
