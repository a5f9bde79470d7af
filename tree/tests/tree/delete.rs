//! The delete scenarios of `spec/delete.md`, one test each.

use canopy_tree::{Effect, NodeId, Outcome, Place, Rejection, Store, Tree, VersionVector};

use crate::common::{dump, effect, log_ops, replica, sync, tree, T};

const ROOT: NodeId = NodeId::ROOT;

/// Alice makes `n` (under ROOT) and `c` (under `n`); Bob receives both.
fn setup() -> (T, T, NodeId, NodeId) {
    let mut a = tree(1);
    let mut b = tree(2);
    let n = a.create(ROOT, Place::Last, None).unwrap().node();
    let c = a.create(n, Place::Last, None).unwrap().node();
    sync(&a, &mut b);
    (a, b, n, c)
}

/// Delivers both ways and checks the replicas agree.
fn merge(a: &mut T, b: &mut T, nodes: &[NodeId]) {
    let (ops_a, ops_b) = (log_ops(a), log_ops(b));
    a.apply(ops_b).unwrap();
    b.apply(ops_a).unwrap();
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
    assert_eq!(dump(a, nodes), dump(b, nodes));
}

/// Bumps a replica's Lamport clock with a harmless op, so its next op sorts later.
fn tick(t: &mut T) {
    let x = t.create(ROOT, Place::Last, None).unwrap().node();
    t.set_payload(x, b"tick".to_vec()).unwrap();
}

#[test]
fn s1_delete_moves_the_subtree_to_trash() {
    let (mut a, _, n, c) = setup();
    let del = a.delete(n).unwrap();
    assert_eq!(del.outcome, Outcome::Applied);
    assert_eq!(a.parent(n).unwrap(), Some(NodeId::TRASH));
    assert_eq!(a.parent(c).unwrap(), Some(n));
    assert!(a.is_deleted(n).unwrap() && a.is_deleted(c).unwrap());
    assert_eq!(a.child_count(ROOT).unwrap(), 0);
    assert_eq!(a.node_count().unwrap(), 2);
    // Honest local APIs refuse to target nodes in TRASH.
    assert!(a.create(c, Place::Last, None).is_err());
    assert!(a.set_payload(c, vec![1]).is_err());
    assert!(a.delete(n).is_err());
}

#[test]
fn s2_restore_brings_the_subtree_back() {
    let (mut a, mut b, n, c) = setup();
    a.delete(n).unwrap();
    assert!(a.restore(ROOT, ROOT, Place::Last).is_err());
    a.restore(n, ROOT, Place::First).unwrap();
    assert_eq!(a.parent(n).unwrap(), Some(ROOT));
    assert!(!a.is_deleted(c).unwrap());
    assert!(
        a.restore(n, ROOT, Place::First).is_err(),
        "not in trash any more"
    );
    sync(&a, &mut b);
    assert_eq!(dump(&a, &[n, c]), dump(&b, &[n, c]));
}

#[test]
fn s3_unseen_insert_before_the_delete_skips_it() {
    let (mut a, mut b, n, c) = setup();
    tick(&mut a);
    let del = a.delete(n).unwrap().op;
    let x = b.create(c, Place::Last, None).unwrap().op;
    assert!(x.key() < del.key());
    merge(&mut a, &mut b, &[n, c, x.node()]);
    for t in [&a, &b] {
        assert_eq!(effect(t, &del), Effect::SkippedUnseen);
        assert!(!t.is_deleted(x.node()).unwrap());
        assert_eq!(t.parent(n).unwrap(), Some(ROOT));
    }
}

#[test]
fn s4_unseen_insert_after_the_delete_revives_it() {
    let (mut a, mut b, n, c) = setup();
    let del = a.delete(n).unwrap().op;
    tick(&mut b);
    let x = b.create(c, Place::Last, None).unwrap().op;
    assert!(x.key() > del.key());
    merge(&mut a, &mut b, &[n, c, x.node()]);
    for t in [&a, &b] {
        assert_eq!(effect(t, &del), Effect::Applied);
        assert_eq!(effect(t, &x), Effect::Applied);
        // The revive put `n` back where the delete took it from, placed by `x`.
        let p = t.placement(n).unwrap().unwrap();
        assert_eq!((p.parent, p.placed_by), (ROOT, x.id()));
        assert!(!t.is_deleted(x.node()).unwrap());
    }
}

