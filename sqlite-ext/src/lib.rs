//! Canopy as a loadable SQLite extension: the tree CRDT's engine and [`canopy_tree::SqliteStore`]
//! behind `canopy_*` SQL functions, in any SQLite host (the `sqlite3` shell, other languages).
//!
//! ```text
//! $ sqlite3 doc.canopy
//! sqlite> .load ./libcanopy
//! sqlite> SELECT canopy_version();
//! sqlite> SELECT canopy_op_node(canopy_create(zeroblob(32), 'root', 'last', NULL, CAST('hi' AS BLOB)));
//! sqlite> SELECT hex(node), depth FROM canopy_subtree('root');
//! ```
//!
//! The database is one Canopy document (`spec/sqlite.md`); the SQL surface is listed in
//! `spec/sqlite.md` ("Loadable extension"). Every writing call is atomic: an invalid argument,
//! a corrupt op blob, an unknown node or a rejected op is an SQL error and writes nothing.
//! Writing functions run from `SELECT` (inside INSERT/UPDATE/DELETE they refuse: SQLite allows
//! no savepoint there).

mod args;
mod error;
mod tvf;

use std::os::raw::{c_char, c_int};

use canopy_tree::{NodeId, Op, Outcome, Place, ReplicaId, SqliteStore, Store, Tree};
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::{ffi, Connection};

use args::{encode_frontier, At, PlaceKind};
use error::ExtError;

/// Entry point, found by name from the file name `libcanopy.so` (`.load ./libcanopy`).
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and API table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_canopy_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: forwarded unchanged from SQLite's loader.
    unsafe { Connection::extension_init2(db, pz_err_msg, p_api, init) }
}

