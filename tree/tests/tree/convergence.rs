//! Convergence: replicas make random concurrent ops, then receive everything in random orders,
//! random batch splits and with duplicates; all must show the same tree, the same per-op
//! effects, a change-event mirror equal to the tree, and equal a fresh replay in key order.

use std::collections::HashMap;

use canopy_tree::{
    AllowAll, ChangeEvent, Decision, Effect, MemoryStore, NodeId, Op, OpId, OpKind, Place, Policy,
    Position, ReplayView, Store, Tree,
};

type T<P> = Tree<MemoryStore, P>;

/// A policy that depends on replay-time state: nothing may be created or moved into the subtree
/// of one fixed node (replica 1's second created node).
#[derive(Clone, Debug)]
struct Fence(NodeId);

impl Fence {
    fn new() -> Self {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&replica(1).as_bytes()[..8]);
        id[8..].copy_from_slice(&2u64.to_be_bytes());
        Fence(NodeId::from_bytes(id))
    }
}

impl Policy for Fence {
    type Reason = ();
    fn decide<S: Store>(
        &self,
        op: &Op,
        view: &ReplayView<'_, S>,
    ) -> Result<Decision<()>, S::Error> {
        match (op.kind(), view.new_parent()) {
            (OpKind::Create { .. } | OpKind::Move { .. }, Some(p))
                if view.is_within(p, self.0)? =>
            {
                Ok(Decision::Deny { reason: () })
            }
            _ => Ok(Decision::Allow),
        }
    }
}
use proptest::prelude::*;

use crate::common::{dump, log_ops, replica};

#[derive(Clone, Debug)]
enum Action {
    Create {
        parent: usize,
        place: u8,
        payload: bool,
    },
    Move {
        node: usize,
        parent: usize,
        place: u8,
    },
    Delete {
        node: usize,
    },
    Restore {
        node: usize,
        parent: usize,
    },
    Payload {
        node: usize,
        byte: u8,
    },
    /// The acting replica moves `a` under `b` while replica `other` moves `b` under `a`.
    CrossMove {
        a: usize,
        b: usize,
        other: usize,
    },
    /// Deliver what replica `from` has to the acting replica (in one batch).
    Sync {
        from: usize,
    },
}

fn arb_action() -> impl Strategy<Value = Action> {
    let i = || 0usize..64;
    prop_oneof![
        4 => (i(), any::<u8>(), any::<bool>())
            .prop_map(|(parent, place, payload)| Action::Create { parent, place, payload }),
        4 => (i(), i(), any::<u8>()).prop_map(|(node, parent, place)| Action::Move { node, parent, place }),
        2 => i().prop_map(|node| Action::Delete { node }),
        1 => (i(), i()).prop_map(|(node, parent)| Action::Restore { node, parent }),
        2 => (i(), any::<u8>()).prop_map(|(node, byte)| Action::Payload { node, byte }),
        2 => (0usize..5).prop_map(|from| Action::Sync { from }),
        2 => (i(), i(), 0usize..5).prop_map(|(a, b, other)| Action::CrossMove { a, b, other }),
    ]
}

/// A replica and a mirror of its tree rebuilt only from change events.
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

    fn apply(&mut self, ops: Vec<Op>) {
        let report = self.tree.apply(ops).unwrap();
        self.events(&report.events);
        self.tree.check_invariants().unwrap();
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

fn place_of<P: Policy>(t: &T<P>, parent: NodeId, k: u8) -> Place {
    let kids = t.children(parent, None, 8).unwrap();
    match (k % 4, kids.get(k as usize / 4 % kids.len().max(1))) {
        (0, _) | (_, None) => Place::First,
        (1, _) => Place::Last,
        (2, Some(c)) => Place::After(c.node),
        (_, Some(c)) => Place::Before(c.node),
    }
}

/// splitmix64: a small deterministic generator for delivery orders.
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
        (self.next() % n as u64) as usize
    }
}

