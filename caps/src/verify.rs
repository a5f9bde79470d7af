//! Chain validation: the rules of `spec/caps.md` §Chain validation, with a CID-keyed cache of
//! decoded, signature-checked delegations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::envelope::cid_of;
use crate::{Command, DecodeError, Delegation, Did, Invocation, Revocations};

/// Longest accepted delegation chain.
pub const MAX_CHAIN_DEPTH: usize = 8;

/// Why a claim is not supported by its chain (the `InvalidClaim` class).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// No delegation, and the invoker is not the subject.
    #[error("no proof, and the invoker is not the subject")]
    NoProof,
    /// The root delegation is a powerline (`sub: null`): a chain must start at its subject.
    #[error("root delegation {cid} has a null subject")]
    RootPowerline {
        /// The root delegation.
        cid: Cid,
    },
    /// The root delegation is not issued by the subject.
    #[error("root delegation {cid} is issued by {issuer}, not by the subject")]
    RootNotSubject {
        /// The root delegation.
        cid: Cid,
        /// Its issuer.
        issuer: Did,
    },
    /// A delegation's command does not prove the requested command.
    #[error("the command of delegation {cid} does not prove {requested}")]
    CommandNotCovered {
        /// The delegation.
        cid: Cid,
        /// The command requested.
        requested: Command,
    },
}

/// Why a chain does not authorize a request. Variant names follow the UCAN fixtures' error classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The chain does not support the claim.
    #[error("InvalidClaim: {0}")]
    InvalidClaim(ClaimError),
    /// A delegation named by the chain is not available.
    #[error("UnavailableProof: {cid}")]
    UnavailableProof {
        /// The missing delegation.
        cid: Cid,
    },
    /// A delegation (or the invocation, `cid: None`) has expired.
    #[error("Expired: {} expired at {exp}, time is {at}", show(cid))]
    Expired {
        /// The delegation, or `None` for the invocation.
        cid: Option<Cid>,
        /// Its `exp`.
        exp: u64,
        /// The time checked against.
        at: u64,
    },
    /// A delegation is not valid yet.
    #[error("TooEarly: {cid} is not valid before {nbf}, time is {at}")]
    TooEarly {
        /// The delegation.
        cid: Cid,
        /// Its `nbf`.
        nbf: u64,
        /// The time checked against.
        at: u64,
    },
    /// A delegation's audience is not the next issuer (or the invoker).
    #[error("InvalidAudience: {cid} is not addressed to the next principal, {expected}")]
    InvalidAudience {
        /// The delegation.
        cid: Cid,
        /// The next delegation's issuer, or the invoker.
        expected: Did,
    },
    /// A delegation's subject is not the request's subject.
    #[error("InvalidSubject: {cid} is for another subject than the request's, {expected}")]
    InvalidSubject {
        /// The delegation.
        cid: Cid,
        /// The request's subject.
        expected: Did,
    },
    /// A signature (of a delegation, or of the invocation when `cid` is `None`) does not verify.
    #[error("InvalidSignature: {} by {issuer}", show(cid))]
    InvalidSignature {
        /// The delegation, or `None` for the invocation.
        cid: Option<Cid>,
        /// The claimed signer.
        issuer: Did,
    },
    /// The arguments do not satisfy a delegation's policy.
    #[error("MatchError: the arguments do not satisfy the policy of {cid}")]
    MatchError {
        /// The delegation whose policy failed.
        cid: Cid,
    },
    /// A delegation in the chain is revoked (for this op, past its cutoff).
    #[error("Revoked: {cid} revoked by {revoker}")]
    Revoked {
        /// The revoked delegation.
        cid: Cid,
        /// Issuer of the revocation.
        revoker: Did,
    },
    /// The chain has more than [`MAX_CHAIN_DEPTH`] delegations.
    #[error("TooDeep: chain of {depth} delegations, at most {max}")]
    TooDeep {
        /// The chain's length.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The chain names the same delegation twice.
    #[error("Cycle: {cid} appears twice in the chain")]
    Cycle {
        /// The repeated delegation.
        cid: Cid,
    },
    /// A delegation's bytes do not decode.
    #[error("MalformedProof: {cid}: {source}")]
    MalformedProof {
        /// The delegation.
        cid: Cid,
        /// The decoding error.
        source: DecodeError,
    },
}

fn show(cid: &Option<Cid>) -> String {
    cid.map_or_else(|| "the invocation".to_owned(), |c| c.to_string())
}

impl VerifyError {
    /// The UCAN fixture error class this error belongs to (`InvalidClaim`, `Expired`, …).
    pub fn class(&self) -> &'static str {
        match self {
            VerifyError::InvalidClaim(_) => "InvalidClaim",
            VerifyError::UnavailableProof { .. } => "UnavailableProof",
            VerifyError::Expired { .. } => "Expired",
            VerifyError::TooEarly { .. } => "TooEarly",
            VerifyError::InvalidAudience { .. } => "InvalidAudience",
            VerifyError::InvalidSubject { .. } => "InvalidSubject",
            VerifyError::InvalidSignature { .. } => "InvalidSignature",
            VerifyError::MatchError { .. } => "MatchError",
            VerifyError::Revoked { .. } => "Revoked",
            VerifyError::TooDeep { .. } => "TooDeep",
            VerifyError::Cycle { .. } => "Cycle",
            VerifyError::MalformedProof { .. } => "MalformedProof",
        }
    }
}

