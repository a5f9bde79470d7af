//! Late ops spliced into the log without undo/redo (`spec/ops.md`, "Late ops that commute with
//! the suffix"): many replicas create nodes and write payloads concurrently, with occasional
//! moves, deletes and restores (which must fall back to undo/redo), and receive each other's ops
//! late, in random subsets, orders and batch splits. Every replica must end with exactly the
//! log (ops, effects, undo records) and the tree of a fresh replica given all ops in key order,
//! and its change events must mirror its tree.

use std::cell::Cell;
use std::collections::HashMap;

use canopy_tree::{
    AllowAll, ChangeEvent, Decision, Effect, Lamport, LogEntry, LogKey, MemoryStore, NodeId, Op,
    OpKind, Place, Policy, Position, ReplayView, ReplicaId, Store, Tree,
};
use proptest::prelude::*;

use crate::common::{dump, replica};

type T<P> = Tree<MemoryStore, P>;

/// Denies creates and moves into the subtree of `fence` and payload writes on nodes below it,
/// judged on the replay-time ancestor paths only; `paths_only` says so to the engine (or not,
/// to check the payload splice under a policy that has not opted in).
#[derive(Clone, Debug)]
struct Fence {
    fence: NodeId,
    paths_only: bool,
}

impl Policy for Fence {
    type Reason = ();
    fn decide<S: Store>(
        &self,
        op: &Op,
        view: &ReplayView<'_, S>,
    ) -> Result<Decision<()>, S::Error> {
        let target = match op.kind() {
            OpKind::Create { parent, .. } | OpKind::Move { parent, .. } => Some(*parent),
            OpKind::SetPayload { node, .. } => view.old_parent().map(|_| *node),
            _ => None,
        };
        match target {
            Some(t) if t != self.fence && view.is_within(t, self.fence)? => {
                Ok(Decision::Deny { reason: () })
            }
            _ => Ok(Decision::Allow),
        }
    }
    fn reads_paths_only(&self) -> bool {
        self.paths_only
    }
}

#[derive(Clone, Debug)]
enum Action {
    Create {
        parent: usize,
        payload: bool,
    },
    /// `count` creates under one parent, each with a payload (long logs: late ops then land
    /// before hundreds of logged ones, and the engine keeps its suffix index between batches).
    Bulk {
        parent: usize,
        count: usize,
    },
    Payload {
        node: usize,
        byte: u8,
    },
    Move {
        node: usize,
        parent: usize,
    },
    Delete {
        node: usize,
    },
    Restore {
        node: usize,
        parent: usize,
    },
    /// Deliver a random part of replica `from`'s log to the acting replica.
    Sync {
        from: usize,
    },
}

fn arb_action() -> impl Strategy<Value = Action> {
    let i = || 0usize..64;
    prop_oneof![
        10 => (i(), any::<bool>()).prop_map(|(parent, payload)| Action::Create { parent, payload }),
        6 => (i(), any::<u8>()).prop_map(|(node, byte)| Action::Payload { node, byte }),
        1 => (i(), i()).prop_map(|(node, parent)| Action::Move { node, parent }),
        1 => i().prop_map(|node| Action::Delete { node }),
        1 => (i(), i()).prop_map(|(node, parent)| Action::Restore { node, parent }),
        3 => (0usize..8).prop_map(|from| Action::Sync { from }),
    ]
}

fn arb_bulk_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0usize..64, 1usize..120).prop_map(|(parent, count)| Action::Bulk { parent, count }),
        2 => arb_action(),
        3 => (0usize..8).prop_map(|from| Action::Sync { from }),
    ]
}

/// splitmix64: a small deterministic generator for delivery choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Replica<P: Policy> {
    tree: T<P>,
    mirror: HashMap<NodeId, (NodeId, Position)>,
    payloads: HashMap<NodeId, Vec<u8>>,
}

