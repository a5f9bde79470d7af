//! Table-valued functions: `canopy_children(parent)`, `canopy_subtree(root)`,
//! `canopy_ancestors(node)`, `canopy_ops_since(frontier)`.
//!
//! Each is an eponymous virtual table whose arguments are hidden columns. Rows are produced in
//! pages from keyset queries on the store, so a scan never holds more than one page (and, for a
//! subtree, one page per level).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;

use canopy_tree::{Child, NodeId, Position, SqliteStore, Store, SubtreeWalk, VersionVector};
use rusqlite::types::{Value, ValueRef};
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConnection, VTabCursor,
};
use rusqlite::{ffi, Connection};

use crate::args::At;
use crate::error::ExtError;

/// Rows fetched per query.
const PAGE: usize = 256;

/// A row source behind one table-valued function.
trait Source: Sized {
    /// SQL name.
    const NAME: &'static str;
    /// `CREATE TABLE x(...)` with the argument as the last, hidden column.
    const SCHEMA: &'static CStr;
    /// Number of visible columns (the argument column follows them).
    const COLUMNS: c_int;
    /// Starts a scan for argument `arg`.
    fn start(store: &SqliteStore, arg: ValueRef<'_>) -> Result<Self, ExtError>;
    /// The next rows (empty: done).
    fn page(&mut self, store: &SqliteStore) -> Result<Vec<Vec<Value>>, ExtError>;
}

fn store_err(func: &'static str) -> impl Fn(canopy_tree::SqliteStoreError) -> ExtError {
    move |source| ExtError::Store { func, source }
}

fn blob(b: &[u8]) -> Value {
    Value::Blob(b.to_vec())
}

/// Fails with "unknown node" unless `node` is ROOT, TRASH or placed.
fn known(store: &SqliteStore, func: &'static str, node: NodeId) -> Result<(), ExtError> {
    if node.is_reserved() || store.parent(node).map_err(store_err(func))?.is_some() {
        Ok(())
    } else {
        Err(ExtError::UnknownNode {
            func,
            node: node.to_string(),
        })
    }
}

/// `canopy_children(parent)`: node, position, payload in sibling order.
struct Children {
    parent: NodeId,
    after: Option<(Position, NodeId)>,
    done: bool,
}

impl Source for Children {
    const NAME: &'static str = "canopy_children";
    const SCHEMA: &'static CStr =
        c"CREATE TABLE x(node BLOB, position BLOB, payload BLOB, parent HIDDEN)";
    const COLUMNS: c_int = 3;
    fn start(store: &SqliteStore, arg: ValueRef<'_>) -> Result<Self, ExtError> {
        let parent = At {
            func: Self::NAME,
            arg: 1,
            name: "parent",
        }
        .node(arg)?;
        known(store, Self::NAME, parent)?;
        Ok(Self {
            parent,
            after: None,
            done: false,
        })
    }
    fn page(&mut self, store: &SqliteStore) -> Result<Vec<Vec<Value>>, ExtError> {
        if self.done {
            return Ok(Vec::new());
        }
        let kids: Vec<Child> = store
            .children(self.parent, self.after.as_ref().map(|(p, n)| (p, *n)), PAGE)
            .map_err(store_err(Self::NAME))?;
        self.done = kids.len() < PAGE;
        self.after = kids.last().map(|c| (c.position.clone(), c.node));
        kids.into_iter()
            .map(|c| {
                let payload = store.payload(c.node).map_err(store_err(Self::NAME))?;
                Ok(vec![
                    blob(c.node.as_bytes()),
                    blob(c.position.as_bytes()),
                    payload.map_or(Value::Null, |p| Value::Blob(p.bytes)),
                ])
            })
            .collect()
    }
}

/// `canopy_subtree(root)`: node, parent, position, depth in pre-order (root excluded).
struct Subtree(SubtreeWalk);

impl Source for Subtree {
    const NAME: &'static str = "canopy_subtree";
    const SCHEMA: &'static CStr =
        c"CREATE TABLE x(node BLOB, parent BLOB, position BLOB, depth INTEGER, root HIDDEN)";
    const COLUMNS: c_int = 4;
    fn start(store: &SqliteStore, arg: ValueRef<'_>) -> Result<Self, ExtError> {
        let root = At {
            func: Self::NAME,
            arg: 1,
            name: "root",
        }
        .node(arg)?;
        known(store, Self::NAME, root)?;
        Ok(Self(SubtreeWalk::new(root)))
    }
    fn page(&mut self, store: &SqliteStore) -> Result<Vec<Vec<Value>>, ExtError> {
        let mut rows = Vec::new();
        while rows.len() < PAGE {
            let Some(e) = self.0.next(store).map_err(store_err(Self::NAME))? else {
                break;
            };
            rows.push(vec![
                blob(e.node.as_bytes()),
                blob(e.parent.as_bytes()),
                blob(e.position.as_bytes()),
                Value::Integer(i64::from(e.depth)),
            ]);
        }
        Ok(rows)
    }
}

/// `canopy_ancestors(node)`: node, depth from the parent (1) up to ROOT or TRASH.
struct Ancestors(Option<NodeId>);

impl Source for Ancestors {
    const NAME: &'static str = "canopy_ancestors";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(node BLOB, depth INTEGER, of HIDDEN)";
    const COLUMNS: c_int = 2;
    fn start(store: &SqliteStore, arg: ValueRef<'_>) -> Result<Self, ExtError> {
        let node = At {
            func: Self::NAME,
            arg: 1,
            name: "node",
        }
        .node(arg)?;
        known(store, Self::NAME, node)?;
        Ok(Self(Some(node)))
    }
    fn page(&mut self, store: &SqliteStore) -> Result<Vec<Vec<Value>>, ExtError> {
        let Some(node) = self.0.take() else {
            return Ok(Vec::new());
        };
        Ok(store
            .ancestors(node)
            .map_err(store_err(Self::NAME))?
            .into_iter()
            .map(|a| vec![blob(a.node.as_bytes()), Value::Integer(i64::from(a.depth))])
            .collect())
    }
}

/// `canopy_ops_since(frontier)`: replica, seq, lamport, node, op for every logged op the frontier
/// does not cover, by replica then seq.
struct OpsSince(VersionVector);

impl Source for OpsSince {
    const NAME: &'static str = "canopy_ops_since";
    const SCHEMA: &'static CStr = c"CREATE TABLE x(replica BLOB, seq INTEGER, lamport INTEGER, node BLOB, op BLOB, frontier HIDDEN)";
    const COLUMNS: c_int = 5;
    fn start(_: &SqliteStore, arg: ValueRef<'_>) -> Result<Self, ExtError> {
        Ok(Self(
            At {
                func: Self::NAME,
                arg: 1,
                name: "frontier",
            }
            .frontier(arg)?,
        ))
    }
    fn page(&mut self, store: &SqliteStore) -> Result<Vec<Vec<Value>>, ExtError> {
        let ops = store
            .ops_since(&self.0, PAGE)
            .map_err(store_err(Self::NAME))?;
        Ok(ops
            .into_iter()
            .map(|op| {
                let id = op.id();
                if id.seq() > self.0.get(&id.replica()) {
                    self.0.set(id.replica(), id.seq());
                }
                vec![
                    blob(id.replica().as_bytes()),
                    Value::Integer(id.seq() as i64),
                    Value::Integer(op.lamport().get() as i64),
                    blob(op.node().as_bytes()),
                    Value::Blob(op.encode()),
                ]
            })
            .collect())
    }
}

/// The virtual table of source `S`.
#[repr(C)]
struct Tab<S> {
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    source: PhantomData<S>,
}

// SAFETY: `Tab` starts with `sqlite3_vtab` (repr(C)), as rusqlite requires.
unsafe impl<'vtab, S: Source + 'vtab> VTab<'vtab> for Tab<S> {
    type Aux = ();
    type Cursor = Cursor<'vtab, S>;

