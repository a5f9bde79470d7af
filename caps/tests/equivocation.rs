//! Deterministic equivocation (`spec/caps.md` §11.6): evidence is a document entry; once it is
//! known, the equivocating replica's ops from the equivocated seq on are denied on every
//! replica, whichever version each logged. Adversarial evidence, reopen, and random delivery
//! orders on MemoryStore and SqliteStore.

use std::collections::BTreeMap;

use canopy_caps::{
    chain_ref, sign_op, subtree_policy, Ability, Accepted, Authz, ChainRef, Delegation,
    DelegationFields, Denial, Document, Entry, EntryDecodeError, Evidence, EvidenceError,
    IngestError, IngestReport, SecretKey,
};
use canopy_tree::{
    Attestation, Effect, Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Outcome, Position,
    ReplicaId, SqliteStore, Store, VersionVector,
};
use proptest::prelude::*;

fn key(b: u8) -> SecretKey {
    SecretKey::from_bytes(&[b; 32])
}
fn rid(k: &SecretKey) -> ReplicaId {
    ReplicaId::from_bytes(*k.did().public_key())
}
fn n(b: u8) -> NodeId {
    NodeId::from_bytes([b; 16])
}
fn create(node: NodeId, parent: NodeId) -> OpKind {
    OpKind::Create {
        node,
        parent,
        position: Position::from_bytes(&[node.as_bytes()[0]]),
        payload: None,
    }
}
fn mv(node: NodeId, parent: NodeId) -> OpKind {
    OpKind::Move {
        node,
        parent,
        position: Position::from_bytes(&[node.as_bytes()[0]]),
    }
}
fn set(node: NodeId, b: &[u8]) -> OpKind {
    OpKind::SetPayload {
        node,
        payload: b.to_vec(),
    }
}

fn owner() -> SecretKey {
    key(1)
}
fn doc() -> Document {
    Document::new(owner().did(), [9; 16])
}
fn me() -> ReplicaId {
    rid(&key(200))
}

fn signed(
    k: &SecretKey,
    d: &Document,
    seq: u64,
    lamport: u64,
    kind: OpKind,
    chain: ChainRef,
) -> Op {
    let op = Op::new(OpId::new(rid(k), seq), Lamport::new(lamport), kind);
    sign_op(k, &d.id(), 20, &chain, op).unwrap()
}
fn op(k: &SecretKey, seq: u64, lamport: u64, kind: OpKind, chain: ChainRef) -> Op {
    signed(k, &doc(), seq, lamport, kind, chain)
}

fn grant(audience: &SecretKey, scope: NodeId, nonce: u8) -> Delegation {
    Delegation::issue_with_nonce(
        &owner(),
        DelegationFields {
            audience: audience.did(),
            subject: Some(owner().did()),
            command: Ability::Write.command(),
            policy: subtree_policy(scope.as_bytes(), &[]),
            expiration: None,
            not_before: None,
            meta: None,
        },
        vec![nonce; 12],
    )
}

/// The owner makes F and D under ROOT; Alice may write in F, Bob in D.
fn setup() -> (Vec<Vec<u8>>, ChainRef, ChainRef) {
    let root = chain_ref(&[]);
    let (alice, bob) = (key(2), key(3));
    let (ga, gb) = (grant(&alice, n(0xf), 1), grant(&bob, n(0xd), 2));
    let items = vec![
        op(&owner(), 1, 1, create(n(0xf), NodeId::ROOT), root).encode(),
        op(&owner(), 2, 2, create(n(0xd), NodeId::ROOT), root).encode(),
        Entry::Delegation(ga.clone()).encode(),
        Entry::Chain(vec![ga.cid()]).encode(),
        Entry::Delegation(gb.clone()).encode(),
        Entry::Chain(vec![gb.cid()]).encode(),
    ];
    (items, chain_ref(&[ga.cid()]), chain_ref(&[gb.cid()]))
}