fn run<P: Policy + Clone>(policy: P, n_replicas: usize, script: Vec<(usize, Action)>, seed: u64) {
    let mut reps: Vec<Replica<P>> = (0..n_replicas)
        .map(|i| Replica {
            tree: Tree::with_policy(MemoryStore::new(), replica(i as u8 + 1), policy.clone()),
            mirror: HashMap::new(),
            payloads: HashMap::new(),
        })
        .collect();
    let mut nodes: Vec<NodeId> = Vec::new();
    // A node this replica knows (index 0, or none known: ROOT).
    let pick = |t: &T<P>, nodes: &[NodeId], i: usize| -> NodeId {
        let known: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| t.exists(*n).unwrap())
            .collect();
        if i % 16 == 0 || known.is_empty() {
            NodeId::ROOT
        } else {
            known[i % known.len()]
        }
    };
    for (who, action) in script {
        let who = who % n_replicas;
        let result = {
            let r = &mut reps[who];
            let t = &mut r.tree;
            match action {
                Action::Create {
                    parent,
                    place,
                    payload,
                } => {
                    let parent = pick(t, &nodes, parent);
                    let place = place_of(t, parent, place);
                    t.create(parent, place, payload.then(|| vec![place_tag(place)]))
                }
                Action::Move {
                    node,
                    parent,
                    place,
                } => {
                    let (node, parent) = (pick(t, &nodes, node), pick(t, &nodes, parent));
                    let place = place_of(t, parent, place);
                    t.move_node(node, parent, place)
                }
                Action::Delete { node } => t.delete(pick(t, &nodes, node)),
                Action::Restore { node, parent } => {
                    let (node, parent) = (pick(t, &nodes, node), pick(t, &nodes, parent));
                    t.restore(node, parent, Place::Last)
                }
                Action::Payload { node, byte } => t.set_payload(pick(t, &nodes, node), vec![byte]),
                Action::CrossMove { a, b, other } => {
                    let (a, b) = (pick(t, &nodes, a), pick(t, &nodes, b));
                    let first = t.move_node(a, b, Place::Last);
                    if let Ok(local) = &first {
                        let events = local.events.clone();
                        reps[who].events(&events);
                    }
                    let other = other % n_replicas;
                    let mut ops = log_ops(&reps[who].tree);
                    if let Ok(local) = &first {
                        ops.retain(|op| op.id() != local.op.id());
                    }
                    reps[other].apply(ops);
                    let o = &mut reps[other];
                    if let Ok(local) = o.tree.move_node(b, a, Place::First) {
                        o.events(&local.events);
                    }
                    continue;
                }
                Action::Sync { from } => {
                    let from = from % n_replicas;
                    let ops = log_ops(&reps[from].tree);
                    reps[who].apply(ops);
                    continue;
                }
            }
        };
        // Local refusals (unknown node, cycle, in trash…) are part of the random walk.
        if let Ok(local) = result {
            if let canopy_tree::OpKind::Create { node, .. } = local.op.kind() {
                nodes.push(*node);
            }
            reps[who].events(&local.events);
            reps[who].tree.check_invariants().unwrap();
        }
    }

    let mut all: Vec<Op> = reps.iter().flat_map(|r| log_ops(&r.tree)).collect();
    all.sort_by_key(|op| op.key());
    all.dedup_by_key(|op| op.id());
    let mut rng = Rng(seed);
    for r in reps.iter_mut() {
        // Random order with some duplicates, in random batch splits.
        let mut delivery = all.clone();
        for _ in 0..all.len() / 4 {
            let dup = all[rng.below(all.len().max(1))].clone();
            delivery.push(dup);
        }
        for i in (1..delivery.len()).rev() {
            delivery.swap(i, rng.below(i + 1));
        }
        while !delivery.is_empty() {
            let take = 1 + rng.below(delivery.len().min(12));
            let batch: Vec<Op> = delivery.drain(..take).collect();
            r.apply(batch);
        }
        assert_eq!(r.tree.store().pending_len().unwrap(), 0);
        assert_eq!(r.tree.store().log_len().unwrap(), all.len() as u64);
        r.check_mirror(&nodes);
    }

    // A fresh replica given everything at once, in key order.
    let mut fresh = Tree::with_policy(MemoryStore::new(), replica(200), policy.clone());
    fresh.apply(all.clone()).unwrap();
    fresh.check_invariants().unwrap();
    let expected = dump(&fresh, &nodes);
    let effects = |t: &T<P>| -> Vec<(OpId, Effect)> {
        all.iter()
            .map(|op| (op.id(), t.store().entry(op.id()).unwrap().unwrap().effect))
            .collect()
    };
    let expected_effects = effects(&fresh);
    for r in &reps {
        assert_eq!(dump(&r.tree, &nodes), expected);
        assert_eq!(effects(&r.tree), expected_effects);
    }
}

fn place_tag(p: Place) -> u8 {
    match p {
        Place::First => 1,
        Place::Last => 2,
        Place::After(_) => 3,
        Place::Before(_) => 4,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn replicas_converge(
        n in 3usize..=5,
        script in proptest::collection::vec((0usize..5, arb_action()), 1..120),
        seed in any::<u64>(),
    ) {
        run(AllowAll, n, script, seed);
    }

    #[test]
    fn replicas_converge_under_a_state_dependent_policy(
        n in 3usize..=5,
        script in proptest::collection::vec((0usize..5, arb_action()), 1..120),
        seed in any::<u64>(),
    ) {
        run(Fence::new(), n, script, seed);
    }
}

/// Two concurrent moves that would make a cycle: one is skipped. Then an older op arrives
/// that forces a rewind past the skipped move; the result must equal a fresh replay.
#[test]
fn rewind_past_a_skipped_move() {
    let mut a = Tree::new(MemoryStore::new(), replica(1));
    let mut b = Tree::new(MemoryStore::new(), replica(2));
    let mut c = Tree::new(MemoryStore::new(), replica(0));
    let x = a.create(NodeId::ROOT, Place::Last, None).unwrap().op;
    let y = a.create(NodeId::ROOT, Place::Last, None).unwrap().op;
    b.apply(log_ops(&a)).unwrap();
    c.apply(log_ops(&a)).unwrap();
    let m1 = a.move_node(x.node(), y.node(), Place::Last).unwrap().op;
    let m2 = b.move_node(y.node(), x.node(), Place::Last).unwrap().op;
    // C makes an op concurrent with both that sorts before them.
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
    let mut fresh = Tree::new(MemoryStore::new(), replica(9));
    let mut all = vec![x.clone(), y.clone(), m1, m2.clone(), early];
    all.sort_by_key(|o| o.key());
    fresh.apply(all).unwrap();
    let nodes = [x.node(), y.node()];
    assert_eq!(dump(&a, &nodes), dump(&fresh, &nodes));
    assert_eq!(a.parent(x.node()).unwrap(), Some(y.node()));
}