impl<P: Policy> Replica<P> {
    fn events(&mut self, events: &[ChangeEvent]) {
        for e in events {
            match e {
                ChangeEvent::Created {
                    node,
                    parent,
                    position,
                }
                | ChangeEvent::Moved {
                    node,
                    parent,
                    position,
                }
                | ChangeEvent::Restored {
                    node,
                    parent,
                    position,
                } => {
                    self.mirror.insert(*node, (*parent, position.clone()));
                }
                ChangeEvent::Deleted { node, position } => {
                    self.mirror.insert(*node, (NodeId::TRASH, position.clone()));
                }
                ChangeEvent::Removed { node } => {
                    self.mirror.remove(node);
                }
                ChangeEvent::PayloadChanged { node, payload } => match payload {
                    Some(p) => {
                        self.payloads.insert(*node, p.clone());
                    }
                    None => {
                        self.payloads.remove(node);
                    }
                },
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    /// Delivers `ops` in random order, with duplicates, in random batch splits.
    fn deliver(&mut self, mut ops: Vec<Op>, rng: &mut Rng) {
        for _ in 0..ops.len() / 8 {
            let dup = ops[rng.below(ops.len())].clone();
            ops.push(dup);
        }
        for i in (1..ops.len()).rev() {
            ops.swap(i, rng.below(i + 1));
        }
        while !ops.is_empty() {
            let take = 1 + rng.below(ops.len().min(16));
            let batch: Vec<Op> = ops.drain(..take).collect();
            let report = self.tree.apply(batch).unwrap();
            self.events(&report.events);
            self.tree.check_invariants().unwrap();
        }
    }

    fn check_mirror(&self, nodes: &[NodeId]) {
        assert_eq!(self.tree.node_count().unwrap(), self.mirror.len() as u64);
        for (n, (parent, position)) in &self.mirror {
            let p = self
                .tree
                .placement(*n)
                .unwrap()
                .expect("mirror node exists");
            assert_eq!((&p.parent, &p.position), (parent, position));
        }
        for n in nodes {
            assert_eq!(
                self.tree.payload(*n).unwrap().as_ref(),
                self.payloads.get(n)
            );
        }
    }
}

fn entries<P: Policy>(t: &T<P>) -> Vec<LogEntry> {
    let min = LogKey::new(Lamport::new(0), ReplicaId::from_bytes([0; 32]));
    t.store().log_after(min).unwrap()
}

fn run<P: Policy + Clone>(policy: P, n: usize, script: Vec<(usize, Action)>, seed: u64) {
    let mut rng = Rng(seed);
    let mut reps: Vec<Replica<P>> = (0..n)
        .map(|i| Replica {
            tree: Tree::with_policy(MemoryStore::new(), replica(i as u8 + 1), policy.clone()),
            mirror: HashMap::new(),
            payloads: HashMap::new(),
        })
        .collect();
    let mut nodes: Vec<NodeId> = Vec::new();
    let pick = |t: &T<P>, nodes: &[NodeId], i: usize| -> NodeId {
        let known: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| t.exists(*n).unwrap())
            .collect();
        if i % 8 == 0 || known.is_empty() {
            NodeId::ROOT
        } else {
            known[i % known.len()]
        }
    };
    for (who, action) in script {
        let who = who % n;
        let result = {
            let t = &mut reps[who].tree;
            match action {
                Action::Create { parent, payload } => {
                    let parent = pick(t, &nodes, parent);
                    t.create(parent, Place::Last, payload.then(|| vec![who as u8]))
                }
                Action::Payload { node, byte } => t.set_payload(pick(t, &nodes, node), vec![byte]),
                Action::Move { node, parent } => {
                    let (node, parent) = (pick(t, &nodes, node), pick(t, &nodes, parent));
                    t.move_node(node, parent, Place::First)
                }
                Action::Delete { node } => t.delete(pick(t, &nodes, node)),
                Action::Restore { node, parent } => {
                    let (node, parent) = (pick(t, &nodes, node), pick(t, &nodes, parent));
                    t.restore(node, parent, Place::Last)
                }
                Action::Bulk { parent, count } => {
                    let parent = pick(t, &nodes, parent);
                    let r = &mut reps[who];
                    for i in 0..count {
                        let made = r.tree.create(parent, Place::Last, Some(vec![i as u8]));
                        if let Ok(local) = made {
                            nodes.push(local.node());
                            r.events(&local.events);
                        }
                    }
                    continue;
                }
                Action::Sync { from } => {
                    let from = from % n;
                    let ops: Vec<Op> = entries(&reps[from].tree)
                        .into_iter()
                        .map(|e| e.op)
                        .filter(|_| rng.below(3) != 0)
                        .collect();
                    reps[who].deliver(ops, &mut rng);
                    continue;
                }
            }
        };
        if let Ok(local) = result {
            if let OpKind::Create { node, .. } = local.op.kind() {
                nodes.push(*node);
            }
            reps[who].events(&local.events);
        }
    }

    let mut all: Vec<Op> = reps
        .iter()
        .flat_map(|r| entries(&r.tree).into_iter().map(|e| e.op))
        .collect();
    all.sort_by_key(|op| op.key());
    all.dedup_by_key(|op| op.id());
    let mut fresh = Tree::with_policy(MemoryStore::new(), replica(200), policy);
    fresh.apply(all.clone()).unwrap();
    fresh.check_invariants().unwrap();
    let expected_log = entries(&fresh);
    let expected_tree = dump(&fresh, &nodes);
    for r in reps.iter_mut() {
        r.deliver(all.clone(), &mut rng);
        assert_eq!(r.tree.store().pending_len().unwrap(), 0);
        assert_eq!(entries(&r.tree), expected_log);
        assert_eq!(dump(&r.tree, &nodes), expected_tree);
        r.check_mirror(&nodes);
    }
}

fn fence() -> NodeId {
    // Replica 1's third created node (local node ids are the replica's key prefix + seq).
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&replica(1).as_bytes()[..8]);
    id[8..].copy_from_slice(&3u64.to_be_bytes());
    NodeId::from_bytes(id)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(200)
    ))]

    #[test]
    fn late_creates_and_payloads_equal_a_fresh_replay(
        n in 3usize..=8,
        script in proptest::collection::vec((0usize..8, arb_action()), 1..160),
        seed in any::<u64>(),
    ) {
        run(AllowAll, n, script, seed);
    }

    #[test]
    fn late_ops_under_a_path_policy_equal_a_fresh_replay(
        n in 3usize..=8,
        script in proptest::collection::vec((0usize..8, arb_action()), 1..160),
        seed in any::<u64>(),
        paths_only in any::<bool>(),
    ) {
        run(Fence { fence: fence(), paths_only }, n, script, seed);
    }
}