fn status(r: &IngestReport, i: usize) -> String {
    match &r.items[i] {
        Ok(Accepted::Op { outcome, .. }) => match outcome {
            Outcome::Applied => "applied".into(),
            Outcome::Denied { reason } => format!("denied: {reason}"),
            o => format!("{o:?}"),
        },
        Ok(a) => format!("{a:?}"),
        Err(e) => format!("error: {e}"),
    }
}

type Snapshot = (
    BTreeMap<NodeId, (NodeId, Vec<u8>, Option<Vec<u8>>)>,
    BTreeMap<OpId, Effect>,
);

/// The visible tree (every node with its parent, position and payload) and the effect of every
/// logged op, by id.
fn snapshot<S: Store>(a: &Authz<S>) -> Snapshot {
    let t = a.tree();
    let mut nodes = BTreeMap::new();
    for b in 0..=255u8 {
        if let Some(p) = t.placement(n(b)).unwrap() {
            nodes.insert(
                n(b),
                (
                    p.parent,
                    p.position.as_bytes().to_vec(),
                    t.payload(n(b)).unwrap(),
                ),
            );
        }
    }
    let mut effects = BTreeMap::new();
    for (r, max) in t.store().frontier().unwrap().iter() {
        for s in 1..=max {
            let id = OpId::new(r, s);
            if let Some(e) = t.store().entry(id).unwrap() {
                effects.insert(id, e.effect);
            }
        }
    }
    (nodes, effects)
}

fn effect<S: Store>(a: &Authz<S>, id: OpId) -> Option<Effect> {
    a.tree().store().entry(id).unwrap().map(|e| e.effect)
}

/// Alice: a1 (create A under F), a2 in two versions (create X / create Y under F, same
/// Lamport time), a3 (payload on A).
struct Story {
    setup: Vec<Vec<u8>>,
    a1: Op,
    v1: Op,
    v2: Op,
    a3: Op,
}

fn story() -> Story {
    let (setup, ca, _) = setup();
    let alice = key(2);
    Story {
        setup,
        a1: op(&alice, 1, 10, create(n(0x21), n(0xf)), ca),
        v1: op(&alice, 2, 11, create(n(0x22), n(0xf)), ca),
        v2: op(&alice, 2, 11, create(n(0x23), n(0xf)), ca),
        a3: op(&alice, 3, 12, set(n(0x21), b"after"), ca),
    }
}

