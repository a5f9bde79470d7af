//! [`SqliteStore`]: the [`Store`] on SQLite (rusqlite), for native files, memory and the browser.
//!
//! One database holds one document. Schema, blob formats and transaction rules: `spec/sqlite.md`.
//! The store does no IO of its own beyond SQLite (no `std::fs`), so the same code runs on
//! `wasm32-unknown-unknown` over `sqlite-wasm-rs` (OPFS through its VFS).
//!
//! ```
//! use canopy_tree::{SqliteStore, Store, NodeId};
//! let store = SqliteStore::open_in_memory()?;
//! assert_eq!(store.node_count()?, 0);
//! assert!(store.children(NodeId::ROOT, None, 100)?.is_empty());
//! # Ok::<(), canopy_tree::SqliteStoreError>(())
//! ```

mod cache;
mod entries;
mod error;
mod reads;
mod replicas;
mod schema;
mod undo;

use std::cell::{RefCell, RefMut};
use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::id::{LogKey, NodeId, OpId, ReplicaId};
use crate::op::{Op, VersionVector};
use crate::position::Position;
use crate::store::{Child, Effect, LogEntry, PayloadRecord, Placement, Store, Undo};

pub use error::{SqliteStoreError, TxMisuse};
pub use reads::{Ancestor, SubtreeEntry, SubtreeWalk};
pub use undo::UndoDecodeError;

type Result<T> = std::result::Result<T, SqliteStoreError>;

/// Storage durability for a file database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// WAL, `synchronous=NORMAL`: a commit survives a process crash; the last commits may be lost
    /// on power failure (never a partial batch).
    #[default]
    Normal,
    /// WAL, `synchronous=FULL`: every commit is fsynced.
    Full,
}

/// How the current batch was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    None,
    /// `BEGIN IMMEDIATE` on an autocommit connection.
    Top,
    /// A savepoint inside a transaction someone else opened (e.g. an SQL function's caller).
    Savepoint,
}