/// Creates the schema if the database is empty, then registers the functions.
fn init(db: Connection) -> rusqlite::Result<bool> {
    // refuse a database that is not (and cannot become) a Canopy document
    drop(SqliteStore::from_connection(db_ref(&db)?).map_err(|e| {
        rusqlite::Error::UserFunctionError(Box::new(ExtError::Store {
            func: "load",
            source: e,
        }))
    })?);
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let rw = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY;
    let ro = FunctionFlags::SQLITE_UTF8;
    db.create_scalar_function(c"canopy_version", 0, det, |_| {
        Ok(format!(
            "canopy {} (sqlite schema 2, op encoding {})",
            env!("CARGO_PKG_VERSION"),
            canopy_tree::VERSION
        ))
    })?;
    db.create_scalar_function(c"canopy_root", 0, det, |_| {
        Ok(NodeId::ROOT.as_bytes().to_vec())
    })?;
    db.create_scalar_function(c"canopy_trash", 0, det, |_| {
        Ok(NodeId::TRASH.as_bytes().to_vec())
    })?;
    db.create_scalar_function(c"canopy_op_node", 1, det, |ctx| {
        let op = decode(ctx, "canopy_op_node", 0)?;
        Ok(op.node().as_bytes().to_vec())
    })?;
    db.create_scalar_function(c"canopy_op_id", 1, det, |ctx| {
        Ok(decode(ctx, "canopy_op_id", 0)?.id().to_string())
    })?;
    db.create_scalar_function(c"canopy_apply", 1, rw, |ctx| apply_one(ctx))?;
    db.create_aggregate_function(c"canopy_apply_batch", 1, rw, ApplyBatch)?;
    db.create_scalar_function(c"canopy_create", -1, rw, |ctx| {
        local(ctx, "canopy_create", 2..=5, |t, c| {
            let parent = node_arg(c, "canopy_create", 1, "parent")?;
            let place = place_args(c, "canopy_create", 2)?;
            let payload = match c.len() > 4 {
                true => At {
                    func: "canopy_create",
                    arg: 5,
                    name: "payload",
                }
                .opt_blob(c.get_raw(4))?
                .map(<[u8]>::to_vec),
                false => None,
            };
            Ok(t.create(parent, place, payload)?)
        })
    })?;
    db.create_scalar_function(c"canopy_move", -1, rw, |ctx| {
        relocate(ctx, "canopy_move", Tree::move_node)
    })?;
    db.create_scalar_function(c"canopy_delete", 2, rw, |ctx| {
        local(ctx, "canopy_delete", 2..=2, |t, c| {
            Ok(t.delete(node_arg(c, "canopy_delete", 1, "node")?)?)
        })
    })?;
    db.create_scalar_function(c"canopy_restore", -1, rw, |ctx| {
        relocate(ctx, "canopy_restore", Tree::restore)
    })?;
    db.create_scalar_function(c"canopy_set_payload", 3, rw, |ctx| {
        local(ctx, "canopy_set_payload", 3..=3, |t, c| {
            let node = node_arg(c, "canopy_set_payload", 1, "node")?;
            let payload = At {
                func: "canopy_set_payload",
                arg: 3,
                name: "payload",
            }
            .blob(c.get_raw(2))?
            .to_vec();
            Ok(t.set_payload(node, payload)?)
        })
    })?;
    db.create_scalar_function(c"canopy_parent", 1, ro, |ctx| {
        let func = "canopy_parent";
        let node = node_arg(ctx, func, 0, "node")?;
        let store = store(ctx, func)?;
        if node.is_reserved() {
            return Ok(None);
        }
        match store.parent(node).map_err(ExtError::store(func))? {
            Some(p) => Ok(Some(p.as_bytes().to_vec())),
            None => Err(unknown(func, node).into()),
        }
    })?;
    db.create_scalar_function(c"canopy_payload", 1, ro, |ctx| {
        let func = "canopy_payload";
        let node = node_arg(ctx, func, 0, "node")?;
        let store = store(ctx, func)?;
        if !node.is_reserved() && store.parent(node).map_err(ExtError::store(func))?.is_none() {
            return Err(unknown(func, node).into());
        }
        Ok(store
            .payload(node)
            .map_err(ExtError::store(func))?
            .map(|p| p.bytes))
    })?;
    db.create_scalar_function(c"canopy_node_count", 0, ro, |ctx| {
        let store = store(ctx, "canopy_node_count")?;
        Ok(store
            .node_count()
            .map_err(ExtError::store("canopy_node_count"))? as i64)
    })?;
    db.create_scalar_function(c"canopy_frontier", 0, ro, |ctx| {
        let store = store(ctx, "canopy_frontier")?;
        Ok(encode_frontier(
            &store
                .frontier()
                .map_err(ExtError::store("canopy_frontier"))?,
        ))
    })?;
    db.create_scalar_function(c"canopy_check", 0, ro, |ctx| {
        let store = store(ctx, "canopy_check")?;
        let tree = Tree::new(store, ReplicaId::from_bytes([0; 32]));
        match tree.check_invariants() {
            Ok(()) => Ok("ok".to_string()),
            Err(e) => Ok(format!("invariant violated: {e}")),
        }
    })?;
    tvf::register(&db)?;
    Ok(false)
}

/// A second, non-owning handle on the connection `db` (statements it caches are finalized when
/// it is dropped; the connection stays open).
fn db_ref(db: &Connection) -> rusqlite::Result<Connection> {
    // SAFETY: the handle is valid for the duration of the call that uses the returned value.
    unsafe { Connection::from_handle(db.handle()) }
}

/// The store over the calling statement's connection.
fn store(ctx: &Context<'_>, func: &'static str) -> Result<SqliteStore, ExtError> {
    // SAFETY: the connection outlives this function call; the store is dropped before it returns.
    let conn = unsafe { ctx.get_connection() }
        .and_then(|c| db_ref(&c))
        .map_err(|e| ExtError::Store {
            func,
            source: e.into(),
        })?;
    SqliteStore::from_connection(conn).map_err(ExtError::store(func))
}

fn unknown(func: &'static str, node: NodeId) -> ExtError {
    ExtError::UnknownNode {
        func,
        node: node.to_string(),
    }
}

fn node_arg(
    ctx: &Context<'_>,
    func: &'static str,
    i: usize,
    name: &'static str,
) -> Result<NodeId, ExtError> {
    At {
        func,
        arg: i + 1,
        name,
    }
    .node(ctx.get_raw(i))
}

