//! The SQLite store's read cache stays exact: against `MemoryStore` call by call (random writes,
//! reads, commits, rollbacks, and writes by another connection between batches), and in the
//! cases where it must be dropped (another connection or the store's own connection wrote
//! between batches, a rollback, an outer transaction rolled back after a batch committed).

use canopy_tree::{
    Effect, Lamport, LogEntry, MemoryStore, NodeId, Op, OpId, OpKind, PayloadRecord, Placement,
    Position, ReplicaId, SqliteStore, Store,
};
use proptest::prelude::*;
use rusqlite::{params, Connection};

fn node(i: u8) -> NodeId {
    let mut b = [0u8; 16];
    b[0] = 2;
    b[15] = i;
    NodeId::from_bytes(b)
}

fn rep(i: u8) -> ReplicaId {
    ReplicaId::from_bytes([i; 32])
}

fn place(parent: NodeId, p: u8, by: OpId) -> Placement {
    Placement {
        parent,
        position: Position::from_bytes(&[1, p]),
        placed_by: by,
    }
}

fn op(r: u8, seq: u64, n: u8) -> Op {
    Op::new(
        OpId::new(rep(r), seq),
        Lamport::new(seq * 4 + r as u64),
        OpKind::SetPayload {
            node: node(n),
            payload: vec![n],
        },
    )
}

fn logged(op: Op) -> LogEntry {
    LogEntry {
        op,
        effect: Effect::Applied,
        undo: Vec::new(),
    }
}

/// A batch that places `n` under ROOT (and reads it back, so that the read is cached).
fn place_and_read(s: &mut SqliteStore, n: u8) {
    s.begin().unwrap();
    let by = OpId::new(rep(1), 1);
    s.set_placement(node(n), Some(&place(NodeId::ROOT, n, by)))
        .unwrap();
    assert_eq!(s.placement(node(n)).unwrap().unwrap().parent, NodeId::ROOT);
    assert_eq!(s.child_count(NodeId::ROOT).unwrap(), 1);
    s.commit().unwrap();
}

/// Moves node `n` under node `under` with plain SQL on `conn` (not through the store).
fn move_by_sql(conn: &Connection, n: u8, under: u8) {
    let changed = conn
        .execute(
            "UPDATE nodes SET parent = ?2 WHERE node = ?1",
            params![node(n).as_bytes(), node(under).as_bytes()],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// Reads of `n` in a new batch: (parent, children of ROOT, children of `under`).
fn read_in_batch(s: &mut SqliteStore, n: u8, under: u8) -> (NodeId, u64, u64) {
    s.begin().unwrap();
    let got = (
        s.parent(node(n)).unwrap().unwrap(),
        s.child_count(NodeId::ROOT).unwrap(),
        s.child_count(node(under)).unwrap(),
    );
    s.commit().unwrap();
    got
}

#[test]
fn a_write_by_another_connection_between_batches_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.canopy");
    let mut s = SqliteStore::open(&path).unwrap();
    place_and_read(&mut s, 1);
    let other = Connection::open(&path).unwrap();
    move_by_sql(&other, 1, 9);
    assert_eq!(read_in_batch(&mut s, 1, 9), (node(9), 0, 1));
}

#[test]
fn a_write_through_the_store_connection_between_batches_is_seen() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    place_and_read(&mut s, 1);
    move_by_sql(s.connection(), 1, 9);
    assert_eq!(read_in_batch(&mut s, 1, 9), (node(9), 0, 1));
}

#[test]
fn a_rollback_forgets_what_the_batch_wrote_and_read() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    place_and_read(&mut s, 1);
    s.begin().unwrap();
    let by = OpId::new(rep(2), 1);
    s.set_placement(node(1), Some(&place(node(9), 1, by)))
        .unwrap();
    s.set_placement(node(2), Some(&place(NodeId::ROOT, 2, by)))
        .unwrap();
    s.set_payload(
        node(1),
        Some(&PayloadRecord {
            bytes: vec![7],
            set_by: by,
        }),
    )
    .unwrap();
    s.log_insert(&logged(op(2, 1, 1))).unwrap();
    s.pending_insert(OpId::new(rep(3), 1), &op(3, 2, 1))
        .unwrap();
    assert_eq!(s.child_count(node(9)).unwrap(), 1);
    assert_eq!(s.max_seq(rep(2)).unwrap(), 1);
    assert_eq!(s.pending_len().unwrap(), 1);
    s.rollback().unwrap();
    s.begin().unwrap();
    assert_eq!(s.parent(node(1)).unwrap(), Some(NodeId::ROOT));
    assert_eq!(s.placement(node(2)).unwrap(), None);
    assert_eq!(s.child_count(node(9)).unwrap(), 0);
    assert_eq!(s.child_count(NodeId::ROOT).unwrap(), 1);
    assert_eq!(s.payload(node(1)).unwrap(), None);
    assert_eq!(s.entry_lamport(OpId::new(rep(2), 1)).unwrap(), None);
    assert_eq!(s.max_seq(rep(2)).unwrap(), 0);
    assert_eq!(s.pending_len().unwrap(), 0);
    assert_eq!(s.pending_get(OpId::new(rep(3), 2)).unwrap(), None);
    s.commit().unwrap();
}

