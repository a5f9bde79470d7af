//! [`SqlitePartial`]: a [`PartialStore`] in one SQLite file (feature `sqlite`).
//!
//! Schema and transaction rules: `spec/sync.md` §"Partial replica storage (SQLite)". One file
//! holds one partial replica. Node records are rows with a sibling index
//! `(parent, position, node)` and a gone-digest index, so a delta item is a few indexed
//! statements and a children page is one index range; nothing loads the replica into memory.
//!
//! ```
//! use canopy_sync::{PartialReplica, SqlitePartial};
//! use canopy_tree::{NodeId, Place, ReplicaId};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("notes.partial");
//! let x = NodeId::from_bytes([1; 16]);
//! let mut p = PartialReplica::init(SqlitePartial::open(&path)?, x, ReplicaId::from_bytes([2; 32]))?;
//! let a = NodeId::from_bytes([3; 16]);
//! p.create(a, x, Place::Last, Some(b"draft".to_vec()))?;
//! drop(p);
//!
//! // reopen: the node and the pending op are there
//! let p = PartialReplica::open(SqlitePartial::open(&path)?)?.expect("a replica");
//! assert_eq!(p.scope(), x);
//! assert_eq!(p.children_page(x, None, 10)?[0].1, a);
//! assert_eq!(p.unacked().len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::path::Path;

use canopy_tree::{NodeId, Op, OpId, Position, ReplicaId, VersionVector};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, Row};
use rustc_hash::FxHashMap;

use super::store::{PartialMeta, PartialStore};
use crate::wire::{gone_digest, NodeRecord, PathEntry, PayloadState, WireError};

/// `PRAGMA application_id` of a partial replica database ("CnpP").
const APPLICATION_ID: i64 = 0x436e_7050;
/// `PRAGMA user_version`: the schema version this code reads and writes.
const SCHEMA_VERSION: i64 = 1;

const DDL: &str = "
CREATE TABLE meta(
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    scope       BLOB NOT NULL CHECK (length(scope) = 16),
    replica     BLOB NOT NULL CHECK (length(replica) = 32),
    max_lamport INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    tainted     INTEGER NOT NULL CHECK (tainted IN (0, 1))
);
CREATE TABLE since(
    replica BLOB PRIMARY KEY CHECK (length(replica) = 32),
    seq     INTEGER NOT NULL CHECK (seq >= 1)
) WITHOUT ROWID;
CREATE TABLE path(
    step     INTEGER PRIMARY KEY,
    node     BLOB NOT NULL CHECK (length(node) = 16),
    parent   BLOB NOT NULL CHECK (length(parent) = 16),
    position BLOB NOT NULL
);
CREATE TABLE replicas(
    idx INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE CHECK (length(key) = 32)
);
CREATE TABLE nodes(
    node        BLOB NOT NULL UNIQUE CHECK (length(node) = 16),
    parent      BLOB NOT NULL CHECK (length(parent) = 16),
    position    BLOB NOT NULL,
    placed_rep  INTEGER NOT NULL,
    placed_seq  INTEGER NOT NULL,
    digest      BLOB NOT NULL,
    payload     INTEGER NOT NULL CHECK (payload IN (0, 1, 2)),
    bytes       BLOB,
    set_rep     INTEGER,
    set_seq     INTEGER
);
CREATE INDEX nodes_children ON nodes(parent, position, node);
CREATE INDEX nodes_digest ON nodes(digest);
CREATE TABLE own_ops(
    seq INTEGER PRIMARY KEY,
    op  BLOB NOT NULL
);
";