#[test]
fn s5_unseen_move_into_the_subtree_is_not_hidden() {
    let (mut a, mut b, n, c) = setup();
    let m = a.create(ROOT, Place::Last, None).unwrap().node();
    sync(&a, &mut b);
    let del = a.delete(n).unwrap().op;
    tick(&mut b);
    let mv = b.move_node(m, c, Place::First).unwrap().op;
    merge(&mut a, &mut b, &[n, c, m]);
    for t in [&a, &b] {
        assert_eq!(effect(t, &del), Effect::Applied);
        assert_eq!(effect(t, &mv), Effect::Applied);
        assert_eq!(t.parent(m).unwrap(), Some(c));
        assert!(!t.is_deleted(m).unwrap() && !t.is_deleted(n).unwrap());
    }
}

#[test]
fn s6_unseen_payload_write_is_not_hidden() {
    // Sorting before the delete: the delete is skipped.
    let (mut a, mut b, n, c) = setup();
    tick(&mut a);
    let del = a.delete(n).unwrap().op;
    b.set_payload(c, b"edit".to_vec()).unwrap();
    merge(&mut a, &mut b, &[n, c]);
    assert_eq!(effect(&a, &del), Effect::SkippedUnseen);
    assert!(!a.is_deleted(c).unwrap());
    // Sorting after the delete: the subtree is revived.
    let (mut a, mut b, n, c) = setup();
    a.delete(n).unwrap();
    tick(&mut b);
    b.set_payload(c, b"edit".to_vec()).unwrap();
    merge(&mut a, &mut b, &[n, c]);
    for t in [&a, &b] {
        assert!(!t.is_deleted(c).unwrap());
        assert_eq!(t.payload(c).unwrap().as_deref(), Some(&b"edit"[..]));
    }
}

#[test]
fn s7_seen_content_is_deleted() {
    // Bob's insert reached Alice before she deleted: the delete covers it.
    let (mut a, mut b, n, c) = setup();
    let x = b.create(c, Place::Last, None).unwrap().op;
    sync(&b, &mut a);
    let del = a.delete(n).unwrap().op;
    merge(&mut a, &mut b, &[n, c, x.node()]);
    for t in [&a, &b] {
        assert_eq!(effect(t, &del), Effect::Applied);
        assert!(t.is_deleted(x.node()).unwrap());
    }
}

#[test]
fn s8_concurrent_move_out_of_the_subtree_survives() {
    for bob_later in [false, true] {
        let (mut a, mut b, n, c) = setup();
        if !bob_later {
            tick(&mut a);
        }
        let del = a.delete(n).unwrap().op;
        if bob_later {
            tick(&mut b);
        }
        let mv = b.move_node(c, ROOT, Place::Last).unwrap().op;
        assert_eq!(mv.key() > del.key(), bob_later);
        merge(&mut a, &mut b, &[n, c]);
        for t in [&a, &b] {
            assert_eq!(effect(t, &del), Effect::Applied);
            assert!(t.is_deleted(n).unwrap());
            assert_eq!(t.parent(c).unwrap(), Some(ROOT));
        }
    }
}

#[test]
fn s9_concurrent_deletes_of_one_node() {
    let (mut a, mut b, n, c) = setup();
    let d1 = a.delete(n).unwrap().op;
    let d2 = b.delete(n).unwrap().op;
    merge(&mut a, &mut b, &[n, c]);
    for t in [&a, &b] {
        assert!(t.is_deleted(n).unwrap());
        // The first delete in the total order trashed it; the second had not seen that.
        assert_eq!(effect(t, &d1), Effect::Applied);
        assert_eq!(effect(t, &d2), Effect::SkippedUnseen);
        assert_eq!(t.placement(n).unwrap().unwrap().placed_by, d1.id());
    }
}

#[test]
fn s10_revive_repeats_upwards() {
    let (mut a, mut b, n, c) = setup();
    a.delete(c).unwrap();
    a.delete(n).unwrap();
    tick(&mut b);
    tick(&mut b);
    let x = b.create(c, Place::Last, None).unwrap().op;
    merge(&mut a, &mut b, &[n, c, x.node()]);
    for t in [&a, &b] {
        assert_eq!(t.parent(c).unwrap(), Some(n));
        assert_eq!(t.parent(n).unwrap(), Some(ROOT));
        assert!(!t.is_deleted(x.node()).unwrap());
    }
}