/// Delegation bytes by CID: what a chain's CIDs are resolved against.
#[derive(Debug, Clone, Default)]
pub struct Proofs {
    by_cid: HashMap<Cid, Vec<u8>>,
}

impl Proofs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores delegation bytes under their CID (computed here, so a store can never be forged)
    /// and returns the CID. Nothing is decoded or verified yet.
    pub fn insert(&mut self, bytes: Vec<u8>) -> Cid {
        let cid = cid_of(&bytes);
        self.by_cid.insert(cid, bytes);
        cid
    }

    /// The bytes stored under `cid`.
    pub fn get(&self, cid: &Cid) -> Option<&[u8]> {
        self.by_cid.get(cid).map(Vec::as_slice)
    }

    /// The stored delegation bytes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.by_cid.values().map(Vec::as_slice)
    }

    /// Number of stored delegations.
    pub fn len(&self) -> usize {
        self.by_cid.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_cid.is_empty()
    }
}

/// What is being asked: `invoker` wants to run `command` with `args` on `subject`'s resource.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The resource owner (for Canopy: the document owner's DID).
    pub subject: &'a Did,
    /// Who acts (the invocation issuer; for a tree op, the op's replica key).
    pub invoker: &'a Did,
    /// The command.
    pub command: &'a Command,
    /// Arguments the policies are evaluated over (for tree ops, derived by the verifier from the
    /// tree: see [`tree_args`](crate::tree_args)).
    pub args: &'a Ipld,
}

/// The op a request stands for, for per-replica revocation cutoffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRef {
    /// The replica (its 32-byte Ed25519 public key).
    pub replica: [u8; 32],
    /// The op's sequence number at that replica.
    pub seq: u64,
}

/// The time and revocation state a request is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Unix seconds (for tree ops: the op's signed timestamp, so every replica decides alike).
    pub time: u64,
    /// Known revocations.
    pub revocations: &'a Revocations,
    /// The op, when the request is a tree op; `None` for a plain invocation (any applicable
    /// revocation then denies).
    pub op: Option<OpRef>,
}

/// A successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    chain: Vec<Cid>,
    expiration: Option<u64>,
}

impl Authorized {
    /// The delegations used, root first.
    pub fn chain(&self) -> &[Cid] {
        &self.chain
    }
    /// The earliest expiry along the chain, if any.
    pub fn expiration(&self) -> Option<u64> {
        self.expiration
    }
}

/// Validates chains. Keeps decoded, signature-checked delegations keyed by CID, so a chain seen
/// before costs hash-map look-ups and policy evaluation, and no signature checks.
///
/// The cache holds at most [`Verifier::DEFAULT_CAPACITY`] delegations (or the limit given to
/// [`Verifier::with_capacity_limit`]); when a new delegation would exceed it, the cache is emptied
/// first. Only speed depends on the cache, never a decision.
#[derive(Debug)]
pub struct Verifier {
    cache: HashMap<Cid, Arc<Delegation>>,
    limit: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::with_capacity_limit(Self::DEFAULT_CAPACITY)
    }
}

impl Verifier {
    /// Default cache limit, in delegations.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// An empty verifier with the default cache limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty verifier caching at most `limit` delegations (at least 8, one full chain).
    pub fn with_capacity_limit(limit: usize) -> Self {
        Verifier {
            cache: HashMap::new(),
            limit: limit.max(MAX_CHAIN_DEPTH),
        }
    }

    /// Number of cached delegations.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Forgets every cached delegation.
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// The delegation `cid`, decoded and signature-checked (from the cache when seen before).
    pub fn delegation(
        &mut self,
        cid: &Cid,
        proofs: &Proofs,
    ) -> Result<Arc<Delegation>, VerifyError> {
        Ok(self.load(std::slice::from_ref(cid), proofs)?.remove(0))
    }

    /// Loads and checks every delegation of `chain`, in order; signatures not cached yet are
    /// verified first.
    fn load(
        &mut self,
        chain: &[Cid],
        proofs: &Proofs,
    ) -> Result<Vec<Arc<Delegation>>, VerifyError> {
        let mut out = Vec::with_capacity(chain.len());
        let mut fresh = Vec::new();
        for cid in chain {
            if let Some(d) = self.cache.get(cid) {
                out.push(Arc::clone(d));
                continue;
            }
            let bytes = proofs
                .get(cid)
                .ok_or(VerifyError::UnavailableProof { cid: *cid })?;
            let d = Delegation::decode(bytes)
                .map_err(|source| VerifyError::MalformedProof { cid: *cid, source })?;
            let d = Arc::new(d);
            fresh.push(Arc::clone(&d));
            out.push(d);
        }
        // Strict single verification (not batch: batch equations accept some signatures that
        // `verify_strict` rejects, and every replica must decide alike).
        for d in &fresh {
            if !d.signature_valid() {
                return Err(VerifyError::InvalidSignature {
                    cid: Some(d.cid()),
                    issuer: *d.issuer(),
                });
            }
        }
        if self.cache.len() + fresh.len() > self.limit {
            self.cache.clear();
        }
        for d in fresh {
            self.cache.insert(d.cid(), d);
        }
        Ok(out)
    }

