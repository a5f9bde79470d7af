//! Arbitrary (non-conforming) ops from a few replicas: invalid ones are rejected, none panics, the
//! invariants hold after every batch, and two delivery orders give the same tree and effects.

use canopy_tree::{
    Effect, Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Position, Store, Tree, VersionVector,
};
use proptest::prelude::*;

use crate::common::{dump, replica};

/// Mostly one of six user nodes; ROOT and TRASH now and then (rejected as targets).
fn node(i: u8) -> NodeId {
    match i % 32 {
        0 => NodeId::ROOT,
        31 => NodeId::TRASH,
        k => NodeId::from_bytes([k % 6 + 1; 16]),
    }
}

/// Often ROOT, now and then TRASH (rejected as a parent).
fn parent(i: u8) -> NodeId {
    match i % 32 {
        0..=7 => NodeId::ROOT,
        31 => NodeId::TRASH,
        k => NodeId::from_bytes([k % 6 + 1; 16]),
    }
}

fn arb_kind() -> impl Strategy<Value = OpKind> {
    let pos = (1u8..=255).prop_map(|b| Position::from_bytes(&[0x80, b]));
    prop_oneof![
        (any::<u8>(), any::<u8>(), pos.clone(), any::<Option<u8>>()).prop_map(
            |(n, p, position, payload)| OpKind::Create {
                node: node(n),
                parent: parent(p),
                position,
                payload: payload.map(|b| vec![b]),
            }
        ),
        (any::<u8>(), any::<u8>(), pos).prop_map(|(n, p, position)| OpKind::Move {
            node: node(n),
            parent: parent(p),
            position,
        }),
        (
            any::<u8>(),
            proptest::collection::vec((1u8..=3, 1u64..=4), 0..3)
        )
            .prop_map(|(n, seen)| OpKind::Delete {
                node: node(n),
                seen: seen
                    .into_iter()
                    .map(|(r, s)| (replica(r), s))
                    .collect::<VersionVector>(),
            }),
        (any::<u8>(), any::<u8>()).prop_map(|(n, b)| OpKind::SetPayload {
            node: node(n),
            payload: vec![b],
        }),
    ]
}

/// Ops with unique ids (so no equivocation, whose first-come rule depends on arrival order):
/// each replica's seqs count up from 1 with a few dropped (so some ops wait forever); Lamport
/// timestamps mostly increase with seq, sometimes not (those ops are rejected).
fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec((1u8..=3, 0u64..=4, any::<u8>(), arb_kind()), 1..60).prop_map(|v| {
        let mut next = [0u64; 4];
        let mut ops = Vec::new();
        for (r, jitter, drop, kind) in v {
            next[r as usize] += 1;
            let seq = next[r as usize];
            if drop < 8 {
                continue;
            }
            let lamport = Lamport::new(seq * 4 + jitter);
            ops.push(Op::new(OpId::new(replica(r), seq), lamport, kind));
        }
        ops
    })
}

fn deliver(ops: &[Op], split: usize) -> Tree<MemoryStore> {
    let mut t = Tree::new(MemoryStore::new(), replica(50));
    for chunk in ops.chunks(split.max(1)) {
        t.apply(chunk.to_vec()).unwrap();
        t.check_invariants().unwrap();
    }
    t
}

proptest! {
    #[test]
    fn arbitrary_ops_converge(ops in arb_ops(), split in 1usize..8, seed in any::<u64>()) {
        let forward = deliver(&ops, split);
        let mut shuffled = ops.clone();
        // A deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let backward = deliver(&shuffled, split + 1);
        let nodes: Vec<NodeId> = (1..7).map(|k| NodeId::from_bytes([k; 16])).collect();
        prop_assert_eq!(dump(&forward, &nodes), dump(&backward, &nodes));
        prop_assert_eq!(forward.store().log_len().unwrap(), backward.store().log_len().unwrap());
        prop_assert_eq!(
            forward.store().pending_len().unwrap(),
            backward.store().pending_len().unwrap()
        );
        for op in &ops {
            let effect = |t: &Tree<MemoryStore>| -> Option<Effect> {
                t.store().entry(op.id()).unwrap().map(|e| e.effect)
            };
            prop_assert_eq!(effect(&forward), effect(&backward));
        }
    }
}
