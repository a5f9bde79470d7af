//! Canopy tree: a Kleppmann move-operation tree CRDT.
//!
//! Replicas make ops (create, move, delete/restore, set-payload) identified by
//! `(replica, seq)` and totally ordered by `(lamport, replica)`. A [`Tree`] applies ops from any
//! replica in any order and converges: an op older than the newest applied one is applied by
//! undo/do/redo, a move that would make a cycle is a logged no-op, a delete that had not seen
//! new content in its subtree does not hide it, and a [`Policy`] decides every op against the
//! replay-time tree. The rules and the wire format are in `spec/ops.md` and `spec/delete.md`.
//!
//! Storage is behind the [`Store`] trait; [`MemoryStore`] is the reference implementation.
//! The crate does no IO and builds for `wasm32-unknown-unknown`.
//!
//! ```
//! use canopy_tree::{ChangeEvent, MemoryStore, NodeId, Op, Place, ReplicaId, Tree};
//!
//! let alice = ReplicaId::from_bytes([1; 32]);
//! let bob = ReplicaId::from_bytes([2; 32]);
//! let mut a = Tree::new(MemoryStore::new(), alice);
//! let mut b = Tree::new(MemoryStore::new(), bob);
//!
//! // Alice makes a list; Bob receives it as encoded ops.
//! let list = a.create(NodeId::ROOT, Place::Last, Some(b"groceries".to_vec()))?.op;
//! let item = a.create(list.node(), Place::Last, Some(b"milk".to_vec()))?.op;
//! let wire: Vec<Vec<u8>> = [&list, &item].iter().map(|op| op.encode()).collect();
//! let ops = wire.iter().map(|w| Op::decode(w)).collect::<Result<Vec<_>, _>>()?;
//! let report = b.apply(ops)?;
//! assert!(matches!(report.events[0], ChangeEvent::Created { .. }));
//!
//! // Concurrently, Alice deletes the list and Bob adds an item to it: the delete had not
//! // seen Bob's item, so the list stays visible on both replicas.
//! let del = a.delete(list.node())?.op;
//! let eggs = b.create(list.node(), Place::Last, Some(b"eggs".to_vec()))?.op;
//! a.apply([eggs])?;
//! b.apply([del])?;
//! for t in [&a, &b] {
//!     assert!(!t.is_deleted(list.node())?);
//!     assert_eq!(t.child_count(list.node())?, 2);
//!     t.check_invariants()?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod id;
mod memory;
mod op;
mod policy;
mod position;
mod report;
#[cfg(feature = "sqlite-store")]
mod sqlite;
mod store;
mod tree;

pub use codec::{
    DecodeError, MAX_PAYLOAD_LEN, MAX_SEEN_ENTRIES, SIGNED_HEADER_LEN, VERSION, VERSION_SIGNED,
};
pub use id::{Lamport, LogKey, NodeId, OpId, ParseIdError, ParseOpIdError, ReplicaId};
pub use memory::MemoryStore;
pub use op::{Attestation, Op, OpKind, Payload, VersionVector};
pub use policy::{AllowAll, Ancestors, Decision, Policy, ReplayView};
pub use position::{Position, PositionError, MAX_POSITION_LEN};
pub use report::{ApplyError, ApplyReport, ChangeEvent, OpReport, Outcome, Rejection};
#[cfg(feature = "sqlite-store")]
pub use sqlite::{
    Ancestor, Durability, SqliteStore, SqliteStoreError, SubtreeEntry, SubtreeWalk, TxMisuse,
    UndoDecodeError,
};
pub use store::{Child, Effect, LogEntry, PayloadRecord, Placement, Store, Undo};
pub use tree::{InvariantError, LocalError, LocalOp, Place, Subtree, Tree, Violation};