proptest! {
    // Long logs are slow to replay on every replica: a tenth of the cases.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse::<u32>().ok()).map_or(16, |c| (c / 10).max(1))
    ))]

    #[test]
    fn long_logs_of_late_creates_equal_a_fresh_replay(
        n in 3usize..=6,
        script in proptest::collection::vec((0usize..8, arb_bulk_action()), 1..40),
        seed in any::<u64>(),
        paths_only in any::<bool>(),
    ) {
        run(Fence { fence: fence(), paths_only }, n, script, seed);
    }
}

/// Counts decisions: a late op that is spliced is decided once, not the whole suffix again.
#[derive(Debug, Default)]
struct Counting {
    decided: Cell<usize>,
    paths_only: bool,
}

impl Policy for Counting {
    type Reason = ();
    fn decide<S: Store>(
        &self,
        _op: &Op,
        _view: &ReplayView<'_, S>,
    ) -> Result<Decision<()>, S::Error> {
        self.decided.set(self.decided.get() + 1);
        Ok(Decision::Allow)
    }
    fn reads_paths_only(&self) -> bool {
        self.paths_only
    }
}

fn op(rep: u8, seq: u64, lamport: u64, kind: OpKind) -> Op {
    Op::new(
        canopy_tree::OpId::new(replica(rep), seq),
        Lamport::new(lamport),
        kind,
    )
}

fn node(b: u8) -> NodeId {
    NodeId::from_bytes([b; 16])
}

fn create(rep: u8, seq: u64, lamport: u64, n: NodeId, parent: NodeId) -> Op {
    op(
        rep,
        seq,
        lamport,
        OpKind::Create {
            node: n,
            parent,
            position: Position::from_bytes(&[0x80, rep | 1]),
            payload: Some(vec![rep]),
        },
    )
}

/// Replica 1's 20 creates (10 under ROOT, 10 under its first node) and a payload write on
/// node 1 at lamport 19, all logged; then `late` arrives.
fn suffix_then(paths_only: bool, late: Vec<Op>) -> (T<Counting>, usize) {
    let policy = Counting {
        decided: Cell::new(0),
        paths_only,
    };
    let mut t = Tree::with_policy(MemoryStore::new(), replica(9), policy);
    let mut ops: Vec<Op> = (1..=20u8)
        .map(|i| {
            let parent = if i <= 10 { NodeId::ROOT } else { node(1) };
            create(1, u64::from(i), u64::from(i) * 2, node(i), parent)
        })
        .collect();
    ops.push(op(
        1,
        21,
        41,
        OpKind::SetPayload {
            node: node(1),
            payload: vec![41],
        },
    ));
    t.apply(ops).unwrap();
    let before = t.policy().decided.get();
    t.apply(late).unwrap();
    let decided = t.policy().decided.get() - before;
    t.check_invariants().unwrap();
    (t, decided)
}

#[test]
fn a_late_create_and_payload_write_are_decided_once() {
    // Replica 2's create under node 1 at lamport 3 and payload write on node 1 at lamport 4:
    // 18 logged ops come after them.
    let late = vec![
        create(2, 1, 3, node(100), node(1)),
        op(
            2,
            2,
            4,
            OpKind::SetPayload {
                node: node(1),
                payload: vec![4],
            },
        ),
    ];
    let (t, decided) = suffix_then(true, late.clone());
    assert_eq!(decided, 2, "spliced: only the late ops are decided");
    assert_eq!(t.parent(node(100)).unwrap(), Some(node(1)));
    // The later write (lamport 41) still wins; its undo record now holds the late write.
    assert_eq!(t.payload(node(1)).unwrap(), Some(vec![41]));
    let w = t
        .store()
        .entry(canopy_tree::OpId::new(replica(1), 21))
        .unwrap()
        .unwrap();
    assert!(matches!(
        &w.undo[..],
        [canopy_tree::Undo::Payload { prior: Some(p), .. }] if p.bytes == vec![4]
    ));
    // The same under a policy that has not opted in: the create undoes and redoes the suffix.
    let (_, decided) = suffix_then(false, late);
    assert!(decided > 2, "not spliced: {decided} decisions");
}