#[test]
fn replicas_that_logged_different_versions_converge() {
    let s = story();
    let evidence_of = |a: &Authz<MemoryStore>| -> Vec<Entry> {
        a.proof_entries()
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e, Entry::Equivocation(_)))
            .collect()
    };
    let mut snaps = Vec::new();
    let mut evidence = Vec::new();
    for (first, second) in [(&s.v1, &s.v2), (&s.v2, &s.v1)] {
        let mut a = Authz::new(MemoryStore::new(), doc(), me()).unwrap();
        a.ingest(&s.setup).unwrap();
        let r = a
            .ingest([s.a1.encode(), first.encode(), s.a3.encode()])
            .unwrap();
        assert_eq!(status(&r, 1), "applied");
        assert_eq!(status(&r, 2), "applied");
        // The other version: refused, and the pair is kept as evidence; a2 and a3 are
        // re-decided (denied), a1 stands.
        let r = a.ingest([second.encode()]).unwrap();
        match &r.items[0] {
            Err(IngestError::Equivocation(e)) => {
                assert_eq!((&e.first, &e.second), (first, second));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.equivocations, vec![s.v1.id()]);
        let redecided: Vec<OpId> = r.redecided.iter().map(|o| o.id).collect();
        assert!(redecided.contains(&s.v1.id()) && redecided.contains(&s.a3.id()));
        assert_eq!(a.state().equivocated_from(rid(&key(2)).as_bytes()), Some(2));
        assert_eq!(effect(&a, s.a1.id()), Some(Effect::Applied));
        assert_eq!(effect(&a, s.v1.id()), Some(Effect::Denied));
        assert_eq!(effect(&a, s.a3.id()), Some(Effect::Denied));
        assert_eq!(a.tree().placement(n(0x22)).unwrap(), None);
        assert_eq!(a.tree().placement(n(0x23)).unwrap(), None);
        // Later ops of Alice are denied with the equivocation reason.
        let a4 = op(
            &key(2),
            4,
            13,
            create(n(0x24), n(0xf)),
            s.a3.attestation()
                .map(|t| ChainRef::from_bytes(*t.chain()))
                .unwrap(),
        );
        let r = a.ingest([a4.encode()]).unwrap();
        assert!(matches!(
            &r.items[0],
            Ok(Accepted::Op {
                outcome: Outcome::Denied {
                    reason: Denial::Equivocation { seq: 2 }
                },
                ..
            })
        ));
        // Receiving the second version again changes nothing new.
        let r = a.ingest([second.encode()]).unwrap();
        assert!(matches!(&r.items[0], Err(IngestError::Equivocation(_))));
        assert!(r.equivocations.is_empty() && r.redecided.is_empty());
        evidence.push(evidence_of(&a));
        snaps.push(snapshot(&a));
    }
    assert_eq!(snaps[0], snaps[1]);
    // Both replicas hold the same evidence entry (canonical order).
    assert_eq!(evidence[0].len(), 1);
    assert_eq!(evidence[0][0].encode(), evidence[1][0].encode());

    // A third replica that only ever sees v1 and the evidence decides alike.
    let mut c = Authz::new(SqliteStore::open_in_memory().unwrap(), doc(), me()).unwrap();
    c.ingest(&s.setup).unwrap();
    c.ingest([s.a1.encode(), s.v1.encode(), s.a3.encode()])
        .unwrap();
    let a4 = op(
        &key(2),
        4,
        13,
        create(n(0x24), n(0xf)),
        s.a3.attestation()
            .map(|t| ChainRef::from_bytes(*t.chain()))
            .unwrap(),
    );
    let r = c.ingest([evidence[0][0].encode(), a4.encode()]).unwrap();
    assert_eq!(r.items[0], Ok(Accepted::Equivocation { id: s.v1.id() }));
    assert_eq!(r.equivocations, vec![s.v1.id()]);
    assert_eq!(snapshot(&c), snaps[0]);
}

#[test]
fn evidence_is_detected_against_held_and_parked_ops() {
    let s = story();
    // Held: the proofs are not known yet when v1 arrives; v2 then conflicts with the held op.
    let mut a = Authz::new(MemoryStore::new(), doc(), me()).unwrap();
    let r = a.ingest([s.v1.encode()]).unwrap();
    assert!(matches!(r.items[0], Ok(Accepted::Held { .. })));
    let r = a.ingest([s.v2.encode()]).unwrap();
    assert!(matches!(r.items[0], Err(IngestError::Equivocation(_))));
    assert_eq!(r.equivocations, vec![s.v1.id()]);
    let r = a.ingest(&s.setup).unwrap();
    assert!(r.items.iter().all(|i| i.is_ok()));
    // v1 was parked on a1 when released; a1 and a3 arrive now.
    a.ingest([s.a1.encode(), s.a3.encode()]).unwrap();
    assert_eq!(effect(&a, s.a1.id()), Some(Effect::Applied));
    assert_eq!(effect(&a, s.v1.id()), Some(Effect::Denied));
    assert_eq!(effect(&a, s.a3.id()), Some(Effect::Denied));
    let held_side = snapshot(&a);

    // Parked: v2 waits for a1 in the tree when v1 arrives.
    let mut b = Authz::new(SqliteStore::open_in_memory().unwrap(), doc(), me()).unwrap();
    b.ingest(&s.setup).unwrap();
    let r = b.ingest([s.v2.encode()]).unwrap();
    assert!(matches!(
        r.items[0],
        Ok(Accepted::Op {
            outcome: Outcome::Pending { .. },
            ..
        })
    ));
    let r = b.ingest([s.v1.encode()]).unwrap();
    assert!(matches!(r.items[0], Err(IngestError::Equivocation(_))));
    assert_eq!(r.equivocations, vec![s.v1.id()]);
    b.ingest([s.a3.encode(), s.a1.encode()]).unwrap();
    assert_eq!(snapshot(&b), held_side);

    // Both versions in one batch.
    let mut c = Authz::new(MemoryStore::new(), doc(), me()).unwrap();
    let mut items = s.setup.clone();
    items.extend([s.a1.encode(), s.v2.encode(), s.v1.encode(), s.a3.encode()]);
    let r = c.ingest(items).unwrap();
    assert!(matches!(r.items[8], Err(IngestError::Equivocation(_))));
    assert_eq!(r.equivocations, vec![s.v1.id()]);
    assert_eq!(snapshot(&c), held_side);
}

