//! Canopy sync: the sans-IO reconciliation protocol between replicas (`spec/sync.md`).
//!
//! * [`Session`] runs on a full replica (a [`canopy_tree::Tree`]): it reconciles with another
//!   full replica peer-to-peer or client-server — one round trip and a 32-byte digest when both
//!   are in sync, otherwise exact frontiers and then only the missing ops — and it serves partial
//!   replicas, sending only what its [`ReadFilter`] allows.
//! * [`PartialSession`] runs on a [`PartialReplica`]: subtree(X) plus the path from X to ROOT,
//!   kept exact by deltas since its last checkpoint, with local writes pushed to the full replica.
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
    MemoryPartial, PartialError, PartialMeta, PartialReplica, PartialStore, PartialViolation,
    SnapshotError, Subtree,
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