/// A [`Store`] backed by one SQLite database (one document per database).
///
/// Reads are indexed queries; nothing loads the tree into memory. Each batch of the engine is one
/// SQLite transaction (`begin` → `BEGIN IMMEDIATE`, or a savepoint inside an outer transaction).
/// Inside a batch, repeated reads are answered from a bounded cache that every write keeps exact
/// (`spec/sqlite.md` §Read cache).
///
/// ```
/// use canopy_tree::{NodeId, Place, ReplicaId, SqliteStore, Store, Tree};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("notes.canopy");
/// let me = ReplicaId::from_bytes([7; 32]);
/// let mut tree = Tree::new(SqliteStore::open(&path)?, me);
/// let list = tree.create(NodeId::ROOT, Place::Last, Some(b"todo".to_vec()))?.node();
/// for _ in 0..3 {
///     tree.create(list, Place::Last, None)?;
/// }
/// drop(tree);
///
/// // reopen: everything committed is there; read one keyset page of children
/// let store = SqliteStore::open(&path)?;
/// let page = store.children(list, None, 2)?;
/// let next = store.children(list, Some((&page[1].position, page[1].node)), 2)?;
/// assert_eq!((page.len(), next.len()), (2, 1));
/// assert_eq!(store.ancestors(next[0].node)?.len(), 2); // list, ROOT
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SqliteStore {
    conn: Connection,
    tx: Tx,
    /// Replica key → compact index; cleared on rollback (indexes assigned in it are undone).
    /// Replica interning cache and the batch's count changes (interior mutability: reads
    /// through `&self` fill the cache).
    reps: RefCell<replicas::Replicas>,
    /// Reads cached inside batches (and across committed top-level batches while nothing else
    /// writes): see [`cache`].
    cache: RefCell<cache::Cache>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .field("tx", &self.tx)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the document database at `path` in WAL mode with
    /// [`Durability::Normal`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Durability::Normal)
    }

    /// Opens (creating if needed) the document database at `path` with the given durability.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self> {
        let conn = Connection::open(path)?;
        // WAL can be unavailable (some VFSes, e.g. in the browser): keep whatever mode results.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(match durability {
            Durability::Normal => "PRAGMA synchronous = NORMAL;",
            Durability::Full => "PRAGMA synchronous = FULL;",
        })?;
        // Small batches (one op per transaction) touch the same few pages again and again:
        // checkpoint every 8192 WAL pages (32 MiB) rather than SQLite's 1000, so each hot page is
        // copied (and the files synced) far less often; trim the WAL back to 64 MiB afterwards.
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 8192; PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::own_connection(conn)
    }

    /// A private in-memory document.
    pub fn open_in_memory() -> Result<Self> {
        Self::own_connection(Connection::open_in_memory()?)
    }

    /// Settings for connections the store opened itself.
    fn own_connection(conn: Connection) -> Result<Self> {
        // Query-planner stability: plans never depend on bound values, so cached statements are
        // not re-prepared after every rebind (with STAT4 compiled in, SQLite otherwise marks
        // range/equality parameters "reprepare on bind", and the statement cache's
        // clear_bindings expires them: ~20% of the time of an in-order create).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Self::from_connection(conn)
    }

    /// Wraps an open connection (creating the schema in an empty database). Connection settings
    /// (journal mode, synchronous, busy timeout) are left as the caller set them.
    pub fn from_connection(conn: Connection) -> Result<Self> {
        conn.set_prepared_statement_cache_capacity(64);
        schema::init(&conn)?;
        Ok(Self {
            conn,
            tx: Tx::None,
            reps: RefCell::default(),
            cache: RefCell::default(),
        })
    }

    /// The underlying connection (for read-only queries and diagnostics; writing through it
    /// bypasses the engine).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Consumes the store and returns its connection.
    pub fn into_connection(self) -> Connection {
        self.conn
    }

    /// The read cache, inside a batch only (outside one, other connections may write).
    fn cache(&self) -> Option<RefMut<'_, cache::Cache>> {
        (self.tx != Tx::None).then(|| self.cache.borrow_mut())
    }

    /// Placement of `node` and its number of children from SQLite, in one statement (the
    /// engine asks for both when it places a node).
    fn placement_and_children_row(&self, node: NodeId) -> Result<(Option<Placement>, u64)> {
        type Row = (
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i64>,
            Option<i64>,
            i64,
        );
        let (parent, position, rep, seq, children): Row = self
            .conn
            .prepare_cached(
                "SELECT n.parent, n.position, n.placed_rep, n.placed_seq,
                   (SELECT count(*) FROM nodes WHERE parent = ?1)
                 FROM (SELECT 1) LEFT JOIN nodes n ON n.node = ?1",
            )?
            .query_row([node.as_bytes()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
        let placement = match (parent, position, rep, seq) {
            (Some(parent), Some(position), Some(rep), Some(seq)) => Some(Placement {
                parent: node_of(&parent, "nodes", "parent")?,
                position: Position::from_bytes(&position),
                placed_by: self.op_id(rep, seq)?,
            }),
            (None, None, None, None) => None,
            _ => {
                return Err(SqliteStoreError::CorruptColumn {
                    table: "nodes",
                    column: "parent",
                })
            }
        };
        Ok((placement, children as u64))
    }

    /// Placement of `node` from SQLite (no cache).
    fn placement_row(&self, node: NodeId) -> Result<Option<Placement>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT parent, position, placed_rep, placed_seq FROM nodes WHERE node = ?1",
            )?
            .query_row([node.as_bytes()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        let Some((parent, position, rep, seq)) = row else {
            return Ok(None);
        };
        Ok(Some(Placement {
            parent: node_of(&parent, "nodes", "parent")?,
            position: Position::from_bytes(&position),
            placed_by: self.op_id(rep, seq)?,
        }))
    }

    /// True if no logged op of the replica with index `rep` has seq `seq` or greater, as far as
    /// the cache knows (fills the replica's frontier on first use inside a batch).
    fn beyond_log(&self, rep: i64, seq: u64) -> Result<bool> {
        if self.tx == Tx::None {
            return Ok(false);
        }
        if let Some(&m) = self.cache.borrow().max_seq.get(&rep) {
            return Ok(seq > m);
        }
        let m = self.max_seq_row(rep)?;
        self.cache.borrow_mut().remember_max_seq(rep, m);
        Ok(seq > m)
    }

    /// Highest logged seq of the replica with index `rep` from SQLite (0: none).
    fn max_seq_row(&self, rep: i64) -> Result<u64> {
        // the log is gap-free per replica: its highest seq is its frontier (one PK seek)
        let n: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(seq) FROM ops WHERE replica = ?1")?
            .query_row([rep], |r| r.get(0))?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// Number of pending rows, from the cache inside a batch.
    fn pending_rows(&self) -> Result<u64> {
        if let Some(n) = self.cache().and_then(|c| c.pending) {
            return Ok(n);
        }
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM pending")?
            .query_row([], |r| r.get(0))?;
        if let Some(mut c) = self.cache() {
            c.pending = Some(n as u64);
        }
        Ok(n as u64)
    }

    /// Adjusts the cached number of pending rows by `d` (rows inserted or deleted).
    fn pending_changed(&self, d: i64) {
        if let Some(mut c) = self.cache() {
            if let Some(n) = &mut c.pending {
                *n = n.saturating_add_signed(d);
            }
        }
    }

    /// The payload row of `node` (no cache).
    fn payload_row(&self, node: NodeId) -> Result<Option<PayloadRecord>> {
        let row = self
            .conn
            .prepare_cached("SELECT bytes, set_rep, set_seq FROM payloads WHERE node = ?1")?
            .query_row([node.as_bytes()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        let Some((bytes, rep, seq)) = row else {
            return Ok(None);
        };
        Ok(Some(PayloadRecord {
            bytes,
            set_by: self.op_id(rep, seq)?,
        }))
    }

    /// Writes (`None`: deletes) the payload row of `node` (no cache).
    fn write_payload_row(&mut self, node: NodeId, payload: Option<&PayloadRecord>) -> Result<()> {
        match payload {
            None => {
                self.conn
                    .prepare_cached("DELETE FROM payloads WHERE node = ?1")?
                    .execute([node.as_bytes()])?;
            }
            Some(p) => {
                let rep = self.intern(p.set_by.replica())?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO payloads(node, bytes, set_rep, set_seq) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(node) DO UPDATE SET bytes = excluded.bytes,
                           set_rep = excluded.set_rep, set_seq = excluded.set_seq",
                    )?
                    .execute(params![
                        node.as_bytes(),
                        &p.bytes[..],
                        rep,
                        seq_param(p.set_by.seq())?
                    ])?;
            }
        }
        Ok(())
    }

    /// `PRAGMA data_version`: changes when another connection commits. With `total_changes`
    /// (which changes when this connection writes) unchanged too, nothing but this store wrote.
    fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// Runs a cached parameterless statement.
    fn exec_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    fn op_id(&self, rep: i64, seq: i64) -> Result<OpId> {
        let seq =
            u64::try_from(seq)
                .ok()
                .filter(|&s| s >= 1)
                .ok_or(SqliteStoreError::CorruptColumn {
                    table: "ops",
                    column: "seq",
                })?;
        Ok(OpId::new(self.replica_key(rep)?, seq))
    }

    /// Decodes a row `(replica, seq, op, effect, undo)` of `ops`.
    fn log_entry(&self, row: &Row<'_>) -> Result<LogEntry> {
        let id = self.op_id(row.get(0)?, row.get(1)?)?;
        let op = decode_op(id, row.get_ref(2)?.as_blob()?)?;
        let effect = u8::try_from(row.get::<_, i64>(3)?)
            .ok()
            .and_then(Effect::from_code)
            .ok_or(SqliteStoreError::CorruptColumn {
                table: "ops",
                column: "effect",
            })?;
        let undo = undo::decode(row.get_ref(4)?.as_blob()?)
            .map_err(|source| SqliteStoreError::CorruptUndo { id, source })?;
        Ok(LogEntry { op, effect, undo })
    }
}

/// Converts a stored blob to a fixed-size array, or reports the column as corrupt.
fn fixed<const N: usize>(b: &[u8], table: &'static str, column: &'static str) -> Result<[u8; N]> {
    b.try_into()
        .map_err(|_| SqliteStoreError::CorruptColumn { table, column })
}

fn node_of(b: &[u8], table: &'static str, column: &'static str) -> Result<NodeId> {
    Ok(NodeId::from_bytes(fixed(b, table, column)?))
}

/// A seq or Lamport time as an SQLite integer. Values of 2^63 and above cannot be stored.
fn seq_param(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| SqliteStoreError::OutOfRange(v))
}

pub(crate) fn encode_op(op: &Op) -> Vec<u8> {
    op.encode()
}

fn decode_op(id: OpId, b: &[u8]) -> Result<Op> {
    let op = Op::decode(b).map_err(|source| SqliteStoreError::CorruptOp { id, source })?;
    if op.id() != id {
        return Err(SqliteStoreError::CorruptColumn {
            table: "ops",
            column: "op",
        });
    }
    Ok(op)
}

impl Store for SqliteStore {
    type Error = SqliteStoreError;

    fn placement(&self, node: NodeId) -> Result<Option<Placement>> {
        let Some(c) = self.cache() else {
            return self.placement_row(node);
        };
        if let Some(p) = c.nodes.get(&node) {
            return Ok(p.clone());
        }
        drop(c);
        let (p, children) = self.placement_and_children_row(node)?;
        let mut c = self.cache.borrow_mut();
        c.remember_node(node, p.clone());
        c.remember_children(node, children);
        Ok(p)
    }

    fn set_placement(&mut self, node: NodeId, placement: Option<&Placement>) -> Result<()> {
        // What the cache knows of the row before the write: `None` unknown, `Some(None)` absent.
        let old: Option<Option<NodeId>> = self
            .cache()
            .and_then(|c| c.nodes.get(&node).map(|p| p.as_ref().map(|p| p.parent)));
        if let Some(mut c) = self.cache() {
            c.placed(node, old.is_some(), old.flatten(), placement);
        }
        match placement {
            None => {
                let n = self
                    .conn
                    .prepare_cached("DELETE FROM nodes WHERE node = ?1")?
                    .execute([node.as_bytes()])?;
                self.count_delta(-(n as i64), 0)?;
            }
            Some(p) if old == Some(None) => {
                // known to have no row: insert without trying an update first
                let rep = self.intern(p.placed_by.replica())?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO nodes(node, parent, position, placed_rep, placed_seq)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        node.as_bytes(),
                        p.parent.as_bytes(),
                        p.position.as_bytes(),
                        rep,
                        seq_param(p.placed_by.seq())?
                    ])?;
                self.count_delta(1, 0)?;
            }
            Some(p) => {
                let rep = self.intern(p.placed_by.replica())?;
                let args = params![
                    node.as_bytes(),
                    p.parent.as_bytes(),
                    p.position.as_bytes(),
                    rep,
                    seq_param(p.placed_by.seq())?
                ];
                let moved = self
                    .conn
                    .prepare_cached(
                        "UPDATE nodes SET parent = ?2, position = ?3, placed_rep = ?4,
                           placed_seq = ?5 WHERE node = ?1",
                    )?
                    .execute(args)?;
                if moved == 0 {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO nodes(node, parent, position, placed_rep, placed_seq)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(args)?;
                    self.count_delta(1, 0)?;
                }
            }
        }
        Ok(())
    }

    fn parent(&self, node: NodeId) -> Result<Option<NodeId>> {
        if self.tx != Tx::None {
            // inside a batch: the whole row, so that the cache can answer the next read of it
            return Ok(self.placement(node)?.map(|p| p.parent));
        }
        let mut st = self
            .conn
            .prepare_cached("SELECT parent FROM nodes WHERE node = ?1")?;
        let mut rows = st.query([node.as_bytes()])?;
        match rows.next()? {
            Some(r) => Ok(Some(node_of(r.get_ref(0)?.as_blob()?, "nodes", "parent")?)),
            None => Ok(None),
        }
    }

    fn is_within(&self, node: NodeId, root: NodeId) -> Result<bool> {
        if node == root {
            return Ok(true);
        }
        // Walk cached parents first; the first level the cache does not know continues in SQL.
        // Bounded by the cache's size, so a (hand-edited) cyclic table cannot loop here.
        let mut node = node;
        if let Some(c) = self.cache() {
            for _ in 0..=c.nodes.len() {
                if node == root {
                    return Ok(true);
                }
                if node.is_reserved() {
                    return Ok(false);
                }
                match c.nodes.get(&node) {
                    Some(Some(p)) => node = p.parent,
                    Some(None) => return Ok(false),
                    None => break,
                }
            }
        }
        // one recursive query instead of a lookup per level; UNION (not UNION ALL) ends even on a
        // cyclic (hand-edited) table
        let within: bool = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE up(n) AS (
                   SELECT ?1
                   UNION
                   SELECT nodes.parent FROM nodes JOIN up ON nodes.node = up.n WHERE up.n != ?2
                 )
                 SELECT EXISTS (SELECT 1 FROM up WHERE n = ?2)",
            )?
            .query_row([node.as_bytes(), root.as_bytes()], |r| r.get(0))?;
        Ok(within)
    }

    fn payload_set_by(&self, node: NodeId) -> Result<Option<OpId>> {
        let cached = self
            .cache()
            .and_then(|c| c.payloads.get(&node).map(|p| p.as_ref().map(|p| p.set_by)));
        if let Some(by) = cached {
            return Ok(by);
        }
        let row: Option<(i64, i64)> = self
            .conn
            .prepare_cached("SELECT set_rep, set_seq FROM payloads WHERE node = ?1")?
            .query_row([node.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(rep, seq)| self.op_id(rep, seq)).transpose()
    }

    fn payload(&self, node: NodeId) -> Result<Option<PayloadRecord>> {
        if let Some(p) = self
            .cache()
            .as_ref()
            .and_then(|c| c.payloads.get(&node).cloned())
        {
            return Ok(p);
        }
        let p = self.payload_row(node)?;
        if let Some(mut c) = self.cache() {
            c.remember_payload(node, p.as_ref());
        }
        Ok(p)
    }

    fn set_payload(&mut self, node: NodeId, payload: Option<&PayloadRecord>) -> Result<()> {
        if let Some(mut c) = self.cache() {
            c.remember_payload(node, payload);
        }
        self.write_payload_row(node, payload)
    }

    fn children(
        &self,
        parent: NodeId,
        after: Option<(&Position, NodeId)>,
        limit: usize,
    ) -> Result<Vec<Child>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut push = |r: &Row<'_>| -> Result<()> {
            out.push(Child {
                node: node_of(r.get_ref(0)?.as_blob()?, "nodes", "node")?,
                position: Position::from_bytes(r.get_ref(1)?.as_blob()?),
            });
            Ok(())
        };
        match after {
            None => {
                let mut st = self.conn.prepare_cached(
                    "SELECT node, position FROM nodes WHERE parent = ?1
                     ORDER BY position, node LIMIT ?2",
                )?;
                let mut rows = st.query(params![parent.as_bytes(), limit])?;
                while let Some(r) = rows.next()? {
                    push(r)?;
                }
            }
            Some((pos, node)) => {
                let mut st = self.conn.prepare_cached(
                    "SELECT node, position FROM nodes WHERE parent = ?1 AND (position, node) > (?2, ?3)
                     ORDER BY position, node LIMIT ?4",
                )?;
                let mut rows = st.query(params![
                    parent.as_bytes(),
                    pos.as_bytes(),
                    node.as_bytes(),
                    limit
                ])?;
                while let Some(r) = rows.next()? {
                    push(r)?;
                }
            }
        }
        Ok(out)
    }

    fn child_before(
        &self,
        parent: NodeId,
        before: Option<(&Position, NodeId)>,
    ) -> Result<Option<Child>> {
        let map = |r: &Row<'_>| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?));
        let row = match before {
            None => self
                .conn
                .prepare_cached(
                    "SELECT node, position FROM nodes WHERE parent = ?1
                     ORDER BY position DESC, node DESC LIMIT 1",
                )?
                .query_row([parent.as_bytes()], map)
                .optional()?,
            Some((pos, node)) => self
                .conn
                .prepare_cached(
                    "SELECT node, position FROM nodes WHERE parent = ?1 AND (position, node) < (?2, ?3)
                     ORDER BY position DESC, node DESC LIMIT 1",
                )?
                .query_row(
                    params![parent.as_bytes(), pos.as_bytes(), node.as_bytes()],
                    map,
                )
                .optional()?,
        };
        row.map(|(n, p)| {
            Ok(Child {
                node: node_of(&n, "nodes", "node")?,
                position: Position::from_bytes(&p),
            })
        })
        .transpose()
    }

    fn child_count(&self, parent: NodeId) -> Result<u64> {
        if let Some(&n) = self.cache().as_ref().and_then(|c| c.children.get(&parent)) {
            return Ok(n);
        }
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM nodes WHERE parent = ?1")?
            .query_row([parent.as_bytes()], |r| r.get(0))?;
        if let Some(mut c) = self.cache() {
            c.remember_children(parent, n as u64);
        }
        Ok(n as u64)
    }

    fn node_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT n FROM counts WHERE name = 'nodes'")?
            .query_row([], |r| r.get(0))?;
        Ok((n + self.reps.borrow().counts.0) as u64)
    }

    fn entry(&self, id: OpId) -> Result<Option<LogEntry>> {
        let Some(rep) = self.replica_index(id.replica())? else {
            return Ok(None);
        };
        if self.beyond_log(rep, id.seq())? {
            return Ok(None);
        }
        let mut st = self.conn.prepare_cached(
            "SELECT replica, seq, op, effect, undo FROM ops WHERE replica = ?1 AND seq = ?2",
        )?;
        let mut rows = st.query(params![rep, seq_param(id.seq())?])?;
        match rows.next()? {
            Some(r) => Ok(Some(self.log_entry(r)?)),
            None => Ok(None),
        }
    }

    fn entry_lamport(&self, id: OpId) -> Result<Option<crate::id::Lamport>> {
        let Some(rep) = self.replica_index(id.replica())? else {
            return Ok(None);
        };
        if self.beyond_log(rep, id.seq())? {
            return Ok(None);
        }
        let l: Option<i64> = self
            .conn
            .prepare_cached("SELECT lamport FROM ops WHERE replica = ?1 AND seq = ?2")?
            .query_row(params![rep, seq_param(id.seq())?], |r| r.get(0))
            .optional()?;
        Ok(l.map(|l| crate::id::Lamport::new(l as u64)))
    }

    fn log_insert(&mut self, entry: &LogEntry) -> Result<()> {
        let id = entry.op.id();
        let rep = self.intern(id.replica())?;
        let seq = seq_param(id.seq())?;
        self.conn
            .prepare_cached(
                "INSERT INTO ops(replica, seq, lamport, node, op, effect, undo)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                rep,
                seq,
                seq_param(entry.op.lamport().get())?,
                entry.op.node().as_bytes(),
                encode_op(&entry.op),
                entry.effect.code(),
                undo::encode(&entry.undo),
            ])?;
        if let Some(mut c) = self.cache() {
            c.logged(rep, id.seq());
        }
        self.count_delta(0, 1)
    }

    fn log_update(&mut self, id: OpId, effect: Effect, undo: &[Undo]) -> Result<()> {
        let Some(rep) = self.replica_index(id.replica())? else {
            return Ok(());
        };
        self.conn
            .prepare_cached(
                "UPDATE ops SET effect = ?3, undo = ?4 WHERE replica = ?1 AND seq = ?2",
            )?
            .execute(params![
                rep,
                seq_param(id.seq())?,
                effect.code(),
                undo::encode(undo)
            ])?;
        Ok(())
    }

    fn log_last(&self) -> Result<Option<LogKey>> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT o.lamport, r.key FROM ops o JOIN replicas r ON r.idx = o.replica
                 WHERE o.lamport = (SELECT max(lamport) FROM ops)
                 ORDER BY r.key DESC LIMIT 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(l, k)| {
            Ok(LogKey::new(
                crate::id::Lamport::new(l as u64),
                ReplicaId::from_bytes(fixed(&k, "replicas", "key")?),
            ))
        })
        .transpose()
    }

    fn log_after(&self, key: LogKey) -> Result<Vec<LogEntry>> {
        let mut st = self.conn.prepare_cached(
            "SELECT o.replica, o.seq, o.op, o.effect, o.undo, r.key
             FROM ops o JOIN replicas r ON r.idx = o.replica
             WHERE o.lamport >= ?1 ORDER BY o.lamport, r.key",
        )?;
        let lamport = seq_param(key.lamport().get())?;
        let mut rows = st.query([lamport])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let e = self.log_entry(r)?;
            if e.op.key() > key {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn log_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT n FROM counts WHERE name = 'ops'")?
            .query_row([], |r| r.get(0))?;
        Ok((n + self.reps.borrow().counts.1) as u64)
    }

    fn max_seq(&self, replica: ReplicaId) -> Result<u64> {
        let Some(rep) = self.replica_index(replica)? else {
            return Ok(0);
        };
        if let Some(&m) = self.cache().as_ref().and_then(|c| c.max_seq.get(&rep)) {
            return Ok(m);
        }
        let m = self.max_seq_row(rep)?;
        if let Some(mut c) = self.cache() {
            c.remember_max_seq(rep, m);
        }
        Ok(m)
    }

    fn frontier(&self) -> Result<VersionVector> {
        let mut st = self.conn.prepare_cached(
            "SELECT key, (SELECT max(seq) FROM ops WHERE replica = idx) AS f FROM replicas
             WHERE f IS NOT NULL",
        )?;
        let mut rows = st.query([])?;
        let mut v = VersionVector::new();
        while let Some(r) = rows.next()? {
            let k = ReplicaId::from_bytes(fixed(r.get_ref(0)?.as_blob()?, "replicas", "key")?);
            v.set(k, r.get::<_, i64>(1)? as u64);
        }
        Ok(v)
    }

    fn pending_insert(&mut self, awaits: OpId, op: &Op) -> Result<()> {
        let a = self.intern(awaits.replica())?;
        let r = self.intern(op.id().replica())?;
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO pending(awaits_rep, awaits_seq, replica, seq, op)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                a,
                seq_param(awaits.seq())?,
                r,
                seq_param(op.id().seq())?,
                encode_op(op)
            ])?;
        self.pending_changed(n as i64);
        Ok(())
    }

    fn pending_take(&mut self, awaits: OpId) -> Result<Vec<Op>> {
        if self.tx != Tx::None && self.pending_rows()? == 0 {
            return Ok(Vec::new());
        }
        let Some(a) = self.replica_index(awaits.replica())? else {
            return Ok(Vec::new());
        };
        let seq = seq_param(awaits.seq())?;
        let mut out = Vec::new();
        {
            let mut st = self.conn.prepare_cached(
                "SELECT replica, seq, op FROM pending WHERE awaits_rep = ?1 AND awaits_seq = ?2
                 ORDER BY id",
            )?;
            let mut rows = st.query(params![a, seq])?;
            while let Some(r) = rows.next()? {
                let id = self.op_id(r.get(0)?, r.get(1)?)?;
                out.push(decode_op(id, r.get_ref(2)?.as_blob()?)?);
            }
        }
        let n = self
            .conn
            .prepare_cached("DELETE FROM pending WHERE awaits_rep = ?1 AND awaits_seq = ?2")?
            .execute(params![a, seq])?;
        self.pending_changed(-(n as i64));
        Ok(out)
    }

    fn pending_get(&self, id: OpId) -> Result<Option<Op>> {
        if self.tx != Tx::None && self.pending_rows()? == 0 {
            return Ok(None);
        }
        let Some(r) = self.replica_index(id.replica())? else {
            return Ok(None);
        };
        let b: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT op FROM pending WHERE replica = ?1 AND seq = ?2 LIMIT 1")?
            .query_row(params![r, seq_param(id.seq())?], |r| r.get(0))
            .optional()?;
        b.map(|b| decode_op(id, &b)).transpose()
    }

    fn pending_len(&self) -> Result<u64> {
        self.pending_rows()
    }

    fn doc_entry_insert(&mut self, key: &[u8; 32], kind: u8, bytes: &[u8]) -> Result<bool> {
        self.entries_insert(key, kind, bytes)
    }

    fn doc_entries(&self) -> Result<Vec<(u8, Vec<u8>)>> {
        self.entries_all()
    }

    fn held_insert(&mut self, op: &Op) -> Result<()> {
        self.held_put(op)
    }

    fn held_remove(&mut self, id: OpId) -> Result<()> {
        self.held_delete(id)
    }

    fn held_ops(&self) -> Result<Vec<Op>> {
        self.held_all()
    }

    fn begin(&mut self) -> Result<()> {
        if self.tx != Tx::None {
            return Err(SqliteStoreError::Transaction(TxMisuse::Nested));
        }
        self.reps.get_mut().unknown.clear();
        if self.conn.is_autocommit() {
            self.exec_cached("BEGIN IMMEDIATE")?;
            self.tx = Tx::Top;
            // The cache of the last batch is exact only if nothing else wrote since it committed
            // (checked under the write lock, so nothing else can write until this batch ends).
            let version = match self.data_version() {
                Ok(v) => v,
                Err(e) => {
                    self.tx = Tx::None;
                    self.cache.get_mut().clear();
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            };
            let changes = self.conn.total_changes();
            let cache = self.cache.get_mut();
            if cache.committed_at != Some((version, changes)) {
                cache.clear();
            }
            cache.committed_at = None;
            cache.begun_at = Some(version);
        } else {
            self.exec_cached("SAVEPOINT canopy_batch")?;
            self.tx = Tx::Savepoint;
            // the outer transaction may be rolled back after this batch: never reuse a cache
            self.cache.get_mut().clear();
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let sql = match self.tx {
            Tx::None => return Err(SqliteStoreError::Transaction(TxMisuse::NotOpen)),
            Tx::Top => "COMMIT",
            Tx::Savepoint => "RELEASE canopy_batch",
        };
        self.flush_counts()?;
        self.reps.get_mut().unknown.clear();
        // Until the cache is known valid again it is empty (an error below leaves it so).
        let mut cache = std::mem::take(self.cache.get_mut());
        self.conn.prepare_cached(sql)?.execute([])?;
        let tx = std::mem::replace(&mut self.tx, Tx::None);
        if let (Tx::Top, Some(version)) = (tx, cache.begun_at.take()) {
            cache.committed_at = Some((version, self.conn.total_changes()));
            *self.cache.get_mut() = cache;
        }
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        let tx = std::mem::replace(&mut self.tx, Tx::None);
        // replica indexes assigned inside the batch are gone, and so are its count changes
        *self.reps.get_mut() = replicas::Replicas::default();
        self.cache.get_mut().clear();
        match tx {
            Tx::None => Err(SqliteStoreError::Transaction(TxMisuse::NotOpen)),
            Tx::Top => {
                self.conn.execute_batch("ROLLBACK")?;
                Ok(())
            }
            Tx::Savepoint => {
                self.conn
                    .execute_batch("ROLLBACK TO canopy_batch; RELEASE canopy_batch")?;
                Ok(())
            }
        }
    }
}