#[test]
fn a_reopened_replica_keeps_the_cutoff() {
    let s = story();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.sqlite");
    let mut a = Authz::new(SqliteStore::open(&path).unwrap(), doc(), me()).unwrap();
    a.ingest(&s.setup).unwrap();
    a.ingest([s.a1.encode(), s.v1.encode()]).unwrap();
    a.ingest([s.v2.encode()]).unwrap();
    let before = snapshot(&a);
    drop(a);
    let mut a = Authz::open(SqliteStore::open(&path).unwrap(), doc(), me()).unwrap();
    assert_eq!(a.state().equivocated_from(rid(&key(2)).as_bytes()), Some(2));
    assert_eq!(snapshot(&a), before);
    let r = a.ingest([s.a3.encode()]).unwrap();
    assert!(matches!(
        &r.items[0],
        Ok(Accepted::Op {
            outcome: Outcome::Denied {
                reason: Denial::Equivocation { seq: 2 }
            },
            ..
        })
    ));
    // The evidence is among the proof entries (after the genesis).
    let entries = a.proof_entries().unwrap();
    assert!(matches!(entries[0], Entry::Genesis(_)));
    assert!(entries
        .iter()
        .any(|e| matches!(e, Entry::Equivocation(ev) if ev.id() == s.v1.id())));
    // A lower seq lowers the cutoff; a higher one does not.
    let ca =
        s.a3.attestation()
            .map(|t| ChainRef::from_bytes(*t.chain()))
            .unwrap();
    let a1b = op(&key(2), 1, 10, create(n(0x29), n(0xf)), ca);
    let r = a.ingest([a1b.encode()]).unwrap();
    assert!(matches!(&r.items[0], Err(IngestError::Equivocation(_))));
    assert_eq!(r.equivocations, vec![s.a1.id()]);
    assert_eq!(effect(&a, s.a1.id()), Some(Effect::Denied));
    assert_eq!(a.tree().placement(n(0x21)).unwrap(), None);
    drop(a);
    let a = Authz::open_stored(SqliteStore::open(&path).unwrap(), me()).unwrap();
    assert_eq!(a.state().equivocated_from(rid(&key(2)).as_bytes()), Some(1));
}

/// `op` with its signature bytes changed.
fn forge(op: &Op) -> Op {
    let a = op.attestation().unwrap();
    let mut sig = *a.signature();
    sig[0] ^= 1;
    op.unsigned()
        .with_attestation(Attestation::new(*a.doc(), a.time(), *a.chain(), sig))
}

/// The equivocation entry of `a` and `b` in the order given (no canonical sorting).
fn raw_entry(a: &Op, b: &Op) -> Vec<u8> {
    let (a, b) = (a.encode(), b.encode());
    let mut out = vec![0x14];
    out.extend_from_slice(&(a.len() as u32).to_be_bytes());
    out.extend_from_slice(&a);
    out.extend_from_slice(&b);
    out
}