/// `place [, sibling]` starting at argument `i` (absent: last).
fn place_args(ctx: &Context<'_>, func: &'static str, i: usize) -> Result<Place, ExtError> {
    if ctx.len() <= i {
        return Ok(Place::Last);
    }
    let kind = At {
        func,
        arg: i + 1,
        name: "place",
    }
    .place_kind(ctx.get_raw(i))?;
    let sibling = || -> Result<NodeId, ExtError> {
        if ctx.len() <= i + 1 {
            return Err(ExtError::ArgCount {
                func,
                expected: "a sibling after 'after'/'before'",
                got: ctx.len(),
            });
        }
        node_arg(ctx, func, i + 1, "sibling")
    };
    Ok(match kind {
        PlaceKind::First => Place::First,
        PlaceKind::Last => Place::Last,
        PlaceKind::After => Place::After(sibling()?),
        PlaceKind::Before => Place::Before(sibling()?),
    })
}

fn decode(ctx: &Context<'_>, func: &'static str, i: usize) -> Result<Op, ExtError> {
    let b = At {
        func,
        arg: i + 1,
        name: "op",
    }
    .blob(ctx.get_raw(i))?;
    Op::decode(b).map_err(|source| ExtError::Decode {
        func,
        index: 0,
        source,
    })
}

/// Runs `f` inside `SAVEPOINT canopy_call`: released if it succeeds, rolled back if not.
fn atomically<T>(
    conn: &Connection,
    func: &'static str,
    f: impl FnOnce() -> Result<T, ExtError>,
) -> Result<T, ExtError> {
    let sql = |s: &str| {
        conn.execute_batch(s).map_err(|e| ExtError::Store {
            func,
            source: e.into(),
        })
    };
    match conn.execute_batch("SAVEPOINT canopy_call") {
        Ok(()) => {}
        // SQLITE_BUSY from SAVEPOINT (which takes no lock): "SQL statements in progress", i.e.
        // called inside INSERT/UPDATE/DELETE, where SQLite allows no savepoint and would not
        // undo this call's writes if it failed half-way
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            return Err(ExtError::InsideWrite { func });
        }
        Err(e) => {
            return Err(ExtError::Store {
                func,
                source: e.into(),
            })
        }
    }
    match f() {
        Ok(v) => {
            sql("RELEASE canopy_call")?;
            Ok(v)
        }
        Err(e) => {
            sql("ROLLBACK TO canopy_call; RELEASE canopy_call")?;
            Err(e)
        }
    }
}

/// Applies decoded ops as one batch; any rejected op fails (and rolls back) the whole call.
/// Returns the number of ops newly logged or parked (duplicates not counted).
fn apply_ops(ctx: &Context<'_>, func: &'static str, ops: Vec<Op>) -> Result<i64, ExtError> {
    let store = store(ctx, func)?;
    let conn = db_ref(store.connection()).map_err(|e| ExtError::Store {
        func,
        source: e.into(),
    })?;
    let mut tree = Tree::new(store, ReplicaId::from_bytes([0; 32]));
    atomically(&conn, func, || {
        let report = tree
            .apply(ops)
            .map_err(|source| ExtError::Apply { func, source })?;
        let mut n = 0;
        for r in report.all() {
            match &r.outcome {
                Outcome::Rejected(source) => {
                    return Err(ExtError::Rejected {
                        func,
                        op: r.id.to_string(),
                        source: source.clone(),
                    })
                }
                Outcome::Duplicate => {}
                _ => n += 1,
            }
        }
        Ok(n)
    })
}