#[test]
fn s11_restore_does_not_restore_separately_deleted_children() {
    let (mut a, _, n, c) = setup();
    a.delete(c).unwrap();
    a.delete(n).unwrap();
    a.restore(n, ROOT, Place::Last).unwrap();
    assert!(!a.is_deleted(n).unwrap());
    assert_eq!(a.parent(c).unwrap(), Some(NodeId::TRASH));
}

#[test]
fn s12_forged_awareness_is_refused() {
    use canopy_tree::{Lamport, Op, OpId, OpKind};
    let (mut a, _, n, _) = setup();
    let mallory = replica(9);
    let alice = replica(1);
    // Claims to have seen an op of Alice's that does not exist: parked forever.
    let forged = Op::new(
        OpId::new(mallory, 1),
        Lamport::new(100),
        OpKind::Delete {
            node: n,
            seen: [(alice, 50)].into_iter().collect(),
        },
    );
    let r = a.apply([forged]).unwrap();
    assert_eq!(
        r.ops[0].outcome,
        Outcome::Pending {
            awaits: OpId::new(alice, 50)
        }
    );
    assert!(!a.is_deleted(n).unwrap());
    assert_eq!(a.store().pending_len().unwrap(), 1);
    // Lamport not above an op it claims to have seen.
    let low = Op::new(
        OpId::new(replica(8), 1),
        Lamport::new(1),
        OpKind::Delete {
            node: n,
            seen: [(alice, 2)].into_iter().collect(),
        },
    );
    // Claims to have seen its own future.
    let own = Op::new(
        OpId::new(replica(7), 1),
        Lamport::new(10),
        OpKind::Delete {
            node: n,
            seen: [(replica(7), 1)].into_iter().collect(),
        },
    );
    let r = a.apply([low, own]).unwrap();
    assert_eq!(
        r.ops[0].outcome,
        Outcome::Rejected(Rejection::LamportNotAboveSeen {
            seen: OpId::new(alice, 2)
        })
    );
    assert_eq!(
        r.ops[1].outcome,
        Outcome::Rejected(Rejection::SeenOwnFuture { seen: 1 })
    );
    assert!(!a.is_deleted(n).unwrap());
    a.check_invariants().unwrap();
}

#[test]
fn s13_delete_of_an_unknown_node_is_a_noop() {
    let mut a: T = Tree::new(canopy_tree::MemoryStore::new(), replica(1));
    let ghost = NodeId::from_bytes([5; 16]);
    let op = canopy_tree::Op::new(
        canopy_tree::OpId::new(replica(3), 1),
        canopy_tree::Lamport::new(1),
        canopy_tree::OpKind::Delete {
            node: ghost,
            seen: VersionVector::new(),
        },
    );
    let r = a.apply([op]).unwrap();
    assert_eq!(r.ops[0].outcome, Outcome::SkippedUnseen);
    assert!(r.events.is_empty());
    a.check_invariants().unwrap();
}

#[test]
fn s14_revive_walks_back_through_a_repeated_delete() {
    use canopy_tree::{Lamport, Op, OpId, OpKind};
    let (mut a, mut b, n, c) = setup();
    let alice = a.replica();
    a.delete(c).unwrap();
    // A non-conforming replica deletes `c` again while it is already in TRASH, having seen the
    // first delete (honest local APIs refuse this; remote ops are not bound by them).
    let again = Op::new(
        OpId::new(alice, a.store().max_seq(alice).unwrap() + 1),
        Lamport::new(a.store().max_lamport().unwrap().get() + 1),
        OpKind::Delete {
            node: c,
            seen: a.store().frontier().unwrap(),
        },
    );
    assert_eq!(a.apply([again]).unwrap().ops[0].outcome, Outcome::Applied);
    // Bob, who saw neither delete, creates `x` under `c` after both in the order.
    for _ in 0..3 {
        tick(&mut b);
    }
    let x = b.create(c, Place::Last, None).unwrap().op;
    merge(&mut a, &mut b, &[n, c, x.node()]);
    for t in [&a, &b] {
        // Revived through both deletes, back under `n`, placed by Bob's create.
        let p = t.placement(c).unwrap().unwrap();
        assert_eq!((p.parent, p.placed_by), (n, x.id()));
        assert!(!t.is_deleted(x.node()).unwrap());
    }
}