    fn connect(
        db: &mut VTabConnection,
        _aux: Option<&()>,
        _module: &[u8],
        _database: &[u8],
        _table: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        // SAFETY: the handle is only used while the connection is open (cursors of this table).
        let handle = unsafe { db.handle() };
        Ok((
            Cow::Borrowed(S::SCHEMA),
            Tab {
                base: ffi::sqlite3_vtab::default(),
                db: handle,
                source: PhantomData,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let mut arg = None;
        let mut unusable = false;
        for (i, c) in info.constraints().enumerate() {
            if c.column() == S::COLUMNS
                && c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ
            {
                if c.is_usable() {
                    arg = Some(i);
                } else {
                    unusable = true;
                }
            }
        }
        match arg {
            Some(i) => {
                let mut u = info.constraint_usage(i);
                u.set_argv_index(1);
                u.set_omit(true);
                info.set_estimated_cost(10.0);
                info.set_estimated_rows(100);
                info.set_idx_num(1);
                Ok(true)
            }
            // the argument exists but cannot be used in this plan: ask SQLite for another
            None if unusable => Ok(false),
            None => {
                info.set_idx_num(0);
                info.set_estimated_cost(1e12);
                Ok(true)
            }
        }
    }

    fn open(&'vtab mut self) -> rusqlite::Result<Cursor<'vtab, S>> {
        Ok(Cursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            db: self.db,
            store: None,
            source: None,
            rows: VecDeque::new(),
            rowid: 0,
            phantom: PhantomData,
        })
    }
}

/// A scan of source `S`.
#[repr(C)]
struct Cursor<'vtab, S> {
    base: ffi::sqlite3_vtab_cursor,
    db: *mut ffi::sqlite3,
    store: Option<SqliteStore>,
    source: Option<S>,
    rows: VecDeque<Vec<Value>>,
    rowid: i64,
    phantom: PhantomData<&'vtab Tab<S>>,
}

impl<S: Source> Cursor<'_, S> {
    fn fill(&mut self) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            if let (Some(store), Some(src)) = (&self.store, &mut self.source) {
                self.rows.extend(src.page(store)?);
            }
        }
        Ok(())
    }
}

