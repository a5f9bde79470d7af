//! Capabilities for Canopy: `did:key` identities, UCAN 1.0 delegations and invocations, the
//! policy language, chain validation, subtree scopes for tree abilities, revocation records,
//! share links, and authorized apply — signed ops, document ids, the [`AuthzPolicy`] that decides
//! every op against the replay-time tree, and the verified ingest [`Authz`] (see its example).
//! Pure: no IO, no async; builds for `wasm32-unknown-unknown`.
//!
//! Wire formats and rules are specified in `spec/caps.md` (authorized apply: §11) and
//! `spec/ops.md` §Signed ops, with vectors in `spec/vectors/caps.json` and
//! `spec/vectors/signed_ops.json`.
//!
//! ```
//! use canopy_caps::{
//!     authorize, subtree_policy, Ability, Context, Decision, Delegation, DelegationFields,
//!     Proofs, Revocations, SecretKey, TreeRequest, Verifier, VerifyError,
//! };
//!
//! let mut rng = rand_core::OsRng;
//! let owner = SecretKey::generate(&mut rng);
//! let alice = SecretKey::generate(&mut rng);
//! let (root, folder, other) = ([0u8; 16], [1u8; 16], [2u8; 16]);
//!
//! // The owner lets Alice write inside `folder` until t = 2000.
//! let grant = Delegation::issue(
//!     &owner,
//!     DelegationFields {
//!         audience: alice.did(),
//!         subject: Some(owner.did()),
//!         command: Ability::Write.command(),
//!         policy: subtree_policy(&folder, &[]),
//!         expiration: Some(2000),
//!         not_before: None,
//!         meta: None,
//!     },
//!     &mut rng,
//! );
//! let mut proofs = Proofs::new();
//! let chain = [proofs.insert(grant.to_bytes().to_vec())];
//!
//! let mut verifier = Verifier::new();
//! let revocations = Revocations::new();
//! let ctx = Context { time: 1000, revocations: &revocations, op: None };
//! let (owner_did, alice_did) = (owner.did(), alice.did());
//! let child = [9u8; 16];
//! // Allowed below the folder, denied elsewhere: the ancestors come from the verifier's tree.
//! let inside = [folder, root];
//! let request = TreeRequest {
//!     owner: &owner_did,
//!     actor: &alice_did,
//!     ability: Ability::WriteMove,
//!     node: &child,
//!     ancestors: &inside,
//! };
//! assert!(authorize(&mut verifier, &proofs, &chain, &request, &ctx).is_allowed());
//! let outside = [other, root];
//! let request = TreeRequest { ancestors: &outside, ..request };
//! let denied = authorize(&mut verifier, &proofs, &chain, &request, &ctx);
//! assert!(matches!(denied, Decision::Deny { reason: VerifyError::MatchError { .. } }));
//! ```

mod authz;
mod command;
mod delegation;
mod did;
mod envelope;
pub mod fixtures;
mod invocation;
pub mod ipld_json;
mod key;
mod policy;
mod revocation;
mod share;
mod tree;
mod verify;

pub use authz::{
    chain_ref, sign_op, signing_input, Accepted, Authz, AuthzPolicy, AuthzState, ChainRef, Denial,
    Document, DocumentId, Entry, EntryDecodeError, Equivocation, Evidence, EvidenceError,
    GenesisError, IngestError, IngestReport, Missing, OpenError, SignError, Verdict, Verified,
    MAX_ENTRY_BYTES, MAX_EVIDENCE_BYTES, MAX_HELD, OP_SIGNATURE_DOMAIN,
};
pub use cid::Cid;
pub use ipld_core::ipld::Ipld;

pub use command::{Command, CommandError};
pub use delegation::{Delegation, DelegationFields};
pub use did::{Did, DidError};
pub use envelope::{cid_of, DecodeError, MAX_NESTING, MAX_TOKEN_BYTES, VARSIG_ED25519_DAG_CBOR};
pub use invocation::{Invocation, InvocationFields};
pub use key::{KeyError, SecretKey};
pub use policy::{Comparison, Policy, PolicyError, Selector, Statement};
pub use revocation::{Revocation, RevocationError, Revocations};
pub use share::{Claimed, ShareError, ShareLink};
pub use tree::{
    authorize, subtree_policy, tree_args, Ability, Decision, NodeBytes, TreeRequest,
    UnknownAbility, ABILITIES,
};
pub use verify::{
    Authorized, ClaimError, Context, OpRef, Proofs, Request, Verifier, VerifyError, MAX_CHAIN_DEPTH,
};
