//! Authorized ingest into SQLite next to raw Ed25519 batch verification of the same signatures.
//!
//! `cargo bench -p canopy-caps --bench ingest [-- OPS [BATCH]]` (defaults: 100000 ops, batches
//! of 1000). Four writers, each under a depth-3 chain (owner → a → b → writer) scoped to a
//! folder, create nodes and set payloads in their folder; the ops arrive in order, signed, in
//! batches, and go through `Authz::ingest` (decode, document check, batch signature check,
//! equivocation check, chain check cached by CID, authorized apply in one SQLite transaction per
//! batch), timed as its two halves (`Verified::check`, `Authz::ingest_verified`), and then
//! through `Authz::ingest_pipelined` (the check of batch k+1 on a worker thread while batch k
//! is applied). Rates are wall-clock; on Linux the CPU time of each part (of the thread that
//! runs it) is printed too, since on a shared machine the wall clock also counts waiting for a
//! core. The raw rate is `ed25519_zebra::batch::Verifier` over the same (key, signature,
//! message) triples in batches of the same size, with nothing else.

use std::time::{Duration, Instant};

use canopy_caps::{
    chain_ref, sign_op, signing_input, subtree_policy, Ability, Authz, ChainRef, Delegation,
    DelegationFields, Document, Entry, SecretKey, Verified,
};
use canopy_tree::{Lamport, NodeId, Op, OpId, OpKind, Position, ReplicaId, SqliteStore};

