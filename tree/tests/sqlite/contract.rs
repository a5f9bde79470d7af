//! The `Store` contract on SqliteStore, call by call (no engine).

use canopy_tree::{
    Child, Effect, Lamport, LogEntry, LogKey, NodeId, Op, OpId, OpKind, PayloadRecord, Placement,
    Position, ReplicaId, SqliteStore, SqliteStoreError, Store, Undo, VersionVector,
};

fn node(i: u8) -> NodeId {
    let mut b = [0u8; 16];
    b[0] = 1;
    b[15] = i;
    NodeId::from_bytes(b)
}

fn rep(i: u8) -> ReplicaId {
    ReplicaId::from_bytes([i; 32])
}

fn pos(b: &[u8]) -> Position {
    Position::from_bytes(b)
}

fn place(parent: NodeId, p: &[u8], by: OpId) -> Placement {
    Placement {
        parent,
        position: pos(p),
        placed_by: by,
    }
}

fn create(r: u8, seq: u64, lamport: u64, n: u8) -> Op {
    Op::new(
        OpId::new(rep(r), seq),
        Lamport::new(lamport),
        OpKind::Create {
            node: node(n),
            parent: NodeId::ROOT,
            position: pos(&[n]),
            payload: Some(vec![n; 3]),
        },
    )
}

fn entry(op: Op, undo: Vec<Undo>) -> LogEntry {
    LogEntry {
        op,
        effect: Effect::Applied,
        undo,
    }
}

#[test]
fn placements_and_keyset_pages() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let by = OpId::new(rep(1), 1);
    s.begin().unwrap();
    // positions deliberately inserted out of order; two share a position (node id breaks the tie)
    for (n, p) in [(5u8, &b"m"[..]), (3, b"c"), (9, b"x"), (4, b"m"), (7, b"a")] {
        s.set_placement(node(n), Some(&place(NodeId::ROOT, p, by)))
            .unwrap();
    }
    s.commit().unwrap();
    let all: Vec<NodeId> = s
        .children(NodeId::ROOT, None, 100)
        .unwrap()
        .into_iter()
        .map(|c| c.node)
        .collect();
    assert_eq!(all, [node(7), node(3), node(4), node(5), node(9)]);
    // keyset pages of 2 give the same sequence
    let mut paged = Vec::new();
    let mut cursor: Option<Child> = None;
    loop {
        let page = s
            .children(
                NodeId::ROOT,
                cursor.as_ref().map(|c| (&c.position, c.node)),
                2,
            )
            .unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(page.iter().map(|c| c.node));
        cursor = page.last().cloned();
    }
    assert_eq!(paged, all);
    assert_eq!(
        s.child_before(NodeId::ROOT, None).unwrap().unwrap().node,
        node(9)
    );
    assert_eq!(
        s.child_before(NodeId::ROOT, Some((&pos(b"m"), node(5))))
            .unwrap()
            .unwrap()
            .node,
        node(4)
    );
    assert_eq!(
        s.child_before(NodeId::ROOT, Some((&pos(b"a"), node(7))))
            .unwrap(),
        None
    );
    assert_eq!(s.child_count(NodeId::ROOT).unwrap(), 5);
    assert_eq!(s.node_count().unwrap(), 5);
    // move one under another, then remove one
    s.begin().unwrap();
    s.set_placement(node(9), Some(&place(node(7), b"q", OpId::new(rep(2), 4))))
        .unwrap();
    s.set_placement(node(3), None).unwrap();
    s.commit().unwrap();
    assert_eq!(s.node_count().unwrap(), 4);
    assert_eq!(s.child_count(NodeId::ROOT).unwrap(), 3);
    assert_eq!(
        s.placement(node(9)).unwrap(),
        Some(place(node(7), b"q", OpId::new(rep(2), 4)))
    );
    assert_eq!(s.placement(node(3)).unwrap(), None);
    let anc: Vec<NodeId> = s
        .ancestors(node(9))
        .unwrap()
        .into_iter()
        .map(|a| a.node)
        .collect();
    assert_eq!(anc, [node(7), NodeId::ROOT]);
    let mut walk = Vec::new();
    s.walk_subtree(NodeId::ROOT, |e| {
        walk.push((e.node, e.depth));
        true
    })
    .unwrap();
    assert_eq!(
        walk,
        [(node(7), 1), (node(9), 2), (node(4), 1), (node(5), 1)]
    );
}

#[test]
fn payloads() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let rec = PayloadRecord {
        bytes: vec![1, 2, 3],
        set_by: OpId::new(rep(3), 7),
    };
    assert_eq!(s.payload(node(1)).unwrap(), None);
    s.set_payload(node(1), Some(&rec)).unwrap();
    assert_eq!(s.payload(node(1)).unwrap(), Some(rec.clone()));
    let rec2 = PayloadRecord {
        bytes: vec![],
        set_by: OpId::new(rep(4), 1),
    };
    s.set_payload(node(1), Some(&rec2)).unwrap();
    assert_eq!(s.payload(node(1)).unwrap(), Some(rec2));
    s.set_payload(node(1), None).unwrap();
    assert_eq!(s.payload(node(1)).unwrap(), None);
}

