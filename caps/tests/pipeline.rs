//! `Authz::ingest_pipelined` gives exactly what `Authz::ingest` of each batch in turn gives
//! (reports, tree, log), and stops at a store error with the batches before it applied.

use std::time::Duration;

use canopy_caps::{
    chain_ref, sign_op, subtree_policy, Ability, Authz, ChainRef, Delegation, DelegationFields,
    Document, Entry, IngestReport, SecretKey,
};
use canopy_tree::{
    ApplyError, Lamport, LogKey, MemoryStore, NodeId, Op, OpId, OpKind, Position, ReplicaId,
    SqliteStore, Store,
};
use proptest::prelude::*;

fn key(b: u8) -> SecretKey {
    SecretKey::from_bytes(&[b; 32])
}

const TIME: u64 = 1_800_000_000;

/// A document and the items of a workload: the owner's folder, then a writer's creates, some
/// inside the folder (allowed by the writer's chain), some at ROOT (denied), some with a broken
/// signature, and the chain's proofs at `proofs_at` (ops before them are held, then released).
struct Workload {
    doc: Document,
    items: Vec<Vec<u8>>,
}

fn workload(ops: usize, proofs_at: usize, broken: &[usize], outside: &[usize]) -> Workload {
    let owner = key(1);
    let writer = key(2);
    let doc = Document::new(owner.did(), [3; 16]);
    let folder = NodeId::from_bytes([0x10; 16]);
    let make_folder = Op::new(
        OpId::new(ReplicaId::from_bytes(*owner.did().public_key()), 1),
        Lamport::new(1),
        OpKind::Create {
            node: folder,
            parent: NodeId::ROOT,
            position: Position::from_bytes(&[0x10]),
            payload: None,
        },
    );
    let grant = Delegation::issue_with_nonce(
        &owner,
        DelegationFields {
            audience: writer.did(),
            subject: Some(owner.did()),
            command: Ability::Write.command(),
            policy: subtree_policy(folder.as_bytes(), &[]),
            expiration: None,
            not_before: None,
            meta: None,
        },
        vec![7; 12],
    );
    let chain: ChainRef = chain_ref(&[grant.cid()]);
    let proofs = [
        Entry::Delegation(grant.clone()).encode(),
        Entry::Chain(vec![grant.cid()]).encode(),
    ];
    let rid = ReplicaId::from_bytes(*writer.did().public_key());
    let mut items = vec![
        sign_op(&owner, &doc.id(), TIME, &chain_ref(&[]), make_folder)
            .unwrap()
            .encode(),
    ];
    for i in 0..ops {
        if i == proofs_at {
            items.extend(proofs.iter().cloned());
        }
        let seq = i as u64 + 1;
        let mut node = [0x20; 16];
        node[8..].copy_from_slice(&seq.to_be_bytes());
        let parent = if outside.contains(&i) {
            NodeId::ROOT
        } else {
            folder
        };
        let op = Op::new(
            OpId::new(rid, seq),
            Lamport::new(10 + seq),
            OpKind::Create {
                node: NodeId::from_bytes(node),
                parent,
                position: Position::from_bytes(&[1, i as u8 + 1]),
                payload: None,
            },
        );
        let mut bytes = sign_op(&writer, &doc.id(), TIME, &chain, op)
            .unwrap()
            .encode();
        if broken.contains(&i) {
            // the last byte is the signature's: still decodes, no longer verifies
            *bytes.last_mut().unwrap() ^= 1;
        }
        items.push(bytes);
    }
    if proofs_at >= ops {
        items.extend(proofs.iter().cloned());
    }
    Workload { doc, items }
}