fn key(b: u8) -> SecretKey {
    SecretKey::from_bytes(&[b; 32])
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(100_000) as usize;
    let batch = args.get(1).copied().unwrap_or(1000) as usize;

    let owner = key(1);
    let doc = Document::new(owner.did(), [7; 16]);
    let root = chain_ref(&[]);
    let mut setup: Vec<Vec<u8>> = Vec::new();
    let mut writers: Vec<(SecretKey, ChainRef, NodeId)> = Vec::new();
    let mut owner_seq = 0;
    for w in 0..4u8 {
        let folder = NodeId::from_bytes([0x10 + w; 16]);
        owner_seq += 1;
        let op = Op::new(
            OpId::new(ReplicaId::from_bytes(*owner.did().public_key()), owner_seq),
            Lamport::new(owner_seq),
            OpKind::Create {
                node: folder,
                parent: NodeId::ROOT,
                position: Position::from_bytes(&[0x10 + w]),
                payload: None,
            },
        );
        setup.push(sign_op(&owner, &doc.id(), 1, &root, op).unwrap().encode());
        let (a, b, writer) = (key(0x20 + w), key(0x30 + w), key(0x40 + w));
        let grant = |iss: &SecretKey, aud: &SecretKey, n: u8| {
            Delegation::issue_with_nonce(
                iss,
                DelegationFields {
                    audience: aud.did(),
                    subject: Some(owner.did()),
                    command: Ability::Write.command(),
                    policy: subtree_policy(folder.as_bytes(), &[]),
                    expiration: Some(4_000_000_000),
                    not_before: None,
                    meta: None,
                },
                vec![n, w],
            )
        };
        let chain = [
            grant(&owner, &a, 1),
            grant(&a, &b, 2),
            grant(&b, &writer, 3),
        ];
        for d in &chain {
            setup.push(Entry::Delegation(d.clone()).encode());
        }
        let cids: Vec<_> = chain.iter().map(|d| d.cid()).collect();
        setup.push(Entry::Chain(cids.clone()).encode());
        writers.push((writer, chain_ref(&cids), folder));
    }

    // The workload: per writer, creates under its folder, every fourth op a payload write.
    let t = Instant::now();
    let mut ops: Vec<Vec<u8>> = Vec::with_capacity(total);
    let mut triples = Vec::with_capacity(total);
    let mut seqs = [0u64; 4];
    for i in 0..total {
        let w = i % 4;
        let (k, chain, folder) = &writers[w];
        seqs[w] += 1;
        let seq = seqs[w];
        let rid = ReplicaId::from_bytes(*k.did().public_key());
        let mut node = [0u8; 16];
        node[..8].copy_from_slice(&(w as u64 + 1).to_be_bytes());
        node[8..].copy_from_slice(&seq.to_be_bytes());
        let kind = if seq % 4 == 0 {
            let mut prev = node;
            prev[8..].copy_from_slice(&(seq - 1).to_be_bytes());
            OpKind::SetPayload {
                node: NodeId::from_bytes(prev),
                payload: vec![w as u8; 16],
            }
        } else {
            let mut p = seq.to_be_bytes().to_vec();
            while p.last() == Some(&0) {
                p.pop();
            }
            p.insert(0, 1);
            OpKind::Create {
                node: NodeId::from_bytes(node),
                parent: *folder,
                position: Position::from_bytes(&p),
                payload: None,
            }
        };
        let op = Op::new(OpId::new(rid, seq), Lamport::new(100 + i as u64), kind);
        let time = 1_800_000_000;
        let msg = signing_input(&doc.id(), time, chain, &op);
        let signed = sign_op(k, &doc.id(), time, chain, op).unwrap();
        let sig = *signed.attestation().unwrap().signature();
        triples.push((*k.did().public_key(), sig, msg));
        ops.push(signed.encode());
    }
    eprintln!("signed {total} ops in {:.1?}", t.elapsed());

    // Raw: batch verification of the same signatures, same batch size.
    let (t, c) = (Instant::now(), cpu());
    for chunk in triples.chunks(batch) {
        let mut v = ed25519_zebra::batch::Verifier::new();
        for (pk, sig, msg) in chunk {
            v.queue((
                ed25519_zebra::VerificationKeyBytes::from(*pk),
                ed25519_zebra::Signature::from_bytes(sig),
                msg,
            ));
        }
        v.verify(rand_core::OsRng).expect("valid signatures");
    }
    let raw = t.elapsed();
    let raw_cpu = cpu() - c;
    let raw_rate = total as f64 / raw.as_secs_f64();

    // The check half alone (decode, document check, signing input, batch verification).
    let (t, c) = (Instant::now(), cpu());
    for chunk in ops.chunks(batch) {
        let v = Verified::check(doc.id(), chunk);
        assert_eq!(v.len(), chunk.len());
    }
    let check = t.elapsed();
    let check_cpu = cpu() - c;

    // The tree alone: the same signed ops decoded and applied with no policy.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("plain.db")).unwrap();
    let mut plain = canopy_tree::Tree::new(store, ReplicaId::from_bytes([0xee; 32]));
    for b in &setup {
        if let Ok(op) = Op::decode(b) {
            plain.apply([op]).unwrap();
        }
    }
    let (t, c) = (Instant::now(), cpu());
    for chunk in ops.chunks(batch) {
        plain
            .apply(chunk.iter().map(|b| Op::decode(b).unwrap()))
            .unwrap();
    }
    let tree_only = t.elapsed();
    let tree_cpu = cpu() - c;
    drop(plain);

    // Authorized ingest into a SQLite file.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("doc.db")).unwrap();
    let mut authz = Authz::new(store, doc, ReplicaId::from_bytes([0xee; 32])).unwrap();
    let r = authz.ingest(&setup).unwrap();
    assert!(r.items.iter().all(|i| i.is_ok()));
    let id = doc.id();
    let (mut check_half, mut apply_half) = (Duration::ZERO, Duration::ZERO);
    let mut apply_cpu = Duration::ZERO;
    let t = Instant::now();
    let mut denied = 0;
    for chunk in ops.chunks(batch) {
        // `Authz::ingest` is these two calls; timed apart to show the two halves.
        let t0 = Instant::now();
        let verified = Verified::check(id, chunk);
        let (t1, c1) = (Instant::now(), cpu());
        let r = authz.ingest_verified(verified).unwrap();
        check_half += t1 - t0;
        apply_half += t1.elapsed();
        apply_cpu += cpu() - c1;
        for item in &r.items {
            match item {
                Ok(canopy_caps::Accepted::Op { outcome, .. }) => {
                    if !matches!(outcome, canopy_tree::Outcome::Applied) {
                        denied += 1;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let ingest = t.elapsed();
    assert_eq!(denied, 0);
    assert_eq!(
        authz.tree().node_count().unwrap() as usize,
        4 + total - total / 4
    );
    let ingest_rate = total as f64 / ingest.as_secs_f64();
    drop(authz);

    // The same, pipelined (`Authz::ingest_pipelined`): a worker thread checks batch k+1
    // (`Verified::check`) while this thread applies batch k (`Authz::ingest_verified`).
    let store = SqliteStore::open(dir.path().join("doc2.db")).unwrap();
    let mut authz = Authz::new(store, doc, ReplicaId::from_bytes([0xee; 32])).unwrap();
    authz.ingest(&setup).unwrap();
    let (t, c) = (Instant::now(), cpu());
    authz
        .ingest_pipelined(ops.chunks(batch), |_, r| {
            assert!(r.items.iter().all(|i| matches!(
                i,
                Ok(canopy_caps::Accepted::Op {
                    outcome: canopy_tree::Outcome::Applied,
                    ..
                })
            )));
        })
        .unwrap();
    let piped = t.elapsed();
    let piped_cpu = cpu() - c;
    assert_eq!(
        authz.tree().node_count().unwrap() as usize,
        4 + total - total / 4
    );
    let piped_rate = total as f64 / piped.as_secs_f64();
    println!("ops {total}, batch {batch}, chains depth 3, 4 writers");
    println!(
        "raw ed25519 batch verify (zebra): {:>9.0} ops/s ({:.2?})",
        raw_rate, raw
    );
    println!(
        "authorized ingest into SQLite:    {:>9.0} ops/s ({:.2?})",
        ingest_rate, ingest
    );
    println!(
        "  its check half / apply half:    {:>9.0} / {:.0} ops/s ({:.2?} / {:.2?})",
        total as f64 / check_half.as_secs_f64(),
        total as f64 / apply_half.as_secs_f64(),
        check_half,
        apply_half
    );
    println!(
        "Verified::check alone:            {:>9.0} ops/s ({:.2?})",
        total as f64 / check.as_secs_f64(),
        check
    );
    println!(
        "tree apply alone (no policy):     {:>9.0} ops/s ({:.2?})",
        total as f64 / tree_only.as_secs_f64(),
        tree_only
    );
    println!(
        "authorized ingest, pipelined:     {:>9.0} ops/s ({:.2?})",
        piped_rate, piped
    );
    println!(
        "ratio to raw: {:.0}% (one thread), {:.0}% (pipelined, 2 threads)",
        100.0 * ingest_rate / raw_rate,
        100.0 * piped_rate / raw_rate
    );
    // CPU time of the measuring thread (Linux; zero elsewhere): what each part costs whatever
    // else runs on the machine. Pipelined, the slower of check and apply sets the pace when a
    // second core is free.
    if !raw_cpu.is_zero() {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
        println!(
            "cpu us/op: raw {:.2}, check {:.2}, tree alone {:.2}, apply half {:.2}, \
             pipelined applying thread {:.2}",
            us(raw_cpu),
            us(check_cpu),
            us(tree_cpu),
            us(apply_cpu),
            us(piped_cpu),
        );
        println!(
            "bound with two free cores: raw / max(check, apply half) = {:.0}%",
            100.0 * raw_cpu.as_secs_f64() / check_cpu.max(apply_cpu).as_secs_f64()
        );
    }
}

/// CPU time used so far by the calling thread (`/proc/thread-self/schedstat`, in ns; zero if
/// unreadable).
fn cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}
