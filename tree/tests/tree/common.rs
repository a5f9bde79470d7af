//! Shared strategies and helpers.

use canopy_tree::{
    Lamport, NodeId, Op, OpId, OpKind, Position, ReplicaId, VersionVector, MAX_POSITION_LEN,
};
use proptest::prelude::*;

pub fn replica(b: u8) -> ReplicaId {
    ReplicaId::from_bytes([b; 32])
}

pub fn arb_node() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        1 => Just(NodeId::ROOT),
        1 => Just(NodeId::TRASH),
        8 => any::<[u8; 16]>().prop_map(NodeId::from_bytes),
    ]
}

pub fn arb_position() -> impl Strategy<Value = Position> {
    proptest::collection::vec(any::<u8>(), 1..=MAX_POSITION_LEN).prop_map(|mut v| {
        if let Some(last) = v.last_mut() {
            *last |= 1;
        }
        Position::try_from_bytes(&v).unwrap()
    })
}

pub fn arb_seen() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((any::<[u8; 32]>(), 1..u64::MAX), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(r, s)| (ReplicaId::from_bytes(r), s))
            .collect()
    })
}

pub fn arb_op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        (
            arb_node(),
            arb_node(),
            arb_position(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
        )
            .prop_map(|(node, parent, position, payload)| OpKind::Create {
                node,
                parent,
                position,
                payload
            }),
        (arb_node(), arb_node(), arb_position()).prop_map(|(node, parent, position)| {
            OpKind::Move {
                node,
                parent,
                position,
            }
        }),
        (arb_node(), arb_seen()).prop_map(|(node, seen)| OpKind::Delete { node, seen }),
        (arb_node(), proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(node, payload)| OpKind::SetPayload { node, payload }),
    ];
    (any::<[u8; 32]>(), 1..u64::MAX, 1..u64::MAX, kind).prop_map(|(r, seq, lamport, kind)| {
        Op::new(
            OpId::new(ReplicaId::from_bytes(r), seq),
            Lamport::new(lamport),
            kind,
        )
    })
}

pub type T = canopy_tree::Tree<canopy_tree::MemoryStore>;

/// A replica with a fresh in-memory store.
pub fn tree(b: u8) -> T {
    canopy_tree::Tree::new(canopy_tree::MemoryStore::new(), replica(b))
}

/// Every logged op of `t`, in total order.
pub fn log_ops<P: canopy_tree::Policy>(
    t: &canopy_tree::Tree<canopy_tree::MemoryStore, P>,
) -> Vec<Op> {
    use canopy_tree::Store;
    let min = canopy_tree::LogKey::new(Lamport::new(0), ReplicaId::from_bytes([0; 32]));
    t.store()
        .log_after(min)
        .unwrap()
        .into_iter()
        .map(|e| e.op)
        .collect()
}

/// Delivers everything `from` has logged to `to` in one batch.
pub fn sync(from: &T, to: &mut T) {
    to.apply(log_ops(from)).unwrap();
    to.check_invariants().unwrap();
}

/// The effect `t` logged for `op`.
pub fn effect(t: &T, op: &Op) -> canopy_tree::Effect {
    use canopy_tree::Store;
    t.store().entry(op.id()).unwrap().expect("logged").effect
}

/// A node, its (parent, position) and its payload.
pub type NodeState = (NodeId, Option<(NodeId, Position)>, Option<Vec<u8>>);

/// The visible state of `t`: every node's placement (parent, position) and payload, in node order.
pub fn dump<P: canopy_tree::Policy>(
    t: &canopy_tree::Tree<canopy_tree::MemoryStore, P>,
    nodes: &[NodeId],
) -> Vec<NodeState> {
    let mut nodes = nodes.to_vec();
    nodes.sort();
    nodes.dedup();
    nodes
        .into_iter()
        .map(|n| {
            let p = t.placement(n).unwrap().map(|p| (p.parent, p.position));
            (n, p, t.payload(n).unwrap())
        })
        .collect()
}
