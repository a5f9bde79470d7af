//! SqliteStore ≡ MemoryStore through the engine: random concurrent histories, delivered in random
//! order (late ops, gaps, duplicates), give the same reports, change events, tree, payloads and log.

use canopy_tree::{
    Lamport, LogKey, MemoryStore, NodeId, Op, Place, ReplicaId, SqliteStore, Store, Tree,
};
use proptest::prelude::*;

/// One step of a replica's user, with random choices resolved against what exists.
#[derive(Clone, Debug)]
enum Action {
    Create {
        r: usize,
        parent: u16,
        place: u8,
        payload: bool,
    },
    Move {
        r: usize,
        node: u16,
        parent: u16,
        place: u8,
    },
    Delete {
        r: usize,
        node: u16,
    },
    Restore {
        r: usize,
        node: u16,
        parent: u16,
    },
    Payload {
        r: usize,
        node: u16,
        byte: u8,
    },
    /// Replica `from` sends everything it has to `to` (makes later ops causally related).
    Sync {
        from: usize,
        to: usize,
    },
}

const REPLICAS: usize = 3;

fn action() -> impl Strategy<Value = Action> {
    let r = 0..REPLICAS;
    prop_oneof![
        4 => (r.clone(), any::<u16>(), any::<u8>(), any::<bool>())
            .prop_map(|(r, parent, place, payload)| Action::Create { r, parent, place, payload }),
        4 => (r.clone(), any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(r, node, parent, place)| Action::Move { r, node, parent, place }),
        1 => (r.clone(), any::<u16>()).prop_map(|(r, node)| Action::Delete { r, node }),
        1 => (r.clone(), any::<u16>(), any::<u16>())
            .prop_map(|(r, node, parent)| Action::Restore { r, node, parent }),
        1 => (r.clone(), any::<u16>(), any::<u8>())
            .prop_map(|(r, node, byte)| Action::Payload { r, node, byte }),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

fn replica(i: usize) -> ReplicaId {
    ReplicaId::from_bytes([(i as u8 + 1) * 37; 32])
}

/// Runs the actions on in-memory replicas and returns every op made, in creation order.
fn history(actions: &[Action]) -> Vec<Op> {
    let mut trees: Vec<Tree<MemoryStore>> = (0..REPLICAS)
        .map(|i| Tree::new(MemoryStore::new(), replica(i)))
        .collect();
    let mut made: Vec<Vec<Op>> = vec![Vec::new(); REPLICAS];
    let mut nodes: Vec<NodeId> = Vec::new();
    // a node this replica knows (ROOT sometimes, or when it knows none)
    let pick = |t: &Tree<MemoryStore>, nodes: &[NodeId], i: u16| -> NodeId {
        let known: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| t.store().placement(*n).unwrap().is_some())
            .collect();
        if known.is_empty() || i % 7 == 0 {
            NodeId::ROOT
        } else {
            known[i as usize % known.len()]
        }
    };
    let place = |t: &Tree<MemoryStore>, parent: NodeId, p: u8| -> Place {
        let kids = t.children(parent, None, 8).unwrap_or_default();
        match (p % 4, kids.get(p as usize / 4 % kids.len().max(1))) {
            (0, _) | (_, None) => Place::First,
            (1, _) => Place::Last,
            (2, Some(c)) => Place::After(c.node),
            (_, Some(c)) => Place::Before(c.node),
        }
    };
    for a in actions {
        let res = match *a {
            Action::Create {
                r,
                parent,
                place: p,
                payload,
            } => {
                let parent = pick(&trees[r], &nodes, parent);
                let pl = place(&trees[r], parent, p);
                let res = trees[r].create(parent, pl, payload.then(|| vec![r as u8; 2]));
                if let Ok(l) = &res {
                    nodes.push(l.node());
                }
                res
            }
            Action::Move {
                r,
                node,
                parent,
                place: p,
            } => {
                // among the first few nodes, so concurrent moves often make cycles
                let few = &nodes[..nodes.len().min(5)];
                let (node, parent) = (pick(&trees[r], few, node), pick(&trees[r], few, parent));
                let pl = place(&trees[r], parent, p);
                trees[r].move_node(node, parent, pl)
            }
            Action::Delete { r, node } => {
                let node = pick(&trees[r], &nodes, node);
                trees[r].delete(node)
            }
            Action::Restore { r, node, parent } => {
                let (node, parent) = (
                    pick(&trees[r], &nodes, node),
                    pick(&trees[r], &nodes, parent),
                );
                trees[r].restore(node, parent, Place::Last)
            }
            Action::Payload { r, node, byte } => {
                let node = pick(&trees[r], &nodes, node);
                trees[r].set_payload(node, vec![byte])
            }
            Action::Sync { from, to } => {
                if from != to {
                    let ops: Vec<Op> = made.iter().flatten().cloned().collect();
                    // everything `from` knows: its own ops plus what it received
                    let known: Vec<Op> = ops
                        .into_iter()
                        .filter(|o| trees[from].store().entry(o.id()).unwrap().is_some())
                        .collect();
                    trees[to].apply(known).unwrap();
                }
                continue;
            }
        };
        if let Ok(l) = res {
            let r = match *a {
                Action::Create { r, .. }
                | Action::Move { r, .. }
                | Action::Delete { r, .. }
                | Action::Restore { r, .. }
                | Action::Payload { r, .. } => r,
                Action::Sync { .. } => unreachable!(),
            };
            made[r].push(l.op);
        }
    }
    made.into_iter().flatten().collect()
}

/// Everything observable through the store trait, in a canonical order.
fn dump<S: Store>(s: &S) -> String
where
    S::Error: std::fmt::Debug,
{
    let mut out = String::new();
    for top in [NodeId::ROOT, NodeId::TRASH] {
        let mut stack = vec![(top, 0usize)];
        while let Some((n, d)) = stack.pop() {
            let kids = s.children(n, None, usize::MAX).unwrap();
            assert_eq!(kids.len() as u64, s.child_count(n).unwrap());
            for c in kids.iter().rev() {
                stack.push((c.node, d + 1));
            }
            let pl = s.placement(n).unwrap();
            let pay = s.payload(n).unwrap();
            out += &format!("{:indent$}{n:?} {pl:?} {pay:?}\n", "", indent = d);
        }
    }
    let log = s
        .log_after(LogKey::new(Lamport::new(0), ReplicaId::from_bytes([0; 32])))
        .unwrap();
    for e in &log {
        out += &format!("{e:?}\n");
    }
    out += &format!(
        "nodes={} log={} pending={} frontier={:?} last={:?}\n",
        s.node_count().unwrap(),
        s.log_len().unwrap(),
        s.pending_len().unwrap(),
        s.frontier().unwrap(),
        s.log_last().unwrap()
    );
    out
}

/// Delivers `ops` to a MemoryStore tree and a SqliteStore tree in a shuffled order (late ops,
/// causal gaps) with duplicates, in batches; both must report and end the same, and equal a
/// fresh in-order replay.
fn check(
    ops: Vec<Op>,
    order: prop::sample::Index,
    seed: u64,
    batch: usize,
) -> Result<(), TestCaseError> {
    // deliver in a shuffled order (late ops, causal gaps) with some duplicates, in batches
    let mut deliver: Vec<Op> = ops.clone();
    let mut x = seed | 1;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in (1..deliver.len()).rev() {
        let j = (rnd() % (i as u64 + 1)) as usize;
        deliver.swap(i, j);
    }
    if !ops.is_empty() {
        for _ in 0..3 {
            deliver.insert(
                order.index(deliver.len() + 1),
                ops[(rnd() % ops.len() as u64) as usize].clone(),
            );
        }
    }
    let me = ReplicaId::from_bytes([250; 32]);
    let mut mem = Tree::new(MemoryStore::new(), me);
    let mut sql = Tree::new(SqliteStore::open_in_memory().unwrap(), me);
    for chunk in deliver.chunks(batch) {
        let a = mem.apply(chunk.to_vec()).unwrap();

        let b = sql.apply(chunk.to_vec()).unwrap();
        prop_assert_eq!(&a.ops, &b.ops);
        prop_assert_eq!(&a.released, &b.released);
        prop_assert_eq!(&a.events, &b.events);
        sql.check_invariants().unwrap();
    }
    mem.check_invariants().unwrap();
    prop_assert_eq!(dump(mem.store()), dump(sql.store()));
    // a fresh in-order replay on SQLite ends in the same tree (late ops rewound only the suffix)
    let mut fresh = Tree::new(SqliteStore::open_in_memory().unwrap(), me);
    fresh.apply(ops).unwrap();
    let tree_only = |d: String| {
        d.lines()
            .filter(|l| !l.starts_with("LogEntry"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    prop_assert_eq!(tree_only(dump(fresh.store())), tree_only(dump(sql.store())));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)))]

    #[test]
    fn sqlite_store_equals_memory_store(
        actions in proptest::collection::vec(action(), 1..60),
        order in any::<prop::sample::Index>(),
        seed in any::<u64>(),
        batch in 1usize..6,
    ) {
        check(history(&actions), order, seed, batch)?;
    }

    /// Every replica knows the same five nodes, then moves them (and deletes some) without
    /// syncing: many moves that would make cycles, skipped and re-decided on every rewind.
    #[test]
    fn concurrent_moves_and_cycles(
        moves in proptest::collection::vec((0..REPLICAS, 0u16..5, 0u16..6, any::<u8>()), 1..40),
        order in any::<prop::sample::Index>(),
        seed in any::<u64>(),
        batch in 1usize..4,
    ) {
        let mut actions: Vec<Action> = (0..5)
            .map(|_| Action::Create { r: 0, parent: 1, place: 1, payload: false })
            .collect();
        actions.extend((1..REPLICAS).map(|to| Action::Sync { from: 0, to }));
        for (r, node, parent, p) in moves {
            actions.push(if p % 11 == 0 {
                Action::Delete { r, node: node + 1 }
            } else {
                // node/parent indexes 1..=5 pick the shared nodes (0 would be ROOT)
                Action::Move { r, node: node + 1, parent, place: p }
            });
        }
        check(history(&actions), order, seed, batch)?;
    }
}