#[test]
fn log_order_uses_replica_key_not_insertion_index() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    // replica 9 is interned first (smaller compact index) but sorts after replica 2
    let a = create(9, 1, 5, 1);
    let b = create(2, 1, 5, 2);
    let c = create(2, 2, 6, 3);
    let undo = vec![
        Undo::Placement {
            node: node(1),
            prior: Some(place(NodeId::TRASH, b"z", OpId::new(rep(7), 3))),
        },
        Undo::Payload {
            node: node(1),
            prior: None,
        },
    ];
    s.begin().unwrap();
    s.log_insert(&entry(a.clone(), undo.clone())).unwrap();
    s.log_insert(&entry(b.clone(), vec![])).unwrap();
    s.log_insert(&entry(c.clone(), vec![])).unwrap();
    s.commit().unwrap();
    assert_eq!(s.log_len().unwrap(), 3);
    assert_eq!(s.log_last().unwrap(), Some(c.key()));
    let after: Vec<OpId> = s
        .log_after(LogKey::new(Lamport::new(0), rep(0)))
        .unwrap()
        .into_iter()
        .map(|e| e.op.id())
        .collect();
    assert_eq!(after, [b.id(), a.id(), c.id()]);
    let after_b: Vec<OpId> = s
        .log_after(b.key())
        .unwrap()
        .into_iter()
        .map(|e| e.op.id())
        .collect();
    assert_eq!(after_b, [a.id(), c.id()]);
    assert_eq!(s.entry(a.id()).unwrap(), Some(entry(a.clone(), undo)));
    assert_eq!(s.entry(OpId::new(rep(9), 2)).unwrap(), None);
    assert_eq!(s.entry(OpId::new(rep(77), 1)).unwrap(), None);
    s.log_update(a.id(), Effect::SkippedCycle, &[]).unwrap();
    assert_eq!(
        s.entry(a.id()).unwrap().unwrap().effect,
        Effect::SkippedCycle
    );
    assert_eq!(s.max_seq(rep(2)).unwrap(), 2);
    assert_eq!(s.max_seq(rep(9)).unwrap(), 1);
    assert_eq!(s.max_seq(rep(1)).unwrap(), 0);
    let f: VersionVector = [(rep(2), 2), (rep(9), 1)].into_iter().collect();
    assert_eq!(s.frontier().unwrap(), f);
    assert_eq!(s.max_lamport().unwrap(), Lamport::new(6));
    // ops since a frontier, in keyset pages
    let seen: VersionVector = [(rep(2), 1)].into_iter().collect();
    let ids: Vec<OpId> = s
        .ops_since(&seen, 10)
        .unwrap()
        .iter()
        .map(|o| o.id())
        .collect();
    assert_eq!(ids, [c.id(), a.id()]);
    assert_eq!(s.ops_since(&seen, 1).unwrap().len(), 1);
    assert!(s.ops_since(&f, 10).unwrap().is_empty());
}

#[test]
fn pending_ops() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let awaits = OpId::new(rep(5), 3);
    let x = create(1, 2, 9, 1);
    let y = create(2, 4, 9, 2);
    s.pending_insert(awaits, &x).unwrap();
    s.pending_insert(awaits, &y).unwrap();
    s.pending_insert(OpId::new(rep(5), 4), &create(3, 1, 2, 3))
        .unwrap();
    assert_eq!(s.pending_len().unwrap(), 3);
    assert_eq!(s.pending_get(x.id()).unwrap(), Some(x.clone()));
    assert_eq!(s.pending_get(OpId::new(rep(1), 1)).unwrap(), None);
    let mut got = s.pending_take(awaits).unwrap();
    got.sort_by_key(|o| o.id());
    assert_eq!(got, [x.clone(), y]);
    assert!(s.pending_take(awaits).unwrap().is_empty());
    assert_eq!(s.pending_len().unwrap(), 1);
    assert_eq!(s.pending_get(x.id()).unwrap(), None);
}

#[test]
fn rollback_restores_everything_and_replica_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.canopy");
    let mut s = SqliteStore::open(&path).unwrap();
    s.begin().unwrap();
    s.log_insert(&entry(create(1, 1, 1, 1), vec![])).unwrap();
    s.set_placement(
        node(1),
        Some(&place(NodeId::ROOT, b"a", OpId::new(rep(1), 1))),
    )
    .unwrap();
    s.commit().unwrap();
    s.begin().unwrap();
    // a new replica gets an index inside the batch, then the batch is abandoned
    s.log_insert(&entry(create(8, 1, 2, 2), vec![])).unwrap();
    s.set_placement(
        node(2),
        Some(&place(NodeId::ROOT, b"b", OpId::new(rep(8), 1))),
    )
    .unwrap();
    s.set_placement(node(1), None).unwrap();
    s.rollback().unwrap();
    assert_eq!(s.node_count().unwrap(), 1);
    assert_eq!(s.log_len().unwrap(), 1);
    assert_eq!(s.max_seq(rep(8)).unwrap(), 0);
    // the index the rolled-back replica had is reused by another: keys must not mix up
    s.begin().unwrap();
    s.log_insert(&entry(create(6, 1, 3, 3), vec![])).unwrap();
    s.commit().unwrap();
    assert_eq!(
        s.entry(OpId::new(rep(6), 1))
            .unwrap()
            .unwrap()
            .op
            .id()
            .replica(),
        rep(6)
    );
    assert_eq!(s.entry(OpId::new(rep(8), 1)).unwrap(), None);
    drop(s);
    // reopen: committed state persisted
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.log_len().unwrap(), 2);
    assert_eq!(s.node_count().unwrap(), 1);
    assert!(s.placement(node(1)).unwrap().is_some());
}