/// Why the SQLite partial store failed or refused a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlitePartialError {
    /// SQLite reported an error (I/O, locking, constraint, …).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value has the wrong SQL type.
    #[error("stored value of unexpected type: {0}")]
    ColumnType(#[from] rusqlite::types::FromSqlError),
    /// The database has tables but is not a partial replica (another application id, or a
    /// foreign schema).
    #[error("the database is not a Canopy partial replica")]
    NotPartial,
    /// The database uses another schema version.
    #[error("schema version {found} is not supported (this build reads version {expected})")]
    SchemaVersion { found: i64, expected: i64 },
    /// A stored value is out of its domain (wrong blob length, unknown code, …).
    #[error("corrupt column {table}.{column}")]
    CorruptColumn {
        table: &'static str,
        column: &'static str,
    },
    /// A stored position does not decode.
    #[error("corrupt {field}: {source}")]
    CorruptBlob {
        field: &'static str,
        #[source]
        source: WireError,
    },
    /// A stored own op does not decode.
    #[error("corrupt own op {seq}: {source}")]
    CorruptOp {
        seq: i64,
        #[source]
        source: canopy_tree::DecodeError,
    },
    /// A seq of 2^63 or more: SQLite integers are signed 64-bit.
    #[error("{0} is too large to store (limit 2^63 - 1)")]
    OutOfRange(u64),
    /// `begin` inside a batch, or `commit`/`rollback` outside one.
    #[error("batch calls out of order")]
    Batch,
}

type Result<T> = std::result::Result<T, SqlitePartialError>;

/// Replica key ↔ compact index (the `replicas` table), cached both ways.
#[derive(Debug, Default)]
struct Replicas {
    by_key: FxHashMap<ReplicaId, i64>,
    by_idx: FxHashMap<i64, ReplicaId>,
}

/// A [`PartialStore`] backed by one SQLite database (see the module docs).
pub struct SqlitePartial {
    conn: Connection,
    in_tx: bool,
    reps: RefCell<Replicas>,
    /// The meta record as last written or read (`since` and `path` are rewritten only when they
    /// change); cleared on rollback.
    written: RefCell<Option<PartialMeta>>,
}

impl std::fmt::Debug for SqlitePartial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePartial")
            .field("path", &self.conn.path())
            .field("in_tx", &self.in_tx)
            .finish_non_exhaustive()
    }
}

fn corrupt(table: &'static str, column: &'static str) -> SqlitePartialError {
    SqlitePartialError::CorruptColumn { table, column }
}

fn node_of(b: &[u8], table: &'static str, column: &'static str) -> Result<NodeId> {
    Ok(NodeId::from_bytes(
        b.try_into().map_err(|_| corrupt(table, column))?,
    ))
}

fn int(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| SqlitePartialError::OutOfRange(v))
}

fn uint(v: i64, table: &'static str, column: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(table, column))
}

fn position_of(b: &[u8], field: &'static str) -> Result<Position> {
    Position::try_from_bytes(b).map_err(|e| SqlitePartialError::CorruptBlob {
        field,
        source: WireError::Position(e),
    })
}