/// Splits `items` into batches at the cut points (taken modulo the length, sorted).
fn batches(items: &[Vec<u8>], cuts: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (items.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts.into_iter().chain([items.len()]) {
        out.push(items[from..c].to_vec());
        from = c;
    }
    out
}

/// The whole log and every logged node's parent, for comparing replicas.
type State = (Vec<canopy_tree::LogEntry>, Vec<(NodeId, NodeId)>);

fn state<S: Store>(a: &Authz<S>) -> State {
    let store = a.tree().store();
    let log = store
        .log_after(LogKey::new(
            Lamport::default(),
            ReplicaId::from_bytes([0; 32]),
        ))
        .unwrap();
    let mut nodes: Vec<(NodeId, NodeId)> = log
        .iter()
        .filter_map(|e| {
            let n = e.op.node();
            store.parent(n).unwrap().map(|p| (n, p))
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    (log, nodes)
}

fn serial<S: Store>(a: &mut Authz<S>, batches: &[Vec<Vec<u8>>]) -> Vec<IngestReport> {
    batches.iter().map(|b| a.ingest(b).unwrap()).collect()
}

fn pipelined<S: Store>(a: &mut Authz<S>, batches: &[Vec<Vec<u8>>]) -> Vec<IngestReport> {
    let mut out = Vec::new();
    a.ingest_pipelined(batches, |i, r| {
        assert_eq!(i, out.len(), "reports come in batch order");
        out.push(r);
    })
    .unwrap();
    out
}

fn replica(doc: Document) -> Authz<MemoryStore> {
    Authz::new(MemoryStore::new(), doc, ReplicaId::from_bytes([0xee; 32])).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)))]

    #[test]
    fn pipelined_ingest_is_serial_ingest(
        ops in 1usize..40,
        proofs_at in 0usize..45,
        broken in proptest::collection::vec(0usize..40, 0..3),
        outside in proptest::collection::vec(0usize..40, 0..4),
        cuts in proptest::collection::vec(0usize..100, 0..8),
    ) {
        let w = workload(ops, proofs_at, &broken, &outside);
        let batches = batches(&w.items, &cuts);
        let mut a = replica(w.doc);
        let mut b = replica(w.doc);
        let expected = serial(&mut a, &batches);
        let got = pipelined(&mut b, &batches);
        prop_assert_eq!(got, expected);
        prop_assert_eq!(state(&b), state(&a));
        prop_assert_eq!(b.held_len(), a.held_len());
    }
}

#[test]
fn pipelined_ingest_into_sqlite_is_serial_ingest() {
    // a broken op leaves its successors parked (they wait for its seq): break the last one
    let w = workload(200, 120, &[199], &[7, 8, 150]);
    let batches = batches(&w.items, &[13, 50, 51, 90, 160]);
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let store = SqliteStore::open(dir.path().join(name)).unwrap();
        Authz::new(store, w.doc, ReplicaId::from_bytes([0xee; 32])).unwrap()
    };
    let (mut a, mut b) = (open("serial.db"), open("pipelined.db"));
    let expected = serial(&mut a, &batches);
    let got = pipelined(&mut b, &batches);
    assert_eq!(got, expected);
    assert_eq!(state(&b), state(&a));
    // 200 writer ops: 1 does not verify, 3 are denied, the rest applied; plus the folder
    assert_eq!(b.tree().node_count().unwrap(), 1 + 200 - 1 - 3);
}

#[test]
fn a_store_error_stops_the_pipeline_after_the_batches_before_it() {
    let w = workload(60, 0, &[], &[]);
    let batches = batches(&w.items, &[20, 40]);
    assert_eq!(batches.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let store = SqliteStore::open(&path).unwrap();
    // fail at once when the write lock is taken, instead of waiting for it
    store.connection().busy_timeout(Duration::ZERO).unwrap();
    let mut b = Authz::new(store, w.doc, ReplicaId::from_bytes([0xee; 32])).unwrap();
    let locker = SqliteStore::open(&path).unwrap();
    let mut seen = Vec::new();
    let r = b.ingest_pipelined(&batches, |i, _| {
        seen.push(i);
        if i == 1 {
            // another writer holds the lock while batch 2 would be applied
            locker
                .connection()
                .execute_batch("BEGIN IMMEDIATE")
                .unwrap();
        }
    });
    assert!(matches!(r, Err(ApplyError::Store(_))), "{r:?}");
    assert_eq!(seen, vec![0, 1]);
    locker.connection().execute_batch("COMMIT").unwrap();
    // batches 0 and 1 were applied, batch 2 was not
    let mut a = replica(w.doc);
    serial(&mut a, &batches[..2]);
    assert_eq!(state(&b), state(&a));
    // going on from the failed batch gives the serial result
    let rest = pipelined(&mut b, &batches[2..]);
    assert_eq!(rest, serial(&mut a, &batches[2..]));
    assert_eq!(state(&b), state(&a));
}
