//! What a [`super::Session`] needs from the full replica it runs over: its tree, the document
//! entries it holds, and the one place where items pushed by a peer enter it.
//!
//! Two kinds implement it: a plain [`Tree`] (trusted or unsigned use: tests, benchmarks; it keeps
//! no document entries) and an authorized [`Authz`] replica, whose ingest verifies signatures,
//! registers proofs, holds ops whose proofs are unknown and decides every op by capability.

use canopy_caps::{Accepted, Authz, IngestError, IngestReport};
use canopy_tree::{
    ApplyError, ChangeEvent, Op, OpId, Outcome as OpOutcome, Policy, Rejection, Store, Tree,
};

use crate::filter::ReadContext;
use crate::wire::{EntryId, RefusalCode};

/// The store error of a replica.
pub type ReplicaError<R> = <<R as Replica>::Store as Store>::Error;

/// A pushed item the replica did not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusedItem {
    /// An op of an `Ops` batch.
    Op(OpId),
    /// An item of an `Entries` batch, by the id of its bytes.
    Entry(EntryId),
}

/// What a replica did with a pushed batch.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Ingested {
    /// The items it refused, with why, in input order. Ops held until their proofs arrive are
    /// not refused.
    pub refused: Vec<(RefusedItem, RefusalCode)>,
    /// Net tree changes, in order.
    pub events: Vec<ChangeEvent>,
}

/// A full replica as a sync session drives it.
pub trait Replica {
    /// The tree's store.
    type Store: Store;
    /// The tree's policy.
    type Policy: Policy;
    /// The tree (reads, frontier, log).
    fn tree(&self) -> &Tree<Self::Store, Self::Policy>;
    /// The state read filters decide against, as it is now.
    fn read_context(&self) -> ReadContext<'_>;
    /// Every document entry held besides the op log (`canopy_caps::Entry` encodings: genesis,
    /// delegations, chains, revocations, equivocation evidence, then ops held for unknown
    /// proofs), in an order a peer can ingest them in.
    fn entries(&self) -> Result<Vec<Vec<u8>>, ReplicaError<Self>>;
    /// Ingests ops pushed by the peer. A refused op changes nothing (a denied op is logged as
    /// a no-op, as on every replica).
    fn ingest_ops(&mut self, ops: Vec<Op>) -> Result<Ingested, ApplyError<ReplicaError<Self>>>;
    /// Ingests document entries pushed by the peer.
    fn ingest_entries(
        &mut self,
        entries: Vec<Vec<u8>>,
    ) -> Result<Ingested, ApplyError<ReplicaError<Self>>>;
}

impl<S: Store, P: Policy> Replica for Tree<S, P> {
    type Store = S;
    type Policy = P;
    fn tree(&self) -> &Tree<S, P> {
        self
    }
    fn read_context(&self) -> ReadContext<'_> {
        ReadContext::plain()
    }
    fn entries(&self) -> Result<Vec<Vec<u8>>, S::Error> {
        Ok(Vec::new())
    }
    fn ingest_ops(&mut self, ops: Vec<Op>) -> Result<Ingested, ApplyError<S::Error>> {
        let report = self.apply(ops)?;
        let mut out = Ingested::default();
        for r in report.all() {
            let code = match &r.outcome {
                OpOutcome::Rejected(Rejection::Equivocation) => RefusalCode::Equivocation,
                OpOutcome::Rejected(_) => RefusalCode::Invalid,
                OpOutcome::Denied { .. } => RefusalCode::Denied,
                _ => continue,
            };
            out.refused.push((RefusedItem::Op(r.id), code));
        }
        out.events = report.events;
        Ok(out)
    }
    fn ingest_entries(&mut self, entries: Vec<Vec<u8>>) -> Result<Ingested, ApplyError<S::Error>> {
        Ok(Ingested {
            refused: entries
                .iter()
                .map(|e| (RefusedItem::Entry(EntryId::of(e)), RefusalCode::Unsupported))
                .collect(),
            events: Vec::new(),
        })
    }
}

/// The refusal code of an ingest error.
pub fn refusal_code(e: &IngestError) -> RefusalCode {
    match e {
        IngestError::Decode(_) | IngestError::MalformedDelegation { .. } => {
            RefusalCode::MalformedEntry
        }
        IngestError::Unsigned { .. } => RefusalCode::Unsigned,
        IngestError::WrongDocument { .. } | IngestError::WrongGenesis { .. } => {
            RefusalCode::WrongDocument
        }
        IngestError::BadSignature { .. } => RefusalCode::BadSignature,
        IngestError::BadReplicaKey { .. } => RefusalCode::BadReplicaKey,
        IngestError::BadDelegation { .. } => RefusalCode::BadDelegation,
        IngestError::Equivocation(_) => RefusalCode::Equivocation,
        IngestError::HoldFull { .. } => RefusalCode::HoldFull,
        IngestError::Invalid {
            rejection: Rejection::Equivocation,
            ..
        } => RefusalCode::Equivocation,
        // `Invalid`, and kinds of invalid input caps may add later
        _ => RefusalCode::Invalid,
    }
}

/// Turns an ingest report into refusals: `items` names the input items in order.
fn refusals(report: IngestReport, items: Vec<RefusedItem>) -> Ingested {
    let mut out = Ingested::default();
    for (item, r) in items.into_iter().zip(&report.items) {
        let code = match r {
            Err(e) => refusal_code(e),
            Ok(Accepted::Op {
                outcome: OpOutcome::Denied { .. },
                ..
            }) => RefusalCode::Denied,
            Ok(Accepted::Op {
                outcome: OpOutcome::Rejected(Rejection::Equivocation),
                ..
            }) => RefusalCode::Equivocation,
            Ok(Accepted::Op {
                outcome: OpOutcome::Rejected(_),
                ..
            }) => RefusalCode::Invalid,
            Ok(_) => continue,
        };
        out.refused.push((item, code));
    }
    out.events = report.events;
    out
}

impl<S: Store> Replica for Authz<S> {
    type Store = S;
    type Policy = canopy_caps::AuthzPolicy;
    fn tree(&self) -> &Tree<S, canopy_caps::AuthzPolicy> {
        Authz::tree(self)
    }
    fn read_context(&self) -> ReadContext<'_> {
        ReadContext::authorized(self.state())
    }
    fn entries(&self) -> Result<Vec<Vec<u8>>, S::Error> {
        // Raw bytes from the store (arrival order: proofs before what they prove), so nothing
        // is decoded to be sent; then the held ops.
        let store = Authz::tree(self).store();
        let mut out: Vec<Vec<u8>> = store.doc_entries()?.into_iter().map(|(_, b)| b).collect();
        out.extend(store.held_ops()?.iter().map(Op::encode));
        Ok(out)
    }
    fn ingest_ops(&mut self, ops: Vec<Op>) -> Result<Ingested, ApplyError<S::Error>> {
        let items = ops.iter().map(|o| RefusedItem::Op(o.id())).collect();
        let report = self.ingest(ops.iter().map(Op::encode))?;
        Ok(refusals(report, items))
    }
    fn ingest_entries(&mut self, entries: Vec<Vec<u8>>) -> Result<Ingested, ApplyError<S::Error>> {
        let items = entries
            .iter()
            .map(|e| RefusedItem::Entry(EntryId::of(e)))
            .collect();
        let report = self.ingest(&entries)?;
        Ok(refusals(report, items))
    }
}