#[test]
fn a_delete_after_a_late_create_forces_undo_redo() {
    // A delete of node 1 at lamport 50 that had not seen the late create under node 1: undo/redo
    // makes it a no-op (the late node stays visible), so the create must not be spliced.
    let policy = Counting {
        decided: Cell::new(0),
        paths_only: true,
    };
    let mut t = Tree::with_policy(MemoryStore::new(), replica(9), policy);
    t.apply([
        create(1, 1, 1, node(1), NodeId::ROOT),
        create(1, 2, 2, node(2), node(1)),
        op(
            1,
            3,
            50,
            OpKind::Delete {
                node: node(1),
                seen: [(replica(1), 2)].into_iter().collect(),
            },
        ),
    ])
    .unwrap();
    assert!(t.is_deleted(node(1)).unwrap());
    let before = t.policy().decided.get();
    let report = t.apply([create(2, 1, 3, node(3), node(2))]).unwrap();
    assert!(t.policy().decided.get() - before > 1);
    assert!(!t.is_deleted(node(1)).unwrap());
    assert_eq!(
        t.store()
            .entry(canopy_tree::OpId::new(replica(1), 3))
            .unwrap()
            .unwrap()
            .effect,
        Effect::SkippedUnseen
    );
    assert!(report
        .events
        .iter()
        .any(|e| matches!(e, ChangeEvent::Restored { node: n, .. } if *n == node(1))));
    t.check_invariants().unwrap();
}

fn mv(rep: u8, seq: u64, lamport: u64, n: NodeId, parent: NodeId) -> Op {
    op(
        rep,
        seq,
        lamport,
        OpKind::Move {
            node: n,
            parent,
            position: Position::from_bytes(&[0x80, 3]),
        },
    )
}

#[test]
fn a_spliced_op_is_decided_on_the_ancestors_at_its_time() {
    let f = node(1);
    let policy = Fence {
        fence: f,
        paths_only: true,
    };
    let mut t = Tree::with_policy(MemoryStore::new(), replica(9), policy);
    // a starts outside the fence and moves in at lamport 10; b starts inside and moves out.
    t.apply([
        create(1, 1, 1, f, NodeId::ROOT),
        create(1, 2, 2, node(2), NodeId::ROOT),
        create(1, 3, 3, node(3), f),
        mv(1, 4, 10, node(2), f),
        mv(1, 5, 11, node(3), NodeId::ROOT),
    ])
    .unwrap();
    let payload = |rep, seq, lamport, n| {
        op(
            rep,
            seq,
            lamport,
            OpKind::SetPayload {
                node: n,
                payload: vec![7],
            },
        )
    };
    let report = t
        .apply([
            create(2, 1, 5, node(20), node(2)),
            create(2, 2, 6, node(30), node(3)),
            payload(2, 3, 7, node(2)),
            payload(2, 4, 8, node(3)),
        ])
        .unwrap();
    let outcomes: Vec<_> = report.ops.iter().map(|o| o.outcome.clone()).collect();
    use canopy_tree::Outcome;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Applied,
            Outcome::Denied { reason: () },
            Outcome::Applied,
            Outcome::Denied { reason: () },
        ]
    );
    assert_eq!(t.parent(node(20)).unwrap(), Some(node(2)));
    assert!(!t.exists(node(30)).unwrap());
    assert_eq!(t.payload(node(2)).unwrap(), Some(vec![7]));
    assert_eq!(
        t.payload(node(3)).unwrap(),
        Some(vec![1]),
        "the denied write left the payload"
    );
    t.check_invariants().unwrap();
}

#[test]
fn a_late_create_of_a_node_with_children_is_not_spliced() {
    // c is created (lamport 1) under n, which does not exist yet; p under c (lamport 2). The late
    // create of n under p (lamport 5) would make a cycle: it is skipped.
    let (n, c, p) = (node(1), node(2), node(3));
    let mut t = Tree::new(MemoryStore::new(), replica(9));
    t.apply([
        create(1, 1, 1, c, n),
        create(1, 2, 2, p, c),
        create(1, 3, 10, node(4), NodeId::ROOT),
    ])
    .unwrap();
    let report = t.apply([create(2, 1, 5, n, p)]).unwrap();
    assert_eq!(report.ops[0].outcome, canopy_tree::Outcome::SkippedCycle);
    assert!(!t.exists(n).unwrap());
    t.check_invariants().unwrap();
}