impl SqlitePartial {
    /// Opens (creating if needed) the partial replica database at `path`: WAL,
    /// `synchronous=NORMAL` (a committed batch survives a process crash).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = Connection::open(path)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        // as the document store: checkpoint every 8192 WAL pages (32 MiB) rather than every
        // 1000, so a large reset stream copies each hot page far less often
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 8192;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::from_connection(conn)
    }

    /// A private in-memory database.
    pub fn open_in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(conn: Connection) -> Result<Self> {
        // plans never depend on bound values: cached statements are not re-prepared per bind
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(32);
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if app == 0 && version == 0 {
            let tables: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
            if tables != 0 {
                return Err(SqlitePartialError::NotPartial);
            }
            conn.execute_batch(&format!(
                "SAVEPOINT canopy_schema; {DDL}
                 PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};
                 RELEASE canopy_schema;"
            ))?;
        } else if app != APPLICATION_ID {
            return Err(SqlitePartialError::NotPartial);
        } else if version != SCHEMA_VERSION {
            return Err(SqlitePartialError::SchemaVersion {
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(Self {
            conn,
            in_tx: false,
            reps: RefCell::default(),
            written: RefCell::default(),
        })
    }

    /// The underlying connection (for read-only queries and diagnostics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn replica_idx(&self, key: ReplicaId) -> Result<i64> {
        if let Some(i) = self.reps.borrow().by_key.get(&key) {
            return Ok(*i);
        }
        let conn = &self.conn;
        let found: Option<i64> = conn
            .prepare_cached("SELECT idx FROM replicas WHERE key = ?1")?
            .query_row([key.as_bytes()], |r| r.get(0))
            .optional()?;
        let idx = match found {
            Some(i) => i,
            None => {
                conn.prepare_cached("INSERT INTO replicas(key) VALUES (?1)")?
                    .execute([key.as_bytes()])?;
                conn.last_insert_rowid()
            }
        };
        let mut reps = self.reps.borrow_mut();
        reps.by_key.insert(key, idx);
        reps.by_idx.insert(idx, key);
        Ok(idx)
    }

    fn replica_key(&self, idx: i64) -> Result<ReplicaId> {
        if let Some(k) = self.reps.borrow().by_idx.get(&idx) {
            return Ok(*k);
        }
        let key: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT key FROM replicas WHERE idx = ?1")?
            .query_row([idx], |r| r.get(0))
            .optional()?;
        let key = key.ok_or(corrupt("nodes", "placed_rep"))?;
        let key = ReplicaId::from_bytes(
            key.as_slice()
                .try_into()
                .map_err(|_| corrupt("replicas", "key"))?,
        );
        let mut reps = self.reps.borrow_mut();
        reps.by_key.insert(key, idx);
        reps.by_idx.insert(idx, key);
        Ok(key)
    }

    fn op_id(&self, rep: i64, seq: i64, column: &'static str) -> Result<OpId> {
        let seq = uint(seq, "nodes", column).and_then(|s| {
            if s >= 1 {
                Ok(s)
            } else {
                Err(corrupt("nodes", column))
            }
        })?;
        Ok(OpId::new(self.replica_key(rep)?, seq))
    }

    /// Decodes `node, parent, position, placed_rep, placed_seq, payload, bytes, set_rep, set_seq`.
    fn record(&self, r: &Row<'_>) -> Result<NodeRecord> {
        let payload = match r.get::<_, i64>(5)? {
            0 => PayloadState::None,
            1 => PayloadState::Present {
                bytes: r
                    .get::<_, Option<Vec<u8>>>(6)?
                    .ok_or(corrupt("nodes", "bytes"))?,
                set_by: self.op_id(
                    r.get::<_, Option<i64>>(7)?
                        .ok_or(corrupt("nodes", "set_rep"))?,
                    r.get::<_, Option<i64>>(8)?
                        .ok_or(corrupt("nodes", "set_seq"))?,
                    "set_seq",
                )?,
            },
            2 => PayloadState::Withheld,
            _ => return Err(corrupt("nodes", "payload")),
        };
        Ok(NodeRecord {
            node: node_of(r.get_ref(0)?.as_blob()?, "nodes", "node")?,
            parent: node_of(r.get_ref(1)?.as_blob()?, "nodes", "parent")?,
            position: position_of(r.get_ref(2)?.as_blob()?, "nodes.position")?,
            placed_by: self.op_id(r.get(3)?, r.get(4)?, "placed_seq")?,
            payload,
        })
    }

    fn page(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(Position, NodeId)>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let mut rows = st.query(args)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push((
                position_of(r.get_ref(0)?.as_blob()?, "nodes.position")?,
                node_of(r.get_ref(1)?.as_blob()?, "nodes", "node")?,
            ));
        }
        Ok(out)
    }
}

const RECORD_COLUMNS: &str =
    "node, parent, position, placed_rep, placed_seq, payload, bytes, set_rep, set_seq";

impl PartialStore for SqlitePartial {
    type Error = SqlitePartialError;