#[test]
fn transaction_misuse_is_an_error() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    assert!(matches!(s.commit(), Err(SqliteStoreError::Transaction(_))));
    assert!(matches!(
        s.rollback(),
        Err(SqliteStoreError::Transaction(_))
    ));
    s.begin().unwrap();
    assert!(matches!(s.begin(), Err(SqliteStoreError::Transaction(_))));
    s.commit().unwrap();
}

#[test]
fn foreign_and_newer_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    rusqlite_setup(&foreign, "CREATE TABLE t(x);");
    assert!(matches!(
        SqliteStore::open(&foreign),
        Err(SqliteStoreError::NotCanopy)
    ));
    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer).unwrap());
    rusqlite_setup(&newer, "PRAGMA user_version = 99;");
    assert!(matches!(
        SqliteStore::open(&newer),
        Err(SqliteStoreError::SchemaVersion { found: 99, .. })
    ));
}

#[test]
fn corrupt_rows_give_typed_errors() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let a = create(1, 1, 1, 1);
    s.begin().unwrap();
    s.log_insert(&entry(a.clone(), vec![])).unwrap();
    s.set_placement(node(1), Some(&place(NodeId::ROOT, b"a", a.id())))
        .unwrap();
    s.commit().unwrap();
    let c = s.connection();
    c.execute_batch("UPDATE ops SET undo = x'07'").unwrap();
    assert!(matches!(
        s.entry(a.id()),
        Err(SqliteStoreError::CorruptUndo { .. })
    ));
    c.execute_batch("UPDATE ops SET undo = x'', op = x'0102'")
        .unwrap();
    assert!(matches!(
        s.entry(a.id()),
        Err(SqliteStoreError::CorruptOp { .. })
    ));
    c.execute_batch("UPDATE ops SET op = 'text'").unwrap();
    assert!(matches!(
        s.entry(a.id()),
        Err(SqliteStoreError::ColumnType(_))
    ));
    c.execute_batch("UPDATE nodes SET parent = x'0102'")
        .unwrap();
    assert!(matches!(
        s.placement(node(1)),
        Err(SqliteStoreError::CorruptColumn { .. })
    ));
}

fn rusqlite_setup(path: &std::path::Path, sql: &str) {
    // a second connection through the store's own type would run schema checks: use SQLite directly
    let conn = SqliteStore::open_in_memory().unwrap().into_connection();
    conn.execute("ATTACH DATABASE ?1 AS x", [path.to_str().unwrap()])
        .unwrap();
    let sql = sql
        .replace("CREATE TABLE t", "CREATE TABLE x.t")
        .replace("PRAGMA user_version", "PRAGMA x.user_version");
    conn.execute_batch(&sql).unwrap();
}

#[test]
fn is_within_walks_up_in_one_query_and_ends_on_a_cycle() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    let by = OpId::new(rep(1), 1);
    // ROOT > 1 > 2 > 3, and 4 in TRASH
    s.set_placement(node(1), Some(&place(NodeId::ROOT, b"a", by)))
        .unwrap();
    s.set_placement(node(2), Some(&place(node(1), b"a", by)))
        .unwrap();
    s.set_placement(node(3), Some(&place(node(2), b"a", by)))
        .unwrap();
    s.set_placement(node(4), Some(&place(NodeId::TRASH, b"a", by)))
        .unwrap();
    assert!(s.is_within(node(3), node(1)).unwrap());
    assert!(s.is_within(node(3), NodeId::ROOT).unwrap());
    assert!(s.is_within(node(2), node(2)).unwrap());
    assert!(!s.is_within(node(1), node(3)).unwrap());
    assert!(!s.is_within(node(4), NodeId::ROOT).unwrap());
    assert!(s.is_within(node(4), NodeId::TRASH).unwrap());
    assert!(!s.is_within(node(9), NodeId::ROOT).unwrap());
    // a cycle written behind the store's back: the walk still ends
    s.connection()
        .execute(
            "UPDATE nodes SET parent = ?1 WHERE node = ?2",
            [node(3).as_bytes(), node(1).as_bytes()],
        )
        .unwrap();
    assert!(!s.is_within(node(3), NodeId::ROOT).unwrap());
}