    /// Checks that `chain` (delegation CIDs, root first) authorizes `request` in `ctx`.
    pub fn check(
        &mut self,
        chain: &[Cid],
        proofs: &Proofs,
        request: &Request<'_>,
        ctx: &Context<'_>,
    ) -> Result<Authorized, VerifyError> {
        let dlgs = self.check_shape(
            chain,
            proofs,
            request.subject,
            request.invoker,
            request.command,
            ctx.time,
        )?;
        for d in &dlgs {
            if !d.policy().matches(request.args) {
                return Err(VerifyError::MatchError { cid: d.cid() });
            }
        }
        ctx.revocations.check(&dlgs, ctx.op)?;
        Ok(Authorized {
            chain: chain.to_vec(),
            expiration: dlgs.iter().filter_map(|d| d.expiration()).min(),
        })
    }

    /// Every rule except policies and revocation: depth, cycles, availability, signatures, time
    /// bounds, principal alignment, subject and command. Used where the arguments are not known
    /// yet (e.g. when a share link is claimed). Returns the delegations, root first.
    pub fn check_shape(
        &mut self,
        chain: &[Cid],
        proofs: &Proofs,
        subject: &Did,
        invoker: &Did,
        command: &Command,
        time: u64,
    ) -> Result<Vec<Arc<Delegation>>, VerifyError> {
        if chain.len() > MAX_CHAIN_DEPTH {
            return Err(VerifyError::TooDeep {
                depth: chain.len(),
                max: MAX_CHAIN_DEPTH,
            });
        }
        if chain.is_empty() {
            return if invoker == subject {
                Ok(Vec::new())
            } else {
                Err(VerifyError::InvalidClaim(ClaimError::NoProof))
            };
        }
        let mut seen = HashSet::with_capacity(chain.len());
        for cid in chain {
            if !seen.insert(cid) {
                return Err(VerifyError::Cycle { cid: *cid });
            }
        }
        let dlgs = self.load(chain, proofs)?;

        // Time bounds.
        for d in &dlgs {
            if let Some(exp) = d.expiration() {
                if exp <= time {
                    return Err(VerifyError::Expired {
                        cid: Some(d.cid()),
                        exp,
                        at: time,
                    });
                }
            }
            if let Some(nbf) = d.not_before() {
                if nbf > time {
                    return Err(VerifyError::TooEarly {
                        cid: d.cid(),
                        nbf,
                        at: time,
                    });
                }
            }
        }
        // Principal alignment: each audience is the next issuer; the last is the invoker.
        for (i, d) in dlgs.iter().enumerate() {
            let expected = dlgs.get(i + 1).map_or(invoker, |next| next.issuer());
            if d.audience() != expected {
                return Err(VerifyError::InvalidAudience {
                    cid: d.cid(),
                    expected: *expected,
                });
            }
        }
        // Subject: the root names it and is issued by it; later ones name it or are powerlines.
        let root = &dlgs[0];
        match root.subject() {
            None => {
                return Err(VerifyError::InvalidClaim(ClaimError::RootPowerline {
                    cid: root.cid(),
                }))
            }
            Some(sub) if sub != root.issuer() => {
                return Err(VerifyError::InvalidClaim(ClaimError::RootNotSubject {
                    cid: root.cid(),
                    issuer: *root.issuer(),
                }))
            }
            Some(_) => {}
        }
        for d in &dlgs {
            if let Some(sub) = d.subject() {
                if sub != subject {
                    return Err(VerifyError::InvalidSubject {
                        cid: d.cid(),
                        expected: *subject,
                    });
                }
            }
        }
        // Commands, then policies.
        for d in &dlgs {
            if !d.command().proves(command) {
                return Err(VerifyError::InvalidClaim(ClaimError::CommandNotCovered {
                    cid: d.cid(),
                    requested: command.clone(),
                }));
            }
        }
        Ok(dlgs)
    }

    /// Validates an invocation: its own signature and expiry, then its `prf` chain for its
    /// command and arguments.
    pub fn verify_invocation(
        &mut self,
        invocation: &Invocation,
        proofs: &Proofs,
        ctx: &Context<'_>,
    ) -> Result<Authorized, VerifyError> {
        if !invocation.signature_valid() {
            return Err(VerifyError::InvalidSignature {
                cid: None,
                issuer: *invocation.issuer(),
            });
        }
        if let Some(exp) = invocation.expiration() {
            if exp <= ctx.time {
                return Err(VerifyError::Expired {
                    cid: None,
                    exp,
                    at: ctx.time,
                });
            }
        }
        let request = Request {
            subject: invocation.subject(),
            invoker: invocation.issuer(),
            command: invocation.command(),
            args: invocation.args(),
        };
        self.check(invocation.proofs(), proofs, &request, ctx)
    }
}