// SAFETY: `Cursor` starts with `sqlite3_vtab_cursor` (repr(C)), as rusqlite requires.
unsafe impl<S: Source> VTabCursor for Cursor<'_, S> {
    fn filter(
        &mut self,
        idx_num: c_int,
        _: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        if idx_num != 1 {
            return Err(ExtError::ArgCount {
                func: S::NAME,
                expected: "1",
                got: 0,
            }
            .into());
        }
        // SAFETY: the cursor's connection is open while the cursor exists.
        let conn = unsafe { Connection::from_handle(self.db) }?;
        let store = SqliteStore::from_connection(conn).map_err(store_err(S::NAME))?;
        let arg: Value = args.get(0)?;
        self.source = Some(S::start(&store, ValueRef::from(&arg))?);
        self.store = Some(store);
        self.rows.clear();
        self.rowid = 1;
        self.fill()
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.rows.pop_front();
        self.rowid += 1;
        self.fill()
    }

    fn eof(&self) -> bool {
        self.rows.is_empty()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        match self
            .rows
            .front()
            .and_then(|r| usize::try_from(i).ok().and_then(|i| r.get(i)))
        {
            Some(v) => ctx.set_result(v),
            None => ctx.set_result(&Value::Null),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.rowid)
    }
}

/// Registers the table-valued functions.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    {
        const M: Module<'static, Tab<Children>> = Module::eponymous_only_module();
        conn.create_module(Children::NAME, &M, None)?;
    }
    {
        const M: Module<'static, Tab<Subtree>> = Module::eponymous_only_module();
        conn.create_module(Subtree::NAME, &M, None)?;
    }
    {
        const M: Module<'static, Tab<Ancestors>> = Module::eponymous_only_module();
        conn.create_module(Ancestors::NAME, &M, None)?;
    }
    {
        const M: Module<'static, Tab<OpsSince>> = Module::eponymous_only_module();
        conn.create_module(OpsSince::NAME, &M, None)?;
    }
    Ok(())
}
