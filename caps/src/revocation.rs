//! Revocation records: a signed statement that a delegation stops authorizing ops past a
//! per-replica sequence cutoff (`spec/caps.md` §Revocation; semantics: DESIGN.md §6).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::envelope::{Envelope, Fields, Tag};
use crate::verify::OpRef;
use crate::{DecodeError, Delegation, Did, SecretKey, VerifyError};

pub(crate) const REV: &str = "canopy/rev";

/// A signed revocation: ops under `delegation` by replica `r` stay valid up to `cutoffs[r]`
/// (replicas not listed: cutoff 0, i.e. none); chains whose next delegation after the revoked one
/// is in `keep` are not affected.
#[derive(Debug, Clone)]
pub struct Revocation {
    envelope: Envelope,
    bytes: Vec<u8>,
    issuer: Did,
    delegation: Cid,
    cutoffs: BTreeMap<[u8; 32], u64>,
    keep: BTreeSet<Cid>,
}

/// Error building or accepting a revocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The bytes are not a revocation record.
    #[error("malformed revocation: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify.
    #[error("revocation signature by {issuer} does not verify")]
    InvalidSignature {
        /// The claimed issuer.
        issuer: Did,
    },
}

impl Revocation {
    /// Signs a revocation of `delegation` by `issuer`.
    pub fn issue(
        issuer: &SecretKey,
        delegation: Cid,
        cutoffs: BTreeMap<[u8; 32], u64>,
        keep: BTreeSet<Cid>,
    ) -> Self {
        let mut p = BTreeMap::new();
        p.insert("iss".to_owned(), Ipld::String(issuer.did().to_string()));
        p.insert("dlg".to_owned(), Ipld::Link(delegation));
        p.insert(
            "cut".to_owned(),
            Ipld::List(
                cutoffs
                    .iter()
                    .map(|(r, s)| {
                        Ipld::List(vec![Ipld::Bytes(r.to_vec()), Ipld::Integer((*s).into())])
                    })
                    .collect(),
            ),
        );
        if !keep.is_empty() {
            p.insert(
                "keep".to_owned(),
                Ipld::List(keep.iter().copied().map(Ipld::Link).collect()),
            );
        }
        let bytes = Envelope::seal(
            issuer,
            Tag {
                kind: REV,
                version: "1.0.0",
            },
            p,
        );
        Self::decode(&bytes).expect("a freshly sealed revocation decodes and verifies")
    }

    /// Decodes a revocation and checks its signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, RevocationError> {
        let envelope = Envelope::decode(bytes, REV)?;
        let mut f = Fields::new(envelope.payload.clone());
        let issuer = f.did("iss")?;
        let delegation = match f.required("dlg")? {
            Ipld::Link(c) => c,
            _ => return Err(DecodeError::InvalidField { field: "dlg" }.into()),
        };
        let bad_cut = || DecodeError::InvalidField { field: "cut" };
        let Ipld::List(cut) = f.required("cut")? else {
            return Err(bad_cut().into());
        };
        let mut cutoffs = BTreeMap::new();
        let mut last: Option<[u8; 32]> = None;
        for entry in cut {
            let Ipld::List(pair) = entry else {
                return Err(bad_cut().into());
            };
            let [Ipld::Bytes(r), Ipld::Integer(s)] = pair.as_slice() else {
                return Err(bad_cut().into());
            };
            let replica: [u8; 32] = r.as_slice().try_into().map_err(|_| bad_cut())?;
            let seq = u64::try_from(*s).map_err(|_| bad_cut())?;
            // Canonical: strictly ascending replicas.
            if last.is_some_and(|l| l >= replica) {
                return Err(bad_cut().into());
            }
            last = Some(replica);
            cutoffs.insert(replica, seq);
        }
        let keep = match f.take("keep") {
            None => BTreeSet::new(),
            Some(v) => {
                let mut fk = Fields::new(BTreeMap::from([("keep".to_owned(), v)]));
                let links = fk.links("keep")?;
                let set: BTreeSet<Cid> = links.iter().copied().collect();
                let sorted: Vec<Cid> = set.iter().copied().collect();
                if links.is_empty() || sorted != links {
                    return Err(DecodeError::InvalidField { field: "keep" }.into());
                }
                set
            }
        };
        f.finish()?;
        if !envelope.signature_valid(&issuer) {
            return Err(RevocationError::InvalidSignature { issuer });
        }
        Ok(Revocation {
            envelope,
            bytes: bytes.to_vec(),
            issuer,
            delegation,
            cutoffs,
            keep,
        })
    }

    /// The record's bytes.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The record's CID.
    pub fn cid(&self) -> Cid {
        self.envelope.cid
    }
    /// Who signed it.
    pub fn issuer(&self) -> &Did {
        &self.issuer
    }
    /// The revoked delegation.
    pub fn delegation(&self) -> &Cid {
        &self.delegation
    }
    /// Per-replica cutoffs: ops with `seq <= cutoff` stay valid.
    pub fn cutoffs(&self) -> &BTreeMap<[u8; 32], u64> {
        &self.cutoffs
    }
    /// Child delegations exempted from this revocation.
    pub fn keep(&self) -> &BTreeSet<Cid> {
        &self.keep
    }

    /// The highest `seq` of `replica` this revocation still accepts.
    pub fn cutoff(&self, replica: &[u8; 32]) -> u64 {
        self.cutoffs.get(replica).copied().unwrap_or(0)
    }
}

/// Known revocations, indexed by the delegation they name.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    by_delegation: HashMap<Cid, Vec<Arc<Revocation>>>,
}

impl Revocations {
    /// No revocations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a (decoded, hence signature-checked) revocation. Whether its issuer may revoke is
    /// decided per chain, when a chain uses the delegation.
    pub fn insert(&mut self, revocation: Revocation) {
        let list = self.by_delegation.entry(revocation.delegation).or_default();
        if !list.iter().any(|r| r.cid() == revocation.cid()) {
            list.push(Arc::new(revocation));
        }
    }

    /// The records, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> + '_ {
        self.by_delegation.values().flatten().map(|r| &**r)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.by_delegation.values().map(Vec::len).sum()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_delegation.is_empty()
    }

    /// Applies the revocation rule to a loaded chain (root first).
    ///
    /// A record naming `chain[i]` counts when its issuer is the issuer of `chain[0..=i]` or the
    /// audience of `chain[i]` (a holder may renounce), and `chain[i+1]` is not in its `keep` set.
    /// It denies a plain invocation outright, and an op whose `seq` exceeds the record's cutoff
    /// for the op's replica.
    pub(crate) fn check(
        &self,
        chain: &[Arc<Delegation>],
        op: Option<OpRef>,
    ) -> Result<(), VerifyError> {
        if self.by_delegation.is_empty() {
            return Ok(());
        }
        for (i, d) in chain.iter().enumerate() {
            let Some(records) = self.by_delegation.get(&d.cid()) else {
                continue;
            };
            for r in records {
                let may_revoke = chain[..=i].iter().any(|up| up.issuer() == r.issuer())
                    || d.audience() == r.issuer();
                let kept = chain
                    .get(i + 1)
                    .is_some_and(|next| r.keep.contains(&next.cid()));
                if !may_revoke || kept {
                    continue;
                }
                let denied = op.is_none_or(|op| op.seq > r.cutoff(&op.replica));
                if denied {
                    return Err(VerifyError::Revoked {
                        cid: d.cid(),
                        revoker: *r.issuer(),
                    });
                }
            }
        }
        Ok(())
    }
}
