//! Late ops on SqliteStore: a rewind touches only the suffix of the log after the late op (never
//! the whole log), passes skipped moves, terminates, and equals a fresh replay. Also the log reads
//! sync uses: ops of a subtree, ops since a frontier in pages.

use canopy_tree::{
    Effect, Lamport, LogKey, NodeId, Op, Place, ReplicaId, SqliteStore, Store, Tree,
};

fn replica(b: u8) -> ReplicaId {
    ReplicaId::from_bytes([b; 32])
}

fn sqlite_tree(b: u8) -> Tree<SqliteStore> {
    Tree::new(SqliteStore::open_in_memory().unwrap(), replica(b))
}

fn all_ops(t: &Tree<SqliteStore>) -> Vec<Op> {
    t.store()
        .log_after(LogKey::new(Lamport::new(0), replica(0)))
        .unwrap()
        .into_iter()
        .map(|e| e.op)
        .collect()
}

/// Everything visible, in a canonical order.
fn visible(t: &Tree<SqliteStore>) -> Vec<(NodeId, usize, Option<Vec<u8>>)> {
    t.subtree(NodeId::ROOT)
        .map(|r| {
            let (n, d) = r.unwrap();
            (n, d, t.payload(n).unwrap())
        })
        .collect()
}

#[test]
fn rewind_past_a_skipped_move_equals_a_fresh_replay() {
    let mut a = sqlite_tree(1);
    let mut b = sqlite_tree(2);
    let mut c = sqlite_tree(0);
    let x = a.create(NodeId::ROOT, Place::Last, None).unwrap().op;
    let y = a.create(NodeId::ROOT, Place::Last, None).unwrap().op;
    b.apply(all_ops(&a)).unwrap();
    c.apply(all_ops(&a)).unwrap();
    let m1 = a.move_node(x.node(), y.node(), Place::Last).unwrap().op;
    let m2 = b.move_node(y.node(), x.node(), Place::Last).unwrap().op;
    let early = c.set_payload(x.node(), vec![1]).unwrap().op;
    assert!(early.key() < m1.key() && m1.key() < m2.key());
    a.apply([m2.clone()]).unwrap();
    assert_eq!(
        a.store().entry(m2.id()).unwrap().unwrap().effect,
        Effect::SkippedCycle
    );
    let r = a.apply([early.clone()]).unwrap();
    assert_eq!(
        r.events.len(),
        1,
        "only the payload changed: {:?}",
        r.events
    );
    a.check_invariants().unwrap();
    let mut fresh = sqlite_tree(9);
    let mut all = vec![x.clone(), y.clone(), m1, m2, early];
    all.sort_by_key(|o| o.key());
    fresh.apply(all).unwrap();
    assert_eq!(visible(&a), visible(&fresh));
    assert_eq!(a.parent(x.node()).unwrap(), Some(y.node()));
}

#[test]
fn a_late_op_rewrites_only_the_suffix() {
    // a long log on A; B's op is concurrent with A's last few ops and sorts before them
    let mut a = sqlite_tree(2);
    let mut b = sqlite_tree(1);
    let root_kid = a.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    b.apply(all_ops(&a)).unwrap();
    let mut parent = root_kid;
    for _ in 0..1500 {
        parent = a.create(parent, Place::Last, None).unwrap().node();
    }
    let late = b.set_payload(root_kid, b"late".to_vec()).unwrap().op;
    let suffix = a.store().log_after(late.key()).unwrap().len();
    assert!(
        suffix >= 1400,
        "B's op must sort early in A's log ({suffix} after it)"
    );

    // now make the suffix short: A's log continues, and B's next op lands 3 ops from the end
    let mut a2 = sqlite_tree(2);
    a2.apply(all_ops(&a)).unwrap();
    let mut b2 = sqlite_tree(1);
    b2.apply(all_ops(&a)).unwrap();
    for _ in 0..3 {
        a2.create(root_kid, Place::First, None).unwrap();
    }
    let late2 = b2.set_payload(root_kid, b"late2".to_vec()).unwrap().op;
    let after = a2.store().log_after(late2.key()).unwrap().len();
    assert_eq!(after, 3);
    let log_len = a2.store().log_len().unwrap();
    assert!(log_len > 1500);
    let before = a2.store().connection().total_changes();
    a2.apply([late2.clone()]).unwrap();
    let changed = a2.store().connection().total_changes() - before;
    // the late op and the 3 ops after it: a few rows each, independent of the 1500+ before
    assert!(
        changed < 40,
        "{changed} row changes for a rewind of 3 ops in a log of {log_len}"
    );
    a2.check_invariants().unwrap();

    // and the result equals a fresh in-order replay
    let mut fresh = sqlite_tree(9);
    let mut ops = all_ops(&a2);
    ops.sort_by_key(|o| o.key());
    fresh.apply(ops).unwrap();
    assert_eq!(visible(&a2), visible(&fresh));
    assert_eq!(a2.payload(root_kid).unwrap(), Some(b"late2".to_vec()));
}

#[test]
fn ops_of_a_subtree_and_since_a_frontier() {
    let mut a = sqlite_tree(3);
    let list = a.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    let other = a.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    let item = a.create(list, Place::Last, None).unwrap().node();
    let sub = a.create(item, Place::First, None).unwrap().node();
    a.set_payload(sub, b"x".to_vec()).unwrap();
    a.create(other, Place::Last, None).unwrap();
    // moved in from elsewhere: its ops belong to the subtree now
    let moved = a.create(other, Place::Last, None).unwrap().node();
    a.move_node(moved, item, Place::Last).unwrap();
    let in_subtree = [list, item, sub, moved];
    let expected: Vec<Op> = all_ops(&a)
        .into_iter()
        .filter(|o| in_subtree.contains(&o.node()))
        .collect();
    let got = a.store().ops_of_subtree(list).unwrap();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 6);
    // from ROOT: every op
    assert_eq!(a.store().ops_of_subtree(NodeId::ROOT).unwrap(), all_ops(&a));
    // ops since a frontier, paged, reach everything exactly once
    let mut seen = canopy_tree::VersionVector::new();
    let mut got = Vec::new();
    loop {
        let page = a.store().ops_since(&seen, 3).unwrap();
        if page.is_empty() {
            break;
        }
        for op in &page {
            seen.set(op.id().replica(), op.id().seq());
        }
        got.extend(page);
    }
    assert_eq!(got, all_ops(&a));
    assert_eq!(seen, a.store().frontier().unwrap());
}