#[test]
fn a_batch_inside_an_outer_transaction_rolled_back_later_leaves_nothing_cached() {
    let mut s = SqliteStore::open_in_memory().unwrap();
    place_and_read(&mut s, 1);
    s.connection().execute_batch("BEGIN").unwrap();
    s.begin().unwrap(); // a savepoint inside the caller's transaction
    let by = OpId::new(rep(2), 1);
    s.set_placement(node(1), Some(&place(node(9), 1, by)))
        .unwrap();
    s.log_insert(&logged(op(2, 1, 1))).unwrap();
    s.commit().unwrap(); // released into the outer transaction
    s.connection().execute_batch("ROLLBACK").unwrap();
    s.begin().unwrap();
    assert_eq!(s.parent(node(1)).unwrap(), Some(NodeId::ROOT));
    assert_eq!(s.child_count(node(9)).unwrap(), 0);
    assert_eq!(s.entry_lamport(OpId::new(rep(2), 1)).unwrap(), None);
    s.commit().unwrap();
}

#[test]
fn cached_reads_outlive_a_batch_only_while_nothing_else_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.canopy");
    let mut s = SqliteStore::open(&path).unwrap();
    place_and_read(&mut s, 1);
    // Nothing else wrote: the next batch may answer from the cache, and it is still right.
    assert_eq!(read_in_batch(&mut s, 1, 9), (NodeId::ROOT, 1, 0));
    // A reader elsewhere changes nothing.
    let other = Connection::open(&path).unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(read_in_batch(&mut s, 1, 9), (NodeId::ROOT, 1, 0));
    // A writer elsewhere does.
    move_by_sql(&other, 1, 9);
    assert_eq!(read_in_batch(&mut s, 1, 9), (node(9), 0, 1));
}

/// One step of the call-by-call comparison.
#[derive(Clone, Debug)]
enum Step {
    /// Place node `n` under `parent` (an index below `n`, so no cycles; 0 = ROOT, 1 = TRASH),
    /// or remove it.
    Place {
        n: u8,
        parent: Option<u8>,
        p: u8,
    },
    Payload {
        n: u8,
        bytes: Option<Vec<u8>>,
    },
    /// Log the next op of replica `r`.
    Log {
        r: u8,
        n: u8,
    },
    /// Park the next op of replica `r` on op `awaits` of replica 9.
    Park {
        r: u8,
        awaits: u8,
    },
    Take {
        awaits: u8,
    },
    Read {
        n: u8,
        root: u8,
    },
    Commit,
    Rollback,
    /// Outside a batch, another connection moves node `n` (if it exists) under `parent`
    /// (SQLite only; the memory store is given the same write).
    External {
        n: u8,
        parent: u8,
        p: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let n = 2u8..12;
    prop_oneof![
        6 => (n.clone(), proptest::option::weighted(0.9, 0u8..12), any::<u8>())
            .prop_map(|(n, parent, p)| Step::Place { n, parent: parent.map(|x| x % n), p }),
        2 => (n.clone(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)))
            .prop_map(|(n, bytes)| Step::Payload { n, bytes }),
        2 => (0u8..3, n.clone()).prop_map(|(r, n)| Step::Log { r, n }),
        1 => (0u8..3, 1u8..4).prop_map(|(r, awaits)| Step::Park { r, awaits }),
        1 => (1u8..4).prop_map(|awaits| Step::Take { awaits }),
        6 => (n.clone(), 0u8..12).prop_map(|(n, root)| Step::Read { n, root }),
        2 => Just(Step::Commit),
        1 => Just(Step::Rollback),
        1 => (n, 0u8..12, any::<u8>())
            .prop_map(|(n, parent, p)| Step::External { n, parent: parent % n, p }),
    ]
}

fn id_node(i: u8) -> NodeId {
    match i {
        0 => NodeId::ROOT,
        1 => NodeId::TRASH,
        i => node(i),
    }
}

fn seed() -> Placement {
    place(NodeId::ROOT, 0, OpId::new(rep(5), 1))
}

