//! Errors of the SQLite store.

use crate::id::OpId;

use super::UndoDecodeError;

/// Errors of the SQLite store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStoreError {
    /// SQLite reported an error (I/O, locking, constraint, …).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value has the wrong SQL type.
    #[error("stored value of unexpected type: {0}")]
    ColumnType(#[from] rusqlite::types::FromSqlError),
    /// The database has tables but is not a Canopy document.
    #[error("the database is not a Canopy document (application_id mismatch or foreign tables)")]
    NotCanopy,
    /// The database uses another schema version.
    #[error("schema version {found} is not supported (this build reads version {expected})")]
    SchemaVersion { found: i64, expected: i64 },
    /// A stored op blob did not decode.
    #[error("corrupt op blob for {id}: {source}")]
    CorruptOp {
        id: OpId,
        #[source]
        source: crate::codec::DecodeError,
    },
    /// A stored undo blob did not decode.
    #[error("corrupt undo records for {id}: {source}")]
    CorruptUndo {
        id: OpId,
        #[source]
        source: UndoDecodeError,
    },
    /// A stored value is out of its domain (wrong blob length, unknown effect code, …).
    #[error("corrupt column {table}.{column}")]
    CorruptColumn {
        table: &'static str,
        column: &'static str,
    },
    /// A seq or Lamport time of 2^63 or more: SQLite integers are signed 64-bit.
    #[error("{0} is too large to store (limit 2^63 - 1)")]
    OutOfRange(u64),
    /// A row references a replica index that is not in the `replicas` table.
    #[error("unknown replica index {0}")]
    UnknownReplicaIndex(i64),
    /// `commit`/`rollback` without `begin`, or `begin` twice.
    #[error("transaction misuse: {0}")]
    Transaction(TxMisuse),
}

/// How a transaction call was out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxMisuse {
    /// `begin` inside an open batch.
    #[error("begin inside an open batch")]
    Nested,
    /// `commit` or `rollback` with no open batch.
    #[error("no open batch")]
    NotOpen,
}
