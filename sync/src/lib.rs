//! Canopy sync: the sans-IO reconciliation protocol between replicas (`spec/sync.md`).
//!
//! * [`Session`] runs on a full [`Replica`]: an authorized `canopy_caps::Authz` replica, or a
//!   plain [`canopy_tree::Tree`] for trusted or unsigned use. It reconciles with another full
//!   replica peer-to-peer or client-server — one round trip and two digests (ops and document
//!   entries) when both are in sync, otherwise exact frontiers, the entries the peer lacks and
//!   then only the missing ops — and it serves partial replicas, sending only what its
//!   [`ReadFilter`] allows ([`CapsRead`]: the reader's capability chain, decided against the
//!   replica's current authorization state). Everything a peer pushes goes through the
//!   replica's ingest (verified and authorized for `Authz`); refused items come back typed.
//! * [`PartialSession`] runs on a [`PartialReplica`]: subtree(X) plus the path from X to ROOT,
//!   kept exact by deltas since its last checkpoint, with local writes pushed to the full replica.
//!   Its state lives in a [`PartialStore`]: [`MemoryPartial`], or one SQLite file per replica
//!   (`SqlitePartial`, feature `sqlite`; each delta one transaction with its checkpoint).
//! * [`memory`] pumps messages between two sessions in memory (tests, benchmarks); the WebSocket
//!   transport is an adapter of the same shape.
//!
//! No IO happens here: `receive(bytes)` returns an [`Outcome`] with the messages to send.
//!
//! ```
//! use canopy_sync::{memory, AllowAll, Options, Session};
//! use canopy_tree::{MemoryStore, NodeId, Place, ReplicaId, Store, Tree};
//!
//! let mut a = Tree::new(MemoryStore::new(), ReplicaId::from_bytes([1; 32]));
//! let mut b = Tree::new(MemoryStore::new(), ReplicaId::from_bytes([2; 32]));
//! a.create(NodeId::ROOT, Place::Last, Some(b"from a".to_vec()))?;
//! b.create(NodeId::ROOT, Place::Last, Some(b"from b".to_vec()))?;
//!
//! let mut sa = memory::FullPeer::new(&mut a, Session::new(AllowAll, Options::default()));
//! let mut sb = memory::FullPeer::new(&mut b, Session::new(AllowAll, Options::default()));
//! let stats = memory::pump(&mut sa, &mut sb, None)?;
//! assert_eq!(stats.round_trips, 2);
//! assert_eq!(a.child_count(NodeId::ROOT)?, 2);
//! assert_eq!(a.store().frontier()?, b.store().frontier()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A partial replica of one subtree, served through a read filter that covers only that subtree,
//! then a local write pushed back:
//!
//! ```
//! use canopy_sync::{memory, Options, PartialReplica, PartialSession, Session, SubtreeScope};
//! use canopy_tree::{MemoryStore, NodeId, Place, ReplicaId, Tree};
//!
//! let mut server = Tree::new(MemoryStore::new(), ReplicaId::from_bytes([1; 32]));
//! let shared = server.create(NodeId::ROOT, Place::Last, Some(b"shared".to_vec()))?.node();
//! let private = server.create(NodeId::ROOT, Place::Last, Some(b"private".to_vec()))?.node();
//! let item = server.create(shared, Place::Last, Some(b"item".to_vec()))?.node();
//!
//! let mut phone = PartialReplica::new(shared, ReplicaId::from_bytes([2; 32]));
//! let sync = |phone: &mut PartialReplica, server: &mut Tree<MemoryStore>| {
//!     let mut p = memory::PartialPeer::new(phone, PartialSession::new(Options::default()));
//!     let filter = SubtreeScope::new(shared); // issue 5: built from the phone's capability
//!     let mut s = memory::FullPeer::new(server, Session::new(filter, Options::default()));
//!     memory::pump(&mut p, &mut s, None)
//! };
//! sync(&mut phone, &mut server)?;
//! assert_eq!(phone.children(shared), vec![item]);
//! assert!(!phone.contains(private));
//!
//! let note = NodeId::from_bytes([7; 16]);
//! phone.create(note, item, Place::Last, Some(b"from the phone".to_vec()))?;
//! sync(&mut phone, &mut server)?;
//! assert_eq!(server.parent(note)?, Some(item));
//! assert!(phone.unacked().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Authorized replicas: the owner's replica and a reader's. The reader's grant (a delegation and
//! its chain, registered in the owner's replica by the transport that authenticated the reader)
//! covers one folder, so it may sync that subtree but not the whole log:
//!
//! ```
//! use std::sync::Arc;
//! use canopy_caps::{
//!     chain_ref, subtree_policy, Ability, Authz, Delegation, DelegationFields, Document, Entry,
//!     SecretKey,
//! };
//! use canopy_sync::{memory, AllowAll, CapsRead, Options, PartialReplica, PartialSession, Session};
//! use canopy_tree::{MemoryStore, NodeId, Place, ReplicaId};
//!
//! let owner = SecretKey::from_bytes(&[1; 32]);
//! let reader = SecretKey::from_bytes(&[2; 32]);
//! let doc = Document::new(owner.did(), [0; 16]);
//! let mut server = Authz::new(MemoryStore::new(), doc, ReplicaId::from_bytes(*owner.did().public_key()))?;
//! server.state_mut().set_signer(owner.clone(), chain_ref(&[]), 1_700_000_000);
//! let shared = server.tree_mut().create(NodeId::ROOT, Place::Last, None)?.node();
//! let private = server.tree_mut().create(NodeId::ROOT, Place::Last, Some(b"secret".to_vec()))?.node();
//! let item = server.tree_mut().create(shared, Place::Last, Some(b"item".to_vec()))?.node();
//!
//! let grant = Delegation::issue_with_nonce(&owner, DelegationFields {
//!     audience: reader.did(),
//!     subject: Some(owner.did()),
//!     command: Ability::Read.command(),
//!     policy: subtree_policy(shared.as_bytes(), &[]),
//!     expiration: None,
//!     not_before: None,
//!     meta: None,
//! }, vec![0; 12]);
//! server.ingest([Entry::Delegation(grant.clone()).encode(), Entry::Chain(vec![grant.cid()]).encode()])?;
//! let filter = || CapsRead::new(reader.did(), chain_ref(&[grant.cid()]), Arc::new(|| 1_700_000_000));
//!
//! // the subtree: served
//! let mut phone = PartialReplica::new(shared, ReplicaId::from_bytes([9; 32]));
//! let mut p = memory::PartialPeer::new(&mut phone, PartialSession::new(Options::default()));
//! let mut s = memory::FullPeer::new(&mut server, Session::new(filter(), Options::default()));
//! memory::pump(&mut p, &mut s, None)?;
//! assert_eq!(phone.children(shared), vec![item]);
//! assert!(!phone.contains(private));
//!
//! // the whole log (ops and entries): refused, nothing sent
//! let mut laptop = Authz::new(MemoryStore::new(), doc, ReplicaId::from_bytes([8; 32]))?;
//! let mut l = memory::FullPeer::new(&mut laptop, Session::new(AllowAll, Options::default()));
//! let mut s = memory::FullPeer::new(&mut server, Session::new(filter(), Options::default()));
//! assert!(memory::pump(&mut l, &mut s, None).is_err());
//! assert_eq!(laptop.tree().node_count()?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "bench")]
pub mod bench;
mod delta;
mod filter;
pub mod memory;
#[cfg(feature = "net")]
pub mod net;
mod partial;
mod session;
mod wire;

pub use filter::{AllowAll, CapsRead, Clock, ReadContext, ReadFilter, SubtreeScope};
pub use partial::{
    MemoryPartial, OpSigner, PartialError, PartialMeta, PartialReplica, PartialStore,
    PartialViolation, SnapshotError, Subtree,
};
#[cfg(feature = "sqlite")]
pub use partial::{SqlitePartial, SqlitePartialError};
pub use session::{
    refusal_code, Event, Ingested, Options, Outcome, PartialSession, Phase, Progress, RefusedItem,
    Replica, ReplicaError, Session, SyncError,
};
pub use wire::{
    entries_digest, frontier_count, frontier_digest, gone_digest, EntriesSummary, EntryId,
    ErrorCode, Message, Mode, NodeRecord, PathEntry, PayloadState, RefusalCode, WireError,
    MAX_ITEMS, MAX_MESSAGE_LEN, MAX_VV_ENTRIES, PROTOCOL_VERSION,
};
