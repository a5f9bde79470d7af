//! The seed's benchmark workloads (`../shared/DESIGN.md`, "Performance bars") on a replica of this
//! module, so a host can time them in wasm: `bench.mjs` times each call; `smoke.mjs` runs them small
//! as a shape test. They mirror `canopy bench seed` (`canopy/src/bench/seed.rs`): same replica id
//! (`0x42…`), same ops, same shape checks; the store is created before the timed call.

use canopy_tree::{Lamport, NodeId, Op, OpId, OpKind, Place, Position, Store, Tree};

use crate::io::{set_output, BAD_INPUT, LIB_ERROR, OK};
use crate::replica::{with_replica, AnyTree};

/// Workload for [`smoke_seed`]: `n` creates, each under the previous one (the first under ROOT), one
/// local op (one apply call, one transaction) per create; then node count and depth are checked.
pub const SEED_INSERT_CHAIN: u32 = 0;
/// Workload for [`smoke_seed`]: `n` creates under ROOT in one `apply` call (one transaction); then node
/// count, ROOT's child count and the number of change events are checked.
pub const SEED_BULK_SIBLINGS: u32 = 1;

fn insert_chain<S: Store>(tree: &mut Tree<S>, n: u64) -> Result<(), String> {
    let mut parent = NodeId::ROOT;
    for _ in 0..n {
        parent = tree
            .create(parent, Place::Last, None)
            .map_err(|e| format!("{e:?}"))?
            .node();
    }
    let count = tree.node_count().map_err(|e| format!("{e:?}"))?;
    let depth = tree.ancestors(parent).map_err(|e| format!("{e:?}"))?.len() as u64;
    if count != n || depth != n {
        return Err(format!(
            "insert-chain: {count} nodes at depth {depth}, expected {n}"
        ));
    }
    Ok(())
}

fn bulk_siblings<S: Store>(tree: &mut Tree<S>, n: u64) -> Result<(), String> {
    let me = tree.replica();
    let mut ops = Vec::with_capacity(n as usize);
    let mut position = Position::first(&me);
    for seq in 1..=n {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&me.as_bytes()[..8]);
        id[8..].copy_from_slice(&seq.to_be_bytes());
        ops.push(Op::new(
            OpId::new(me, seq),
            Lamport::new(seq),
            OpKind::Create {
                node: NodeId::from_bytes(id),
                parent: NodeId::ROOT,
                position: position.clone(),
                payload: None,
            },
        ));
        position = Position::after(&position, &me).map_err(|e| format!("{e:?}"))?;
    }
    let report = tree.apply(ops).map_err(|e| format!("{e:?}"))?;
    let count = tree.node_count().map_err(|e| format!("{e:?}"))?;
    let children = tree
        .child_count(NodeId::ROOT)
        .map_err(|e| format!("{e:?}"))?;
    if count != n || children != n || report.events.len() as u64 != n {
        return Err(format!(
            "siblings: {count} nodes, {children} under ROOT, {} events, expected {n}",
            report.events.len()
        ));
    }
    Ok(())
}

/// Runs seed workload `workload` ([`SEED_INSERT_CHAIN`], [`SEED_BULK_SIBLINGS`]) with `n` nodes on
/// replica `h`, which should be fresh (made with replica byte `0x42` to match the native bench).
/// OK, or LIB_ERROR with the error or the failed shape check in the output.
#[no_mangle]
pub extern "C" fn smoke_seed(h: u32, workload: u32, n: u32) -> i32 {
    let n = u64::from(n);
    let run = |t: &mut AnyTree| match (workload, t) {
        (SEED_INSERT_CHAIN, AnyTree::Memory(t)) => Some(insert_chain(t, n)),
        (SEED_BULK_SIBLINGS, AnyTree::Memory(t)) => Some(bulk_siblings(t, n)),
        #[cfg(feature = "sqlite")]
        (SEED_INSERT_CHAIN, AnyTree::Sqlite(t)) => Some(insert_chain(t, n)),
        #[cfg(feature = "sqlite")]
        (SEED_BULK_SIBLINGS, AnyTree::Sqlite(t)) => Some(bulk_siblings(t, n)),
        _ => None,
    };
    match with_replica(h, run).flatten() {
        Some(Ok(())) => OK,
        Some(Err(e)) => {
            set_output(e.as_bytes());
            LIB_ERROR
        }
        None => BAD_INPUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{smoke_replica_new, smoke_reset, STORE_MEMORY};

    #[test]
    fn workloads_pass_their_shape_checks() {
        for (workload, h) in [(SEED_INSERT_CHAIN, 0), (SEED_BULK_SIBLINGS, 1)] {
            if h == 0 {
                smoke_reset();
            }
            assert_eq!(smoke_replica_new(STORE_MEMORY, 0x42), OK);
            assert_eq!(smoke_seed(h, workload, 300), OK);
        }
        assert_eq!(smoke_seed(0, 9, 1), BAD_INPUT);
        assert_eq!(smoke_seed(5, SEED_INSERT_CHAIN, 1), BAD_INPUT);
    }
}
