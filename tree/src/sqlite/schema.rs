//! The SQLite schema (`spec/sqlite.md`): created on first open, checked on every open.

use rusqlite::Connection;

use super::SqliteStoreError;

/// `PRAGMA application_id` of a Canopy document database ("Cnpy").
pub(super) const APPLICATION_ID: i64 = 0x436e_7079;
/// `PRAGMA user_version`: the schema version this code reads and writes.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// Tables and indexes. One database holds one document.
const DDL: &str = "
CREATE TABLE replicas(
    idx      INTEGER PRIMARY KEY,
    key      BLOB NOT NULL UNIQUE CHECK (length(key) = 32)
);
CREATE TABLE ops(
    replica INTEGER NOT NULL REFERENCES replicas(idx),
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    lamport INTEGER NOT NULL,
    node    BLOB NOT NULL,
    op      BLOB NOT NULL,
    effect  INTEGER NOT NULL,
    undo    BLOB NOT NULL,
    PRIMARY KEY (replica, seq)
) WITHOUT ROWID;
CREATE INDEX ops_by_key ON ops(lamport, replica);
CREATE INDEX ops_by_node ON ops(node);
CREATE TABLE nodes(
    node        BLOB PRIMARY KEY,
    parent      BLOB NOT NULL,
    position    BLOB NOT NULL,
    placed_rep  INTEGER NOT NULL,
    placed_seq  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX nodes_children ON nodes(parent, position, node);
CREATE TABLE payloads(
    node    BLOB NOT NULL UNIQUE,
    bytes   BLOB NOT NULL,
    set_rep INTEGER NOT NULL,
    set_seq INTEGER NOT NULL
);
CREATE TABLE pending(
    id         INTEGER PRIMARY KEY,
    awaits_rep INTEGER NOT NULL,
    awaits_seq INTEGER NOT NULL,
    replica    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    op         BLOB NOT NULL,
    UNIQUE (replica, seq)
);
CREATE INDEX pending_by_awaits ON pending(awaits_rep, awaits_seq);
CREATE TABLE counts(name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counts VALUES ('nodes', 0), ('ops', 0);
";

/// Tables added by schema version 2 (a version-1 database is upgraded by creating them).
const DDL_V2: &str = "
CREATE TABLE doc_entries(
    id    INTEGER PRIMARY KEY,
    key   BLOB NOT NULL UNIQUE CHECK (length(key) = 32),
    kind  INTEGER NOT NULL,
    bytes BLOB NOT NULL
);
CREATE TABLE held(
    replica BLOB NOT NULL CHECK (length(replica) = 32),
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    op      BLOB NOT NULL,
    PRIMARY KEY (replica, seq)
) WITHOUT ROWID;
";

/// Creates the schema in an empty database, or checks that an existing one is ours and current.
pub(super) fn init(conn: &Connection) -> Result<(), SqliteStoreError> {
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if app == 0 && version == 0 {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables != 0 {
            return Err(SqliteStoreError::NotCanopy);
        }
        conn.execute_batch(&format!(
            "SAVEPOINT canopy_schema; {DDL} {DDL_V2}
             PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};
             RELEASE canopy_schema;"
        ))?;
        return Ok(());
    }
    if app != APPLICATION_ID {
        return Err(SqliteStoreError::NotCanopy);
    }
    if version == 1 {
        conn.execute_batch(&format!(
            "SAVEPOINT canopy_schema; {DDL_V2}
             PRAGMA user_version = {SCHEMA_VERSION}; RELEASE canopy_schema;"
        ))?;
        return Ok(());
    }
    if version != SCHEMA_VERSION {
        return Err(SqliteStoreError::SchemaVersion {
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}