    fn meta(&self) -> Result<Option<PartialMeta>> {
        type Row = (Vec<u8>, Vec<u8>, i64, i64, i64);
        let row: Option<Row> = self
            .conn
            .prepare_cached(
                "SELECT scope, replica, max_lamport, last_seq, tainted FROM meta WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((scope, replica, max_lamport, last_seq, tainted)) = row else {
            return Ok(None);
        };
        let mut since = VersionVector::new();
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT replica, seq FROM since ORDER BY replica")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let key: [u8; 32] = r
                    .get_ref(0)?
                    .as_blob()?
                    .try_into()
                    .map_err(|_| corrupt("since", "replica"))?;
                let seq = uint(r.get(1)?, "since", "seq")?;
                if seq == 0 {
                    return Err(corrupt("since", "seq"));
                }
                since.set(ReplicaId::from_bytes(key), seq);
            }
        }
        let mut path = Vec::new();
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT step, node, parent, position FROM path ORDER BY step")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                if r.get::<_, i64>(0)? != path.len() as i64 {
                    return Err(corrupt("path", "step"));
                }
                path.push(PathEntry {
                    node: node_of(r.get_ref(1)?.as_blob()?, "path", "node")?,
                    parent: node_of(r.get_ref(2)?.as_blob()?, "path", "parent")?,
                    position: position_of(r.get_ref(3)?.as_blob()?, "path.position")?,
                });
            }
        }
        let meta = PartialMeta {
            scope: node_of(&scope, "meta", "scope")?,
            replica: ReplicaId::from_bytes(
                replica
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("meta", "replica"))?,
            ),
            since,
            max_lamport: uint(max_lamport, "meta", "max_lamport")?,
            last_seq: uint(last_seq, "meta", "last_seq")?,
            tainted: match tainted {
                0 => false,
                1 => true,
                _ => return Err(corrupt("meta", "tainted")),
            },
            path,
        };
        *self.written.borrow_mut() = Some(meta.clone());
        Ok(Some(meta))
    }

    fn set_meta(&mut self, meta: &PartialMeta) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO meta(id, scope, replica, max_lamport, last_seq, tainted)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                meta.scope.as_bytes(),
                meta.replica.as_bytes(),
                int(meta.max_lamport)?,
                int(meta.last_seq)?,
                i64::from(meta.tainted),
            ])?;
        let old = self.written.borrow_mut().take();
        if old.as_ref().map(|m| &m.since) != Some(&meta.since) {
            self.conn.prepare_cached("DELETE FROM since")?.execute([])?;
            let mut st = self
                .conn
                .prepare_cached("INSERT INTO since(replica, seq) VALUES (?1, ?2)")?;
            for (r, seq) in meta.since.iter().filter(|(_, seq)| *seq > 0) {
                st.execute(params![r.as_bytes(), int(seq)?])?;
            }
        }
        if old.as_ref().map(|m| &m.path) != Some(&meta.path) {
            self.conn.prepare_cached("DELETE FROM path")?.execute([])?;
            let mut st = self.conn.prepare_cached(
                "INSERT INTO path(step, node, parent, position) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, e) in meta.path.iter().enumerate() {
                st.execute(params![
                    i as i64,
                    e.node.as_bytes(),
                    e.parent.as_bytes(),
                    e.position.as_bytes()
                ])?;
            }
        }
        *self.written.borrow_mut() = Some(meta.clone());
        Ok(())
    }

    fn node(&self, node: NodeId) -> Result<Option<NodeRecord>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM nodes WHERE node = ?1"
        ))?;
        let mut rows = st.query([node.as_bytes()])?;
        match rows.next()? {
            Some(r) => Ok(Some(self.record(r)?)),
            None => Ok(None),
        }
    }

    fn parent(&self, node: NodeId) -> Result<Option<NodeId>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT parent FROM nodes WHERE node = ?1")?;
        let mut rows = st.query([node.as_bytes()])?;
        match rows.next()? {
            Some(r) => Ok(Some(node_of(r.get_ref(0)?.as_blob()?, "nodes", "parent")?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, r: &NodeRecord) -> Result<()> {
        let placed_rep = self.replica_idx(r.placed_by.replica())?;
        let (code, bytes, set_rep, set_seq) = match &r.payload {
            PayloadState::None => (0, None, None, None),
            PayloadState::Present { bytes, set_by } => (
                1,
                Some(bytes.as_slice()),
                Some(self.replica_idx(set_by.replica())?),
                Some(int(set_by.seq())?),
            ),
            PayloadState::Withheld => (2, None, None, None),
        };
        // UPSERT keeps the row (and its rowid) for a node that moves or changes payload
        self.conn
            .prepare_cached(
                "INSERT INTO nodes(node, parent, position, placed_rep, placed_seq, digest,
                                   payload, bytes, set_rep, set_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(node) DO UPDATE SET parent = excluded.parent,
                   position = excluded.position, placed_rep = excluded.placed_rep,
                   placed_seq = excluded.placed_seq, payload = excluded.payload,
                   bytes = excluded.bytes, set_rep = excluded.set_rep, set_seq = excluded.set_seq",
            )?
            .execute(params![
                r.node.as_bytes(),
                r.parent.as_bytes(),
                r.position.as_bytes(),
                placed_rep,
                int(r.placed_by.seq())?,
                gone_digest(r.node),
                code,
                bytes,
                set_rep,
                set_seq
            ])?;
        Ok(())
    }

    fn remove(&mut self, node: NodeId) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM nodes WHERE node = ?1")?
            .execute([node.as_bytes()])?;
        Ok(n > 0)
    }

    fn clear(&mut self) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM nodes")?.execute([])?;
        Ok(())
    }

    fn by_digest(&self, digest: &[u8; 16]) -> Result<Option<NodeId>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT node FROM nodes WHERE digest = ?1 LIMIT 1")?;
        let mut rows = st.query([digest.as_slice()])?;
        match rows.next()? {
            Some(r) => Ok(Some(node_of(r.get_ref(0)?.as_blob()?, "nodes", "node")?)),
            None => Ok(None),
        }
    }

    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match after {
            None => self.page(
                "SELECT position, node FROM nodes WHERE parent = ?1
                 ORDER BY position, node LIMIT ?2",
                params![parent.as_bytes(), limit],
            ),
            Some((p, n)) => self.page(
                "SELECT position, node FROM nodes WHERE parent = ?1 AND (position, node) > (?2, ?3)
                 ORDER BY position, node LIMIT ?4",
                params![parent.as_bytes(), p.as_bytes(), n.as_bytes(), limit],
            ),
        }
    }

    fn children_rev(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<(Position, NodeId)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match before {
            None => self.page(
                "SELECT position, node FROM nodes WHERE parent = ?1
                 ORDER BY position DESC, node DESC LIMIT ?2",
                params![parent.as_bytes(), limit],
            ),
            Some((p, n)) => self.page(
                "SELECT position, node FROM nodes WHERE parent = ?1 AND (position, node) < (?2, ?3)
                 ORDER BY position DESC, node DESC LIMIT ?4",
                params![parent.as_bytes(), p.as_bytes(), n.as_bytes(), limit],
            ),
        }
    }

    fn count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM nodes")?
            .query_row([], |r| r.get(0))?;
        uint(n, "nodes", "count")
    }

    fn node_ids(&self) -> Result<Vec<NodeId>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT node FROM nodes ORDER BY node")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(node_of(r.get_ref(0)?.as_blob()?, "nodes", "node")?);
        }
        Ok(out)
    }

    fn records(&self) -> Result<Vec<NodeRecord>> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM nodes ORDER BY node"))?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(self.record(r)?);
        }
        Ok(out)
    }

    fn own_ops(&self) -> Result<Vec<Op>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT seq, op FROM own_ops ORDER BY seq")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let op = Op::decode(r.get_ref(1)?.as_blob()?)
                .map_err(|source| SqlitePartialError::CorruptOp { seq, source })?;
            if i64::try_from(op.id().seq()).ok() != Some(seq) {
                return Err(corrupt("own_ops", "seq"));
            }
            out.push(op);
        }
        Ok(out)
    }

    fn push_own(&mut self, op: &Op) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO own_ops(seq, op) VALUES (?1, ?2)")?
            .execute(params![int(op.id().seq())?, op.encode()])?;
        Ok(())
    }

    fn remove_own(&mut self, id: OpId) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM own_ops WHERE seq = ?1")?
            .execute([int(id.seq())?])?;
        Ok(())
    }

    fn begin(&mut self) -> Result<()> {
        if self.in_tx {
            return Err(SqlitePartialError::Batch);
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.in_tx = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if !self.in_tx {
            return Err(SqlitePartialError::Batch);
        }
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.in_tx = false;
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        if !self.in_tx {
            return Err(SqlitePartialError::Batch);
        }
        self.in_tx = false;
        // replica indexes assigned in the batch are gone with it, and so is the meta written
        *self.reps.borrow_mut() = Replicas::default();
        *self.written.borrow_mut() = None;
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("ROLLBACK")?.execute([])?;
        }
        Ok(())
    }
}