/// Runs `steps` on both stores and compares every read.
fn compare(steps: &[Step], path: &std::path::Path) -> Result<(), TestCaseError> {
    let mut s = SqliteStore::open(path).unwrap();
    let other = Connection::open(path).unwrap();
    let mut m = MemoryStore::new();
    // the row the caller seeded, in both
    m.begin().unwrap();
    m.set_placement(node(200), Some(&seed())).unwrap();
    m.commit().unwrap();
    // Next seq per replica, and what the memory store's batch would undo on rollback.
    let mut seqs = [0u64; 3];
    let mut batch_seqs = seqs;
    let mut parked = 0u64;
    s.begin().unwrap();
    m.begin().unwrap();
    for st in steps {
        match st {
            Step::Place { n, parent, p } => {
                let by = OpId::new(rep(5), 1 + *p as u64);
                let pl = parent.map(|x| place(id_node(x), *p, by));
                s.set_placement(node(*n), pl.as_ref()).unwrap();
                m.set_placement(node(*n), pl.as_ref()).unwrap();
            }
            Step::Payload { n, bytes } => {
                let rec = bytes.clone().map(|bytes| PayloadRecord {
                    bytes,
                    set_by: OpId::new(rep(6), 1),
                });
                s.set_payload(node(*n), rec.as_ref()).unwrap();
                m.set_payload(node(*n), rec.as_ref()).unwrap();
            }
            Step::Log { r, n } => {
                seqs[*r as usize] += 1;
                let e = logged(op(*r, seqs[*r as usize], *n));
                s.log_insert(&e).unwrap();
                m.log_insert(&e).unwrap();
            }
            Step::Park { r, awaits } => {
                parked += 1;
                let o = op(*r, 1000 + parked, 1);
                let a = OpId::new(rep(9), *awaits as u64);
                s.pending_insert(a, &o).unwrap();
                m.pending_insert(a, &o).unwrap();
            }
            Step::Take { awaits } => {
                let a = OpId::new(rep(9), *awaits as u64);
                prop_assert_eq!(s.pending_take(a).unwrap(), m.pending_take(a).unwrap());
            }
            Step::Read { n, root } => {
                let (n, root) = (node(*n), id_node(*root));
                prop_assert_eq!(s.placement(n).unwrap(), m.placement(n).unwrap());
                prop_assert_eq!(s.parent(n).unwrap(), m.parent(n).unwrap());
                prop_assert_eq!(s.child_count(n).unwrap(), m.child_count(n).unwrap());
                prop_assert_eq!(s.child_count(root).unwrap(), m.child_count(root).unwrap());
                prop_assert_eq!(s.is_within(n, root).unwrap(), m.is_within(n, root).unwrap());
                prop_assert_eq!(s.payload(n).unwrap(), m.payload(n).unwrap());
                prop_assert_eq!(s.payload_set_by(n).unwrap(), m.payload_set_by(n).unwrap());
                prop_assert_eq!(s.node_count().unwrap(), m.node_count().unwrap());
                prop_assert_eq!(s.pending_len().unwrap(), m.pending_len().unwrap());
                for r in 0..3u8 {
                    let (a, b) = (s.max_seq(rep(r)).unwrap(), m.max_seq(rep(r)).unwrap());
                    prop_assert_eq!(a, b);
                    for seq in a.saturating_sub(1)..=a + 1 {
                        let id = OpId::new(rep(r), seq.max(1));
                        prop_assert_eq!(s.entry_lamport(id).unwrap(), m.entry_lamport(id).unwrap());
                        prop_assert_eq!(s.entry(id).unwrap(), m.entry(id).unwrap());
                    }
                }
            }
            Step::Commit => {
                s.commit().unwrap();
                m.commit().unwrap();
                batch_seqs = seqs;
                s.begin().unwrap();
                m.begin().unwrap();
            }
            Step::Rollback => {
                s.rollback().unwrap();
                m.rollback().unwrap();
                seqs = batch_seqs;
                s.begin().unwrap();
                m.begin().unwrap();
            }
            Step::External { n, parent, p } => {
                s.commit().unwrap();
                m.commit().unwrap();
                batch_seqs = seqs;
                // another connection moves an existing node (the store keeps its own row
                // counts, so the other writer only moves)
                let Some(old) = m.placement(node(*n)).unwrap() else {
                    s.begin().unwrap();
                    m.begin().unwrap();
                    continue;
                };
                let pl = place(id_node(*parent), *p, old.placed_by);
                let changed = other
                    .execute(
                        "UPDATE nodes SET parent = ?2, position = ?3 WHERE node = ?1",
                        params![
                            node(*n).as_bytes(),
                            pl.parent.as_bytes(),
                            pl.position.as_bytes()
                        ],
                    )
                    .unwrap();
                prop_assert_eq!(changed, 1);
                m.begin().unwrap();
                m.set_placement(node(*n), Some(&pl)).unwrap();
                m.commit().unwrap();
                s.begin().unwrap();
                m.begin().unwrap();
            }
        }
    }
    s.commit().unwrap();
    m.commit().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)))]
    #[test]
    fn sqlite_with_its_cache_answers_like_memory(
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.canopy");
        // a first committed batch, as on any document in use
        {
            let mut s = SqliteStore::open(&path).unwrap();
            s.begin().unwrap();
            s.set_placement(node(200), Some(&seed())).unwrap();
            s.commit().unwrap();
        }
        compare(&steps, &path)?;
    }
}
