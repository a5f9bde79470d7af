//! The extension's errors; each becomes the SQL error message of the failing call.

use canopy_tree::{ApplyError, DecodeError, LocalError, Rejection, SqliteStoreError};

/// Why a `canopy_*` call failed. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtError {
    /// An argument had the wrong SQL type or shape.
    #[error("{func}: argument {arg} ({name}) must be {expected}, got {got}")]
    Arg {
        func: &'static str,
        arg: usize,
        name: &'static str,
        expected: &'static str,
        got: String,
    },
    /// Wrong number of arguments.
    #[error("{func}: expected {expected} arguments, got {got}")]
    ArgCount {
        func: &'static str,
        expected: &'static str,
        got: usize,
    },
    /// An op blob did not decode.
    #[error("{func}: op blob {index} is not a valid op: {source}")]
    Decode {
        func: &'static str,
        index: usize,
        #[source]
        source: DecodeError,
    },
    /// The engine rejected an op (invalid for the document); the whole call was rolled back.
    #[error("{func}: op {op} rejected: {source}")]
    Rejected {
        func: &'static str,
        op: String,
        #[source]
        source: Rejection,
    },
    /// A node named by the call does not exist.
    #[error("{func}: unknown node {node}")]
    UnknownNode { func: &'static str, node: String },
    /// A local op could not be made (unknown node, cycle, node in trash, …).
    #[error("{func}: {source}")]
    Local {
        func: &'static str,
        #[source]
        source: LocalError<SqliteStoreError>,
    },
    /// Applying ops failed in the store; the batch was rolled back.
    #[error("{func}: {source}")]
    Apply {
        func: &'static str,
        #[source]
        source: ApplyError<SqliteStoreError>,
    },
    /// A writing function was called inside INSERT/UPDATE/DELETE, where it cannot be atomic.
    #[error("{func} writes the document and cannot run inside INSERT, UPDATE or DELETE (no savepoint is possible there); call it from a SELECT")]
    InsideWrite { func: &'static str },
    /// The store failed (SQLite error or corrupt stored data).
    #[error("{func}: store: {source}")]
    Store {
        func: &'static str,
        #[source]
        source: SqliteStoreError,
    },
}

impl ExtError {
    /// Wraps a store error of `func`.
    pub fn store(func: &'static str) -> impl FnOnce(SqliteStoreError) -> ExtError {
        move |source| ExtError::Store { func, source }
    }
}

impl From<ExtError> for rusqlite::Error {
    fn from(e: ExtError) -> Self {
        rusqlite::Error::UserFunctionError(Box::new(e))
    }
}
