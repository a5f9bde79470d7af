//! Canopy tree: a Kleppmann move-operation tree CRDT.
//!
//! Ops (create, move, delete/restore, set-payload) are totally ordered by `(lamport, replica)`
//! and applied by undo/do/redo; see `spec/ops.md` and `spec/delete.md`.

mod id;
mod op;
mod position;
#[cfg(feature = "sqlite-store")]
mod sqlite;
mod store;

pub use id::{Lamport, LogKey, NodeId, OpId, ParseIdError, ParseOpIdError, ReplicaId};
pub use op::{Op, OpKind, Payload, VersionVector};
pub use position::Position;
#[cfg(feature = "sqlite-store")]
pub use sqlite::{
    Ancestor, Durability, SqliteStore, SqliteStoreError, SubtreeEntry, SubtreeWalk, TxMisuse,
    UndoDecodeError,
};
pub use store::{Child, Effect, LogEntry, PayloadRecord, Placement, Store, Undo};