/// `canopy_apply(op)`: applies one encoded op; returns what became of it.
fn apply_one(ctx: &Context<'_>) -> rusqlite::Result<&'static str> {
    let func = "canopy_apply";
    let op = decode(ctx, func, 0)?;
    let id = op.id();
    let store = store(ctx, func)?;
    let conn = db_ref(store.connection()).map_err(|e| ExtError::Store {
        func,
        source: e.into(),
    })?;
    let mut tree = Tree::new(store, ReplicaId::from_bytes([0; 32]));
    let outcome = atomically(&conn, func, || {
        let report = tree
            .apply([op])
            .map_err(|source| ExtError::Apply { func, source })?;
        let outcome = report.ops.into_iter().next().map(|r| r.outcome);
        match outcome {
            Some(Outcome::Rejected(source)) => Err(ExtError::Rejected {
                func,
                op: id.to_string(),
                source,
            }),
            Some(o) => Ok(o),
            None => Ok(Outcome::Duplicate),
        }
    })?;
    Ok(match outcome {
        Outcome::Applied => "applied",
        Outcome::SkippedCycle => "skipped: cycle",
        Outcome::SkippedUnseen => "skipped: unseen content",
        Outcome::Denied { .. } => "denied",
        Outcome::Pending { .. } => "pending",
        Outcome::Duplicate => "duplicate",
        _ => "other",
    })
}

/// `canopy_apply_batch(op)`: an aggregate that applies all its rows' ops as one batch.
struct ApplyBatch;

impl Aggregate<Vec<Op>, i64> for ApplyBatch {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<Op>> {
        Ok(Vec::new())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<Op>) -> rusqlite::Result<()> {
        let func = "canopy_apply_batch";
        let b = At {
            func,
            arg: 1,
            name: "op",
        }
        .blob(ctx.get_raw(0))?;
        let op = Op::decode(b).map_err(|source| ExtError::Decode {
            func,
            index: acc.len(),
            source,
        })?;
        acc.push(op);
        Ok(())
    }
    fn finalize(&self, ctx: &mut Context<'_>, acc: Option<Vec<Op>>) -> rusqlite::Result<i64> {
        Ok(apply_ops(
            ctx,
            "canopy_apply_batch",
            acc.unwrap_or_default(),
        )?)
    }
}

/// A local op by the replica in argument 1; returns the encoded op (to send to peers).
/// `FUNC(node, parent [, place [, sibling]])`: the local op `op` (`Tree::move_node` for
/// `canopy_move`, `Tree::restore` for `canopy_restore`).
fn relocate<E>(
    ctx: &Context<'_>,
    func: &'static str,
    op: fn(
        &mut Tree<SqliteStore>,
        NodeId,
        NodeId,
        Place,
    ) -> Result<canopy_tree::LocalOp<std::convert::Infallible>, E>,
) -> rusqlite::Result<Vec<u8>>
where
    LocalOrArg: From<E>,
{
    local(ctx, func, 3..=5, |t, c| {
        let node = node_arg(c, func, 1, "node")?;
        let parent = node_arg(c, func, 2, "parent")?;
        let place = place_args(c, func, 3)?;
        Ok(op(t, node, parent, place)?)
    })
}

fn local(
    ctx: &Context<'_>,
    func: &'static str,
    argc: std::ops::RangeInclusive<usize>,
    f: impl FnOnce(
        &mut Tree<SqliteStore>,
        &Context<'_>,
    ) -> Result<canopy_tree::LocalOp<std::convert::Infallible>, LocalOrArg>,
) -> rusqlite::Result<Vec<u8>> {
    if !argc.contains(&ctx.len()) {
        return Err(ExtError::ArgCount {
            func,
            expected: if argc.start() == argc.end() {
                "exactly the documented"
            } else {
                "between the documented"
            },
            got: ctx.len(),
        }
        .into());
    }
    let replica = At {
        func,
        arg: 1,
        name: "replica",
    }
    .replica(ctx.get_raw(0))?;
    let store = store(ctx, func)?;
    let conn = db_ref(store.connection()).map_err(|e| ExtError::Store {
        func,
        source: e.into(),
    })?;
    let mut tree = Tree::new(store, replica);
    let op = atomically(&conn, func, || match f(&mut tree, ctx) {
        Ok(l) => Ok(l.op),
        Err(LocalOrArg::Arg(e)) => Err(e),
        Err(LocalOrArg::Local(source)) => Err(ExtError::Local { func, source }),
    })?;
    Ok(op.encode())
}

/// Either an argument error or a local-op error.
#[derive(Debug)]
enum LocalOrArg {
    Arg(ExtError),
    Local(canopy_tree::LocalError<canopy_tree::SqliteStoreError>),
}

impl From<ExtError> for LocalOrArg {
    fn from(e: ExtError) -> Self {
        LocalOrArg::Arg(e)
    }
}

impl From<canopy_tree::LocalError<canopy_tree::SqliteStoreError>> for LocalOrArg {
    fn from(e: canopy_tree::LocalError<canopy_tree::SqliteStoreError>) -> Self {
        LocalOrArg::Local(e)
    }
}