#[test]
fn bad_evidence_is_refused_and_changes_nothing() {
    let s = story();
    let other_doc = Document::new(owner().did(), [7; 16]);
    let ca =
        s.a3.attestation()
            .map(|t| ChainRef::from_bytes(*t.chain()))
            .unwrap();
    let alice = key(2);

    // Structural: refused by `Evidence::new` and by decoding.
    assert_eq!(
        Evidence::new(s.v1.clone(), s.v1.clone()),
        Err(EvidenceError::SameOp)
    );
    assert!(matches!(
        Evidence::new(s.v1.clone(), s.a3.clone()),
        Err(EvidenceError::DifferentIds { .. })
    ));
    assert_eq!(
        Evidence::new(s.v1.clone(), s.v2.unsigned()),
        Err(EvidenceError::Unsigned)
    );
    let elsewhere = signed(&alice, &other_doc, 2, 11, create(n(0x22), n(0xf)), ca);
    assert_eq!(
        Evidence::new(s.v1.clone(), elsewhere.clone()),
        Err(EvidenceError::DifferentDocuments)
    );
    let good = Evidence::new(s.v2.clone(), s.v1.clone()).unwrap();
    assert_eq!(good, Evidence::new(s.v1.clone(), s.v2.clone()).unwrap());
    let (lo, hi) = good.ops();
    let bytes = Entry::Equivocation(good.clone()).encode();
    assert_eq!(bytes, raw_entry(lo, hi));
    let decode_err = |b: &[u8]| Entry::decode(b).unwrap_err();
    assert_eq!(
        decode_err(&raw_entry(hi, lo)),
        EntryDecodeError::Evidence(EvidenceError::Order)
    );
    assert_eq!(
        decode_err(&raw_entry(&s.v1, &s.v1)),
        EntryDecodeError::Evidence(EvidenceError::SameOp)
    );
    assert_eq!(
        decode_err(&raw_entry(&s.v1, &s.a3)),
        EntryDecodeError::Evidence(EvidenceError::DifferentIds {
            a: s.v1.id(),
            b: s.a3.id()
        })
    );
    assert_eq!(
        decode_err(&raw_entry(&s.v1.unsigned(), &s.v2.unsigned())),
        EntryDecodeError::Evidence(EvidenceError::Unsigned)
    );
    assert_eq!(
        decode_err(&[0x14, 0, 0]),
        EntryDecodeError::Evidence(EvidenceError::Framing)
    );
    let mut past = bytes.clone();
    past[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode_err(&past),
        EntryDecodeError::Evidence(EvidenceError::Framing)
    );
    for cut in 1..bytes.len() {
        assert!(Entry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(Entry::decode(&long).is_err());

    // Decodes, but refused at ingest: a bad signature (either op), another document.
    let forged = Evidence::new(s.v1.clone(), forge(&s.v2)).unwrap();
    let forged_first = Evidence::new(forge(&s.v1), s.v2.clone()).unwrap();
    let ours = |d: &Document, seq, node| signed(&alice, d, seq, 11, create(n(node), n(0xf)), ca);
    let foreign = Evidence::new(ours(&other_doc, 2, 0x22), ours(&other_doc, 2, 0x23)).unwrap();
    for store in 0..2 {
        let run = |items: Vec<Vec<u8>>| -> (IngestReport, Snapshot, usize, Option<u64>) {
            let check = |a: &mut dyn FnMut(Vec<Vec<u8>>) -> IngestReport| a(items.clone());
            let _ = check;
            if store == 0 {
                let mut a = Authz::new(MemoryStore::new(), doc(), me()).unwrap();
                a.ingest(&s.setup).unwrap();
                a.ingest([s.a1.encode(), s.v1.encode(), s.a3.encode()])
                    .unwrap();
                let r = a.ingest(items).unwrap();
                let n = a.tree().store().doc_entries().unwrap().len();
                (
                    r,
                    snapshot(&a),
                    n,
                    a.state().equivocated_from(rid(&alice).as_bytes()),
                )
            } else {
                let mut a =
                    Authz::new(SqliteStore::open_in_memory().unwrap(), doc(), me()).unwrap();
                a.ingest(&s.setup).unwrap();
                a.ingest([s.a1.encode(), s.v1.encode(), s.a3.encode()])
                    .unwrap();
                let r = a.ingest(items).unwrap();
                let n = a.tree().store().doc_entries().unwrap().len();
                (
                    r,
                    snapshot(&a),
                    n,
                    a.state().equivocated_from(rid(&alice).as_bytes()),
                )
            }
        };
        let (_, clean, entries, cut) = run(vec![]);
        assert_eq!(cut, None);
        for (name, item, want) in [
            (
                "forged second",
                Entry::Equivocation(forged.clone()).encode(),
                "BadSignature",
            ),
            (
                "forged first",
                Entry::Equivocation(forged_first.clone()).encode(),
                "BadSignature",
            ),
            (
                "other document",
                Entry::Equivocation(foreign.clone()).encode(),
                "WrongDocument",
            ),
            ("same op twice", raw_entry(&s.v1, &s.v1), "Decode"),
            ("different ids", raw_entry(&s.v1, &s.a3), "Decode"),
            ("wrong order", raw_entry(hi, lo), "Decode"),
            // An op with a forged signature conflicting with a logged op is not evidence.
            (
                "forged conflicting op",
                forge(&s.v2).encode(),
                "BadSignature",
            ),
        ] {
            let (r, snap, n, cut) = run(vec![item]);
            let got = match &r.items[0] {
                Err(IngestError::BadSignature { .. }) => "BadSignature",
                Err(IngestError::WrongDocument { .. }) => "WrongDocument",
                Err(IngestError::Decode(_)) => "Decode",
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(got, want, "{name}");
            assert_eq!(snap, clean, "{name}: the tree changed");
            assert_eq!(n, entries, "{name}: an entry was kept");
            assert_eq!(cut, None, "{name}: a cutoff was set");
            assert!(
                r.equivocations.is_empty() && r.redecided.is_empty(),
                "{name}"
            );
        }
        // The genuine evidence, for contrast, does change things.
        let (r, snap, n, cut) = run(vec![Entry::Equivocation(good.clone()).encode()]);
        assert_eq!(r.items[0], Ok(Accepted::Equivocation { id: s.v1.id() }));
        assert_ne!(snap, clean);
        assert_eq!((n, cut), (entries + 1, Some(2)));
    }
}

// ---- random delivery orders ----

/// A random history with an equivocator: entries common to every replica, the two versions
/// of the equivocated op, and its evidence entry. Principals: the owner (everywhere), Alice
/// (in F), Bob (in D); `liar` equivocates at its `at`-th op.
struct Equivocated {
    common: Vec<Vec<u8>>,
    versions: [Vec<u8>; 2],
    evidence: Vec<u8>,
}

fn history(steps: &[(u8, u8, u8, u8)], liar: u8, at: usize) -> Equivocated {
    let (setup, ca, cb) = setup();
    let root = chain_ref(&[]);
    let (alice, bob) = (key(2), key(3));
    let principals = [(owner(), root), (alice, ca), (bob, cb)];
    let liar = liar as usize % 3;
    let mut all: Vec<(u8, u8, u8, u8)> = steps.to_vec();
    if !all.iter().any(|s| s.0 as usize % 3 == liar) {
        all.push((liar as u8, 0, 0, 0));
    }
    let liar_steps = all.iter().filter(|s| s.0 as usize % 3 == liar).count();
    let target = at % liar_steps;
    let mut seqs = [2u64, 0, 0];
    let mut nodes: Vec<u8> = vec![0xf, 0xd];
    let mut common = setup;
    let mut versions: Vec<Vec<u8>> = Vec::new();
    let mut evidence = Vec::new();
    let mut liar_ops = 0;
    for (i, &(who, kind, a, b)) in all.iter().enumerate() {
        let who = who as usize % 3;
        let (k, chain) = &principals[who];
        let node = n(nodes[a as usize % nodes.len()]);
        // Writers mostly write inside their own scope (so that their ops take effect).
        let parent = match (who, b % 4) {
            (1, 0..=2) => n(0xf),
            (2, 0..=2) => n(0xd),
            _ => n(nodes[b as usize % nodes.len()]),
        };
        let seen: VersionVector = principals
            .iter()
            .zip(seqs)
            .map(|((p, _), s)| (rid(p), s))
            .collect();
        let make = |kind: u8, salt: u8| match kind % 4 {
            0 => create(n(0x40 + 2 * i as u8 + salt), parent),
            1 => mv(node, if salt == 0 { parent } else { NodeId::ROOT }),
            2 => set(node, &[i as u8, salt]),
            _ => OpKind::Delete {
                node,
                seen: seen.clone(),
            },
        };
        seqs[who] += 1;
        let lamport = 10 + i as u64;
        let o = op(k, seqs[who], lamport, make(kind, 0), *chain);
        if kind % 4 == 0 {
            nodes.push(0x40 + 2 * i as u8);
        }
        if who == liar {
            liar_ops += 1;
            if liar_ops - 1 == target {
                // The second version: another op, same (replica, seq) and Lamport time.
                let other = op(k, seqs[who], lamport, make(kind.wrapping_add(1), 1), *chain);
                let e = Evidence::new(o.clone(), other.clone()).unwrap();
                evidence = Entry::Equivocation(e).encode();
                versions = vec![o.encode(), other.encode()];
                continue;
            }
        }
        common.push(o.encode());
    }
    let [v1, v2]: [Vec<u8>; 2] = versions.try_into().expect("the liar made an op");
    Equivocated {
        common,
        versions: [v1, v2],
        evidence,
    }
}

/// A deterministic shuffle and split into batches from `seed`.
fn deliver(items: &[Vec<u8>], seed: u64) -> Vec<Vec<Vec<u8>>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut order: Vec<Vec<u8>> = items.to_vec();
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut batches = Vec::new();
    let mut cur = Vec::new();
    for item in order {
        cur.push(item);
        if next() % 4 == 0 {
            batches.push(std::mem::take(&mut cur));
        }
    }
    batches.push(cur);
    batches
}

fn run<S: Store>(store: S, batches: Vec<Vec<Vec<u8>>>, reopen: Option<&dyn Fn() -> S>) -> Snapshot {
    let mut a = Authz::new(store, doc(), me()).unwrap();
    for batch in batches {
        a.ingest(batch).unwrap();
        if let Some(f) = reopen {
            drop(a);
            a = Authz::open(f(), doc(), me()).unwrap();
        }
    }
    assert_eq!(a.held_len(), 0);
    snapshot(&a)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(16),
        ..ProptestConfig::default()
    })]

    /// Replicas log either version, learn of the other one or only of the evidence, receive
    /// everything in random orders and batches (one reopening its SQLite file after every
    /// batch), and end with the same visible tree and the same effect per op id.
    #[test]
    fn equivocation_converges_whatever_version_each_replica_logged(
        steps in prop::collection::vec((0u8..3, 0u8..4, any::<u8>(), any::<u8>()), 1..16),
        liar in 0u8..3,
        at in 0usize..4,
        seeds in prop::collection::vec(any::<u64>(), 5),
    ) {
        let h = history(&steps, liar, at);
        let [v1, v2] = &h.versions;
        // What each replica receives besides the common entries.
        let extras: [Vec<Vec<u8>>; 5] = [
            vec![v1.clone(), v2.clone()],
            vec![v2.clone(), h.evidence.clone()],
            vec![v1.clone(), h.evidence.clone()],
            vec![v2.clone(), v1.clone()],
            vec![v1.clone()],
        ];
        let mut reference: Option<Snapshot> = None;
        for (k, (seed, extra)) in seeds.iter().zip(extras).enumerate() {
            let mut items = h.common.clone();
            items.extend(extra);
            let mut batches = deliver(&items, *seed);
            if k == 4 {
                // Everything else first, then the evidence alone: re-decides a settled log.
                batches.push(vec![h.evidence.clone()]);
            }
            let got = match k {
                0 => run(MemoryStore::new(), batches, None),
                1 => run(SqliteStore::open_in_memory().unwrap(), batches, None),
                2 => {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("doc.sqlite");
                    let open = || SqliteStore::open(&path).unwrap();
                    run(open(), batches, Some(&open))
                }
                _ => run(MemoryStore::new(), batches, None),
            };
            match &reference {
                None => reference = Some(got),
                Some(r) => prop_assert_eq!(&got, r, "replica {}", k),
            }
        }
    }
}
