//! Authorized apply: adversarial cases and delivery-order determinism, on MemoryStore and
//! SqliteStore (`spec/caps.md` §Authorized apply).

use std::collections::{BTreeMap, BTreeSet};

use canopy_caps::{
    chain_ref, sign_op, subtree_policy, Ability, Accepted, Authz, ChainRef, Delegation,
    DelegationFields, Denial, Document, Entry, IngestError, IngestReport, Revocation, SecretKey,
    Verdict,
};
use canopy_tree::{
    Effect, Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Outcome, Position, ReplicaId,
    SqliteStore, Store, VersionVector,
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
fn pos(b: u8) -> Position {
    Position::from_bytes(&[b])
}

struct World {
    owner: SecretKey,
    doc: Document,
}

impl World {
    fn new() -> Self {
        let owner = key(1);
        let doc = Document::new(owner.did(), [9; 16]);
        Self { owner, doc }
    }

    #[allow(clippy::too_many_arguments)]
    fn grant(
        &self,
        issuer: &SecretKey,
        audience: &SecretKey,
        ability: Ability,
        scope: NodeId,
        excluded: &[NodeId],
        exp: Option<u64>,
        nonce: u8,
    ) -> Delegation {
        let excluded: Vec<[u8; 16]> = excluded.iter().map(|x| *x.as_bytes()).collect();
        Delegation::issue_with_nonce(
            issuer,
            DelegationFields {
                audience: audience.did(),
                subject: Some(self.owner.did()),
                command: ability.command(),
                policy: subtree_policy(scope.as_bytes(), &excluded),
                expiration: exp,
                not_before: None,
                meta: None,
            },
            vec![nonce; 12],
        )
    }

    /// Entries publishing a chain (delegations, then the list) and its reference.
    fn publish(&self, chain: &[&Delegation]) -> (Vec<Vec<u8>>, ChainRef) {
        let mut out: Vec<Vec<u8>> = chain
            .iter()
            .map(|d| Entry::Delegation((*d).clone()).encode())
            .collect();
        let cids: Vec<_> = chain.iter().map(|d| d.cid()).collect();
        out.push(Entry::Chain(cids.clone()).encode());
        (out, chain_ref(&cids))
    }

    fn op(
        &self,
        k: &SecretKey,
        seq: u64,
        lamport: u64,
        kind: OpKind,
        time: u64,
        chain: ChainRef,
    ) -> Op {
        let op = Op::new(OpId::new(rid(k), seq), Lamport::new(lamport), kind);
        sign_op(k, &self.doc.id(), time, &chain, op).unwrap()
    }
}

fn create(node: NodeId, parent: NodeId) -> OpKind {
    OpKind::Create {
        node,
        parent,
        position: pos(node.as_bytes()[0]),
        payload: None,
    }
}
fn mv(node: NodeId, parent: NodeId) -> OpKind {
    OpKind::Move {
        node,
        parent,
        position: pos(node.as_bytes()[0]),
    }
}
fn set(node: NodeId, b: &[u8]) -> OpKind {
    OpKind::SetPayload {
        node,
        payload: b.to_vec(),
    }
}

fn outcome(r: &IngestReport, i: usize) -> &Result<Accepted, IngestError> {
    &r.items[i]
}
fn applied(r: &IngestReport, i: usize) -> bool {
    matches!(
        outcome(r, i),
        Ok(Accepted::Op {
            outcome: Outcome::Applied,
            ..
        })
    )
}
fn denied_class(r: &IngestReport, i: usize) -> Option<&'static str> {
    match outcome(r, i) {
        Ok(Accepted::Op {
            outcome:
                Outcome::Denied {
                    reason: Denial::Chain { error, .. },
                },
            ..
        }) => Some(error.class()),
        _ => None,
    }
}

type Ingest = Box<dyn FnMut(Vec<Vec<u8>>) -> IngestReport>;
type Mk<'a> = &'a dyn Fn() -> Ingest;

/// Runs a test body on a fresh MemoryStore and a fresh in-memory SqliteStore.
fn both(test: &dyn Fn(Mk<'_>)) {
    let w = World::new();
    let doc = w.doc;
    let replica = rid(&key(200));
    test(&move || {
        let mut a = Authz::new(MemoryStore::new(), doc, replica).unwrap();
        Box::new(move |items| a.ingest(items).unwrap())
    });
    test(&move || {
        let mut a = Authz::new(SqliteStore::open_in_memory().unwrap(), doc, replica).unwrap();
        Box::new(move |items| a.ingest(items).unwrap())
    });
}

/// Owner makes F and X under ROOT; Alice may write inside F except F/secret (S).
fn setup(w: &World, alice: &SecretKey) -> (Vec<Vec<u8>>, ChainRef, Delegation) {
    let root = chain_ref(&[]);
    let mut items = vec![
        w.op(&w.owner, 1, 1, create(n(0xf), NodeId::ROOT), 10, root)
            .encode(),
        w.op(&w.owner, 2, 2, create(n(0x5), n(0xf)), 10, root)
            .encode(),
        w.op(&w.owner, 3, 3, create(n(0xa), NodeId::ROOT), 10, root)
            .encode(),
        w.op(&w.owner, 4, 4, create(n(0xb), n(0xa)), 10, root)
            .encode(),
    ];
    let g = w.grant(
        &w.owner,
        alice,
        Ability::Write,
        n(0xf),
        &[n(0x5)],
        Some(1000),
        1,
    );
    let (pubs, chain) = w.publish(&[&g]);
    items.extend(pubs);
    (items, chain, g)
}

#[test]
fn scoped_writes_forgery_and_document_binding() {
    both(&|mk: Mk<'_>| {
        let w = World::new();
        let alice = key(2);
        let mut ingest = mk();
        let (items, chain, _) = setup(&w, &alice);
        let r = ingest(items);
        assert!(r.items.iter().all(|i| i.is_ok()), "{r:?}");
        let ok = w.op(&alice, 1, 10, create(n(0x21), n(0xf)), 20, chain);
        let outside = w.op(&alice, 2, 11, create(n(0x22), n(0xa)), 20, chain);
        let excluded = w.op(&alice, 3, 12, create(n(0x23), n(0x5)), 20, chain);
        let mut forged = w.op(&alice, 4, 13, set(n(0x21), b"x"), 20, chain).encode();
        let last = forged.len() - 1;
        forged[last] ^= 1; // the payload changed after signing
        let mut bad_sig = w.op(&alice, 4, 13, set(n(0x21), b"y"), 20, chain).encode();
        bad_sig[1 + 32 + 8 + 32] ^= 1;
        let other_doc = Document::new(w.owner.did(), [8; 16]);
        let replay = sign_op(
            &alice,
            &other_doc.id(),
            20,
            &chain,
            Op::new(
                OpId::new(rid(&alice), 4),
                Lamport::new(13),
                set(n(0x21), b"z"),
            ),
        )
        .unwrap();
        let unsigned = Op::new(
            OpId::new(rid(&alice), 4),
            Lamport::new(13),
            set(n(0x21), b"u"),
        );
        let r = ingest(vec![
            ok.encode(),
            outside.encode(),
            excluded.encode(),
            forged,
            bad_sig,
            replay.encode(),
            unsigned.encode(),
            vec![0x77, 1, 2],
        ]);
        assert!(applied(&r, 0), "{:?}", r.items[0]);
        assert_eq!(denied_class(&r, 1), Some("MatchError"));
        assert_eq!(denied_class(&r, 2), Some("MatchError"));
        assert!(matches!(
            outcome(&r, 3),
            Err(IngestError::BadSignature { .. })
        ));
        assert!(matches!(
            outcome(&r, 4),
            Err(IngestError::BadSignature { .. })
        ));
        assert!(matches!(
            outcome(&r, 5),
            Err(IngestError::WrongDocument { .. })
        ));
        assert!(matches!(outcome(&r, 6), Err(IngestError::Unsigned { .. })));
        assert!(matches!(outcome(&r, 7), Err(IngestError::Decode(_))));
        // The rejected ops left seq 4 free: the genuine op still applies.
        let genuine = w.op(&alice, 4, 13, set(n(0x21), b"ok"), 20, chain);
        let r = ingest(vec![genuine.encode()]);
        assert!(applied(&r, 0), "{:?}", r.items[0]);
    });
}

#[test]
fn moves_across_scope_boundaries() {
    both(&|mk: Mk<'_>| {
        let w = World::new();
        let alice = key(2);
        let mut ingest = mk();
        let (items, chain, _) = setup(&w, &alice);
        ingest(items);
        let root = chain_ref(&[]);
        let r = ingest(vec![
            // Alice makes a node in F, then tries to move it out to X: denied.
            w.op(&alice, 1, 10, create(n(0x31), n(0xf)), 20, chain)
                .encode(),
            w.op(&alice, 2, 11, mv(n(0x31), n(0xa)), 20, chain).encode(),
            // Moving a foreign subtree (X/B) into F: denied (old parent not writable).
            w.op(&alice, 3, 12, mv(n(0xb), n(0xf)), 20, chain).encode(),
            // The owner moves Alice's node out of F; Alice writes it afterwards: denied.
            w.op(&w.owner, 5, 13, mv(n(0x31), n(0xa)), 20, root)
                .encode(),
            w.op(&alice, 4, 14, set(n(0x31), b"late"), 20, chain)
                .encode(),
            // Moving within F is fine.
            w.op(&alice, 5, 15, create(n(0x32), n(0xf)), 20, chain)
                .encode(),
            w.op(&alice, 6, 16, mv(n(0x32), n(0xf)), 20, chain).encode(),
        ]);
        assert!(applied(&r, 0));
        assert_eq!(denied_class(&r, 1), Some("MatchError"));
        assert_eq!(denied_class(&r, 2), Some("MatchError"));
        assert!(applied(&r, 3));
        assert_eq!(denied_class(&r, 4), Some("MatchError"));
        assert!(applied(&r, 5) && applied(&r, 6));
    });
}

#[test]
fn attenuation_widening_expiry_depth_and_held_proofs() {
    both(&|mk: Mk<'_>| {
        let w = World::new();
        let (alice, bob, carol) = (key(2), key(3), key(4));
        let mut ingest = mk();
        let (items, a_chain, g) = setup(&w, &alice);
        ingest(items);
        // Alice creates F/D; re-delegates only D to Bob; and "widens" to ROOT for Carol.
        ingest(vec![w
            .op(&alice, 1, 10, create(n(0xd), n(0xf)), 20, a_chain)
            .encode()]);
        let to_bob = w.grant(&alice, &bob, Ability::WriteCreate, n(0xd), &[], None, 2);
        let widened = w.grant(&alice, &carol, Ability::Write, NodeId::ROOT, &[], None, 3);
        let (bob_pub, bob_chain) = w.publish(&[&g, &to_bob]);
        let (carol_pub, carol_chain) = w.publish(&[&g, &widened]);
        // Bob's op arrives before the proofs: held, never applied unverified.
        let bob_in = w.op(&bob, 1, 20, create(n(0x41), n(0xd)), 30, bob_chain);
        let r = ingest(vec![bob_in.encode()]);
        assert!(
            matches!(outcome(&r, 0), Ok(Accepted::Held { .. })),
            "{:?}",
            r.items
        );
        let r = ingest(bob_pub);
        assert_eq!(r.released.len(), 1);
        assert_eq!(r.released[0].outcome, Outcome::Applied);
        let bob_out = w.op(&bob, 2, 21, create(n(0x42), n(0xf)), 30, bob_chain);
        let bob_move = w.op(&bob, 3, 22, mv(n(0x41), n(0xd)), 30, bob_chain);
        let mut items = carol_pub;
        let k = items.len();
        items.push(
            w.op(&carol, 1, 23, create(n(0x43), n(0xa)), 30, carol_chain)
                .encode(),
        );
        items.push(
            w.op(&carol, 2, 24, create(n(0x44), n(0xf)), 30, carol_chain)
                .encode(),
        );
        items.push(bob_out.encode());
        items.push(bob_move.encode());
        // Expired: Alice's grant ends at 1000.
        items.push(
            w.op(&alice, 2, 25, create(n(0x45), n(0xf)), 1000, a_chain)
                .encode(),
        );
        items.push(
            w.op(&alice, 3, 26, create(n(0x46), n(0xf)), 999, a_chain)
                .encode(),
        );
        let r = ingest(items);
        assert_eq!(denied_class(&r, k), Some("MatchError"), "widened scope");
        assert!(
            applied(&r, k + 1),
            "attenuated use inside the original scope"
        );
        assert_eq!(denied_class(&r, k + 2), Some("MatchError"));
        assert_eq!(
            denied_class(&r, k + 3),
            Some("InvalidClaim"),
            "create-only grant"
        );
        assert_eq!(denied_class(&r, k + 4), Some("Expired"));
        assert!(applied(&r, k + 5));

        // A chain deeper than allowed.
        let keys: Vec<SecretKey> = (50..60).map(key).collect();
        let mut chain = vec![w.grant(
            &w.owner,
            &keys[0],
            Ability::Write,
            NodeId::ROOT,
            &[],
            None,
            9,
        )];
        for i in 1..keys.len() {
            chain.push(w.grant(
                &keys[i - 1],
                &keys[i],
                Ability::Write,
                NodeId::ROOT,
                &[],
                None,
                9,
            ));
        }
        let refs: Vec<&Delegation> = chain.iter().collect();
        let (mut items, deep) = w.publish(&refs);
        let last = keys.last().unwrap();
        items.push(
            w.op(last, 1, 40, create(n(0x47), NodeId::ROOT), 30, deep)
                .encode(),
        );
        let r = ingest(items);
        assert_eq!(denied_class(&r, r.items.len() - 1), Some("TooDeep"));
    });
}

#[test]
fn revocation_cuts_off_by_seq_whatever_the_order() {
    let w = World::new();
    let alice = key(2);
    let (setup_items, chain, g) = setup(&w, &alice);
    let ops: Vec<Vec<u8>> = (1..=4)
        .map(|s| {
            w.op(
                &alice,
                s,
                10 + s,
                create(n(0x50 + s as u8), n(0xf)),
                20,
                chain,
            )
            .encode()
        })
        .collect();
    let rev = Revocation::issue(
        &w.owner,
        g.cid(),
        BTreeMap::from([(*alice.did().public_key(), 2)]),
        BTreeSet::new(),
    );
    let rev = Entry::Revocation(rev).encode();
    let check = |batches: Vec<Vec<Vec<u8>>>, sqlite: bool| {
        if sqlite {
            run(SqliteStore::open_in_memory().unwrap(), w.doc, batches)
        } else {
            run(MemoryStore::new(), w.doc, batches)
        }
    };
    let mut first = setup_items.clone();
    first.extend(ops.clone());
    let (after, redecided) = check(vec![first.clone(), vec![rev.clone()]], false);
    // Ops 3 and 4 were applied, then re-decided as denied.
    assert_eq!(redecided.len(), 2, "{redecided:?}");
    let mut before = setup_items.clone();
    before.push(rev.clone());
    let (rev_first, _) = check(vec![before, ops.clone()], true);
    assert_eq!(after, rev_first);
    let mut all = vec![rev];
    all.extend(ops.iter().rev().cloned());
    all.extend(setup_items.iter().rev().cloned());
    let (reversed, _) = check(vec![all], false);
    assert_eq!(after, reversed);
    let live: Vec<_> = after.0.keys().copied().collect();
    assert!(live.contains(&n(0x51)) && live.contains(&n(0x52)));
    assert!(!live.contains(&n(0x53)) && !live.contains(&n(0x54)));
}

#[test]
fn equivocation_is_reported_with_both_ops() {
    both(&|mk: Mk<'_>| {
        let w = World::new();
        let alice = key(2);
        let mut ingest = mk();
        let (items, chain, _) = setup(&w, &alice);
        ingest(items);
        let one = w.op(&alice, 1, 10, create(n(0x61), n(0xf)), 20, chain);
        let two = w.op(&alice, 1, 10, create(n(0x62), n(0xf)), 20, chain);
        let r = ingest(vec![one.encode(), one.encode()]);
        assert!(applied(&r, 0));
        assert!(matches!(
            outcome(&r, 1),
            Ok(Accepted::Op {
                outcome: Outcome::Duplicate,
                ..
            })
        ));
        let r = ingest(vec![two.encode()]);
        match outcome(&r, 0) {
            Err(IngestError::Equivocation(e)) => {
                assert_eq!(e.first, one);
                assert_eq!(e.second, two);
            }
            other => panic!("{other:?}"),
        }
        // Same op with another signed time is also equivocation.
        let three = w.op(&alice, 1, 10, create(n(0x61), n(0xf)), 21, chain);
        let r = ingest(vec![three.encode()]);
        assert!(matches!(outcome(&r, 0), Err(IngestError::Equivocation(_))));
    });
}

#[test]
fn reads_are_filtered_by_the_same_authorize() {
    let w = World::new();
    let (alice, reader) = (key(2), key(5));
    let mut a = Authz::new(MemoryStore::new(), w.doc, rid(&key(200))).unwrap();
    let (items, _, _) = setup(&w, &alice);
    a.ingest(items).unwrap();
    let g = w.grant(&w.owner, &reader, Ability::Read, n(0xf), &[n(0x5)], None, 7);
    let (pubs, chain) = w.publish(&[&g]);
    a.ingest(pubs).unwrap();
    let can = |node| {
        a.authorize_read(&reader.did(), &chain, Ability::ReadPayload, node, 50)
            .unwrap()
    };
    assert_eq!(can(n(0xf)), Verdict::Allow);
    assert!(matches!(can(n(0x5)), Verdict::Deny { .. }));
    assert!(matches!(can(n(0xa)), Verdict::Deny { .. }));
    let unknown = chain_ref(&[canopy_caps::cid_of(b"nope")]);
    assert!(matches!(
        a.authorize_read(&reader.did(), &unknown, Ability::Read, n(0xf), 50)
            .unwrap(),
        Verdict::Unknown { .. }
    ));
}

#[test]
fn local_ops_are_signed_and_decided() {
    let w = World::new();
    let alice = key(2);
    let mut owner_side = Authz::new(MemoryStore::new(), w.doc, rid(&w.owner)).unwrap();
    let (items, chain, _) = setup(&w, &alice);
    owner_side.ingest(items.clone()).unwrap();
    let mut alice_side = Authz::new(MemoryStore::new(), w.doc, rid(&alice)).unwrap();
    alice_side.ingest(items).unwrap();
    alice_side.state_mut().set_signer(key(2), chain, 100);
    let made = alice_side
        .tree_mut()
        .create(n(0xf), canopy_tree::Place::Last, Some(b"hi".to_vec()))
        .unwrap();
    assert_eq!(made.outcome, Outcome::Applied);
    let outside = alice_side
        .tree_mut()
        .create(n(0xa), canopy_tree::Place::Last, None)
        .unwrap();
    assert!(matches!(outside.outcome, Outcome::Denied { .. }));
    let r = owner_side
        .ingest([made.op.encode(), outside.op.encode()])
        .unwrap();
    assert!(applied(&r, 0));
    assert_eq!(denied_class(&r, 1), Some("MatchError"));
    assert_eq!(snapshot(&owner_side), snapshot(&alice_side));
}

// ---- determinism under random delivery ----

fn run<S: Store>(
    store: S,
    doc: Document,
    batches: Vec<Vec<Vec<u8>>>,
) -> (Snapshot, Vec<canopy_tree::OpReport<Denial>>) {
    let mut a = Authz::new(store, doc, rid(&key(200))).unwrap();
    let mut redecided = Vec::new();
    for batch in batches {
        let r = a.ingest(batch).unwrap();
        redecided.extend(r.redecided);
    }
    assert_eq!(a.held_len(), 0);
    (snapshot(&a), redecided)
}

type Snapshot = (
    BTreeMap<NodeId, (NodeId, Vec<u8>, Option<Vec<u8>>)>,
    BTreeMap<OpId, Effect>,
);

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
    let frontier = t.store().frontier().unwrap();
    for (r, max) in frontier.iter() {
        for s in 1..=max {
            let id = OpId::new(r, s);
            if let Some(e) = t.store().entry(id).unwrap() {
                effects.insert(id, e.effect);
            }
        }
    }
    (nodes, effects)
}

/// Every entry of a random multi-principal history, in causal (generation) order.
fn history(steps: &[(u8, u8, u8, u8, u64)], cutoff: Option<u64>) -> Vec<Vec<u8>> {
    let w = World::new();
    let (alice, bob, carol) = (key(2), key(3), key(4));
    let (mut items, a_chain, g) = setup(&w, &alice);
    let root = chain_ref(&[]);
    // F/D for Bob (attenuated from Alice), G for Carol (expires at 500).
    items.push(
        w.op(&w.owner, 5, 5, create(n(0xd), n(0xf)), 10, root)
            .encode(),
    );
    items.push(
        w.op(&w.owner, 6, 6, create(n(0xc), NodeId::ROOT), 10, root)
            .encode(),
    );
    let to_bob = w.grant(&alice, &bob, Ability::Write, n(0xd), &[], None, 2);
    let to_carol = w.grant(&w.owner, &carol, Ability::Write, n(0xc), &[], Some(500), 3);
    let (p, b_chain) = w.publish(&[&g, &to_bob]);
    items.extend(p);
    let (p, c_chain) = w.publish(&[&to_carol]);
    items.extend(p);
    if let Some(c) = cutoff {
        let rev = Revocation::issue(
            &alice,
            to_bob.cid(),
            BTreeMap::from([(*bob.did().public_key(), c)]),
            BTreeSet::new(),
        );
        items.push(Entry::Revocation(rev).encode());
    }
    let principals = [
        (&w.owner, root),
        (&alice, a_chain),
        (&bob, b_chain),
        (&carol, c_chain),
    ];
    let mut seqs = [6u64, 0, 0, 0];
    // Nodes with the scope they were made in; principals mostly pick inside their own scope.
    let mut nodes: Vec<(u8, char)> = vec![
        (0xf, 'F'),
        (0x5, 'S'),
        (0xa, 'X'),
        (0xb, 'X'),
        (0xd, 'D'),
        (0xc, 'C'),
    ];
    let scopes = ["FSDXC", "FD", "D", "C"];
    for (i, &(who, kind, a, b, time)) in steps.iter().enumerate() {
        let who = who as usize % 4;
        let (k, chain) = principals[who];
        let pick = |x: u8| {
            let mine: Vec<(u8, char)> = nodes
                .iter()
                .copied()
                .filter(|(_, t)| scopes[who].contains(*t))
                .collect();
            if x % 4 != 0 && !mine.is_empty() {
                mine[x as usize % mine.len()]
            } else {
                nodes[x as usize % nodes.len()]
            }
        };
        let node = n(pick(a).0);
        let (parent, tag) = if b % 7 == 0 {
            (NodeId::ROOT, 'R')
        } else {
            let (p, t) = pick(b);
            (n(p), t)
        };
        let kind = match kind % 4 {
            0 => {
                let fresh = 0x60 + i as u8;
                nodes.push((fresh, tag));
                create(n(fresh), parent)
            }
            1 => mv(node, parent),
            2 => set(node, &[i as u8]),
            _ => {
                let seen: VersionVector = principals
                    .iter()
                    .zip(seqs)
                    .map(|((p, _), s)| (rid(p), s))
                    .collect();
                OpKind::Delete { node, seen }
            }
        };
        seqs[who] += 1;
        items.push(
            w.op(k, seqs[who], 10 + i as u64, kind, time, chain)
                .encode(),
        );
    }
    items
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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_delivery_order_gives_the_same_tree_and_decisions(
        steps in prop::collection::vec((0u8..4, 0u8..4, any::<u8>(), any::<u8>(), 0u64..800), 1..24),
        cutoff in prop::option::of(0u64..6),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let w = World::new();
        let items = history(&steps, cutoff);
        let (reference, _) = run(MemoryStore::new(), w.doc, vec![items.clone()]);
        for (k, seed) in seeds.iter().enumerate() {
            let batches = deliver(&items, *seed);
            let (got, _) = if k == 0 {
                run(SqliteStore::open_in_memory().unwrap(), w.doc, batches)
            } else {
                run(MemoryStore::new(), w.doc, batches)
            };
            prop_assert_eq!(&got, &reference);
        }
        // Every random op was decided (logged), whatever its verdict.
        prop_assert_eq!(reference.1.len(), items.len() - items.iter().filter(|i| i[0] != 2).count());
    }
}

// ---- spec vectors (spec/vectors/signed_ops.json) ----

fn vectors() -> serde_json::Value {
    use serde_json::json;
    let w = World::new();
    let alice = key(2);
    let doc = w.doc;
    let g = w.grant(
        &w.owner,
        &alice,
        Ability::Write,
        n(0xf),
        &[n(0x5)],
        Some(1000),
        1,
    );
    let chain = chain_ref(&[g.cid()]);
    let ab = [canopy_caps::cid_of(b"a"), canopy_caps::cid_of(b"b")];
    let signed = |name: &str, k: &SecretKey, seed: u8, op: Op, time: u64, chain: ChainRef| {
        let s = sign_op(k, &doc.id(), time, &chain, op.clone()).unwrap();
        json!({
            "name": name,
            "secret": hex::encode([seed; 32]),
            "doc": doc.id().to_string(),
            "time": time,
            "chain": chain.to_string(),
            "op_hex": hex::encode(op.encode()),
            "signing_input_hex": hex::encode(canopy_caps::signing_input(&doc.id(), time, &chain, &op)),
            "signed_hex": hex::encode(s.encode()),
        })
    };
    let o = |k: &SecretKey, seq, l, kind| Op::new(OpId::new(rid(k), seq), Lamport::new(l), kind);
    let good = w.op(&alice, 1, 3, set(n(0xf), b"x"), 5, chain).encode();
    json!({
        "documents": [
            {"owner": w.owner.did().to_string(), "nonce": hex::encode([9u8; 16]), "id": doc.id().to_string()},
        ],
        "chains": [
            {"cids": [], "ref": chain_ref(&[]).to_string()},
            {"cids": ab.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "ref": chain_ref(&ab).to_string()},
        ],
        "signed": [
            signed("owner creates under ROOT (empty chain)", &w.owner, 1, o(&w.owner, 1, 1, create(n(0xf), NodeId::ROOT)), 1_700_000_000, chain_ref(&[])),
            signed("alice sets a payload under a one-delegation chain", &alice, 2, o(&alice, 1, 3, set(n(0xf), b"x")), 5, chain),
            signed("alice deletes with a seen vector", &alice, 2, o(&alice, 2, 4, OpKind::Delete { node: n(0xf), seen: [(rid(&w.owner), 1)].into_iter().collect() }), 6, chain),
        ],
        "invalid_entries": [
            {"name": "empty", "hex": "", "error": "Empty"},
            {"name": "unknown tag", "hex": "7f00", "error": "UnknownTag"},
            {"name": "signed op truncated in the header", "hex": hex::encode(&good[..50]), "error": "Op"},
            {"name": "signed op truncated in the body", "hex": hex::encode(&good[..good.len() - 1]), "error": "Op"},
            {"name": "chain list with a trailing byte", "hex": hex::encode([Entry::Chain(ab.to_vec()).encode(), vec![0]].concat()), "error": "Chain"},
            {"name": "chain list count past the end", "hex": "1102", "error": "Chain"},
            {"name": "delegation that is not DAG-CBOR", "hex": "10ff00", "error": "Delegation"},
        ],
    })
}

fn entry_error_name(e: &canopy_caps::EntryDecodeError) -> &'static str {
    use canopy_caps::EntryDecodeError as E;
    match e {
        E::Empty => "Empty",
        E::TooLarge { .. } => "TooLarge",
        E::UnknownTag { .. } => "UnknownTag",
        E::Op(_) => "Op",
        E::Delegation(_) => "Delegation",
        E::Revocation(_) => "Revocation",
        E::Chain => "Chain",
        _ => "other",
    }
}

#[test]
fn signed_op_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../spec/vectors/signed_ops.json"
    );
    let expected = vectors();
    if std::env::var_os("CANOPY_WRITE_VECTORS").is_some() {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&expected).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file, expected, "spec/vectors/signed_ops.json is stale");
    // Independent checks of the file's claims.
    for d in file["documents"].as_array().unwrap() {
        let owner: canopy_caps::Did = d["owner"].as_str().unwrap().parse().unwrap();
        let mut nonce = [0u8; 16];
        hex::decode_to_slice(d["nonce"].as_str().unwrap(), &mut nonce).unwrap();
        assert_eq!(
            Document::new(owner, nonce).id().to_string(),
            d["id"].as_str().unwrap()
        );
    }
    for c in file["signed"].as_array().unwrap() {
        let signed = hex::decode(c["signed_hex"].as_str().unwrap()).unwrap();
        let input = hex::decode(c["signing_input_hex"].as_str().unwrap()).unwrap();
        let op = Op::decode(&signed).unwrap();
        let a = op.attestation().unwrap();
        assert_eq!(
            hex::encode(op.unsigned().encode()),
            c["op_hex"].as_str().unwrap()
        );
        assert_eq!(&signed[1 + 32 + 8 + 32 + 64..], &input[12 + 32 + 8 + 32..]);
        let vk = ed25519_dalek::VerifyingKey::from_bytes(op.id().replica().as_bytes()).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(a.signature());
        assert!(vk.verify_strict(&input, &sig).is_ok(), "{}", c["name"]);
    }
    for c in file["invalid_entries"].as_array().unwrap() {
        let bytes = hex::decode(c["hex"].as_str().unwrap()).unwrap();
        let err = Entry::decode(&bytes).expect_err(c["name"].as_str().unwrap());
        assert_eq!(
            entry_error_name(&err),
            c["error"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
}

#[test]
fn cached_allows_respect_time_bounds_and_revocations() {
    let w = World::new();
    let alice = key(2);
    let g = Delegation::issue_with_nonce(
        &w.owner,
        DelegationFields {
            audience: alice.did(),
            subject: Some(w.owner.did()),
            command: Ability::Write.command(),
            policy: subtree_policy(n(0xf).as_bytes(), &[]),
            expiration: Some(200),
            not_before: Some(100),
            meta: None,
        },
        vec![4; 12],
    );
    let mut a = Authz::new(MemoryStore::new(), w.doc, rid(&key(200))).unwrap();
    let (pubs, chain) = w.publish(&[&g]);
    a.ingest(pubs).unwrap();
    let ask = |a: &Authz<MemoryStore>, t: u64, seq: u64| {
        let op = canopy_caps::OpRef {
            replica: *alice.did().public_key(),
            seq,
        };
        a.state().authorize(
            &alice.did(),
            &chain,
            Ability::WriteCreate,
            n(0xf),
            &[NodeId::ROOT],
            t,
            Some(op),
        )
    };
    let class = |v: Verdict| match v {
        Verdict::Allow => "Allow",
        Verdict::Deny {
            reason: Denial::Chain { error, .. },
        } => error.class(),
        _ => "other",
    };
    // Warm the cache inside the window, then probe its edges: same answers as a cold check.
    for (t, want) in [
        (150, "Allow"),
        (99, "TooEarly"),
        (100, "Allow"),
        (199, "Allow"),
        (200, "Expired"),
    ] {
        assert_eq!(class(ask(&a, t, 1)), want, "t = {t}");
    }
    // A revocation naming the delegation bypasses the cache: seq past the cutoff is denied.
    let rev = Revocation::issue(
        &w.owner,
        g.cid(),
        BTreeMap::from([(*alice.did().public_key(), 1)]),
        BTreeSet::new(),
    );
    a.ingest([Entry::Revocation(rev).encode()]).unwrap();
    assert_eq!(class(ask(&a, 150, 1)), "Allow");
    assert_eq!(class(ask(&a, 150, 2)), "Revoked");
}

#[test]
fn held_ops_are_checked_for_equivocation_and_weak_keys_are_refused() {
    both(&|mk: Mk<'_>| {
        let w = World::new();
        let alice = key(2);
        let mut ingest = mk();
        let (items, a_chain, _) = setup(&w, &alice);
        // Only the owner's ops: Alice's chain is not published yet.
        ingest(items.into_iter().take(4).collect());
        let held = w.op(&alice, 1, 10, create(n(0x71), n(0xf)), 20, a_chain);
        let twin = w.op(&alice, 1, 10, create(n(0x72), n(0xf)), 20, a_chain);
        let r = ingest(vec![held.encode(), held.encode(), twin.encode()]);
        assert!(matches!(outcome(&r, 0), Ok(Accepted::Held { .. })));
        assert!(matches!(
            outcome(&r, 1),
            Ok(Accepted::Op {
                outcome: Outcome::Duplicate,
                ..
            })
        ));
        match outcome(&r, 2) {
            Err(IngestError::Equivocation(e)) => assert_eq!((&e.first, &e.second), (&held, &twin)),
            other => panic!("{other:?}"),
        }
        // The owner's own op is logged; a twin under an unknown chain is caught before holding.
        let root = chain_ref(&[]);
        let logged = w.op(&w.owner, 5, 11, create(n(0x73), NodeId::ROOT), 20, root);
        ingest(vec![logged.encode()]);
        let unknown = chain_ref(&[canopy_caps::cid_of(b"unpublished")]);
        let sneaky = w.op(&w.owner, 5, 11, create(n(0x73), NodeId::ROOT), 20, unknown);
        let r = ingest(vec![sneaky.encode()]);
        assert!(matches!(outcome(&r, 0), Err(IngestError::Equivocation(_))));

        // A small-order "key" (the identity point) would verify forged signatures: refused.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let forged = Op::new(
            OpId::new(ReplicaId::from_bytes(weak), 1),
            Lamport::new(1),
            create(n(0x74), NodeId::ROOT),
        )
        .with_attestation(canopy_tree::Attestation::new(
            *w.doc.id().as_bytes(),
            20,
            *root.as_bytes(),
            [0; 64],
        ));
        let r = ingest(vec![forged.encode()]);
        assert!(matches!(
            outcome(&r, 0),
            Err(IngestError::BadReplicaKey { .. })
        ));
    });
}

#[test]
fn malformed_and_badly_signed_delegations_are_typed() {
    let w = World::new();
    let mut a = Authz::new(MemoryStore::new(), w.doc, rid(&key(200))).unwrap();
    let g = w.grant(&w.owner, &key(2), Ability::Write, n(0xf), &[], None, 1);
    let mut tampered = Entry::Delegation(g.clone()).encode();
    let at = tampered.len() - 10; // inside the signed payload
    tampered[at] ^= 1;
    let r = a.ingest([vec![0x10, 0xff], tampered]).unwrap();
    assert!(matches!(
        r.items[0],
        Err(IngestError::MalformedDelegation { .. })
    ));
    assert!(matches!(
        r.items[1],
        Err(IngestError::BadDelegation { .. } | IngestError::MalformedDelegation { .. })
    ));
    assert!(a.state().proofs().is_empty());
}

// ---- persistence: proofs and held ops survive a reopen (spec/caps.md §Persistence) ----

/// Ingests `batches` into a fresh file-backed SqliteStore; the replica is dropped after batch
/// `reopen_after` (and after each later batch when `every`) and reopened with `Authz::open`.
fn run_reopening(
    doc: Document,
    batches: Vec<Vec<Vec<u8>>>,
    reopen_after: usize,
    every: bool,
) -> (Snapshot, Vec<IngestReport>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.sqlite");
    let me = rid(&key(200));
    let mut a = Authz::new(SqliteStore::open(&path).unwrap(), doc, me).unwrap();
    let mut reports = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        reports.push(a.ingest(batch).unwrap());
        if i == reopen_after || (every && i > reopen_after) {
            drop(a);
            a = Authz::open(SqliteStore::open(&path).unwrap(), doc, me).unwrap();
        }
    }
    (snapshot(&a), reports)
}

#[test]
fn a_revocation_survives_a_reopen_and_still_denies_after_a_redo() {
    let w = World::new();
    let alice = key(2);
    let (setup_items, chain, g) = setup(&w, &alice);
    let op = |s: u64, l: u64| {
        w.op(&alice, s, l, create(n(0x50 + s as u8), n(0xf)), 20, chain)
            .encode()
    };
    let rev = Revocation::issue(
        &w.owner,
        g.cid(),
        BTreeMap::from([(*alice.did().public_key(), 2)]),
        BTreeSet::new(),
    );
    let rev = Entry::Revocation(rev).encode();
    // Alice's ops 3 and 4 are past the cutoff. After the reopen an owner op with an early
    // Lamport time arrives: the redo of ops 3 and 4 must still deny them.
    let early = w
        .op(
            &w.owner,
            5,
            5,
            create(n(0x70), NodeId::ROOT),
            10,
            chain_ref(&[]),
        )
        .encode();
    let mut first = setup_items.clone();
    first.extend((1..=4).map(|s| op(s, 10 + s)));
    first.push(rev.clone());
    let batches = vec![first.clone(), vec![early.clone()]];
    let (reopened, reports) = run_reopening(w.doc, batches.clone(), 0, false);
    let (never_closed, _) = run(MemoryStore::new(), w.doc, batches);
    assert_eq!(reopened, never_closed);
    assert!(matches!(
        reports[1].items[0],
        Ok(Accepted::Op {
            outcome: Outcome::Applied,
            ..
        })
    ));
    let live: Vec<_> = reopened.0.keys().copied().collect();
    assert!(live.contains(&n(0x51)) && live.contains(&n(0x52)) && live.contains(&n(0x70)));
    assert!(!live.contains(&n(0x53)) && !live.contains(&n(0x54)));

    // A revocation arriving only after the reopen re-decides ops logged before it (the
    // first-use times are rebuilt from the stored log).
    let mut before = setup_items.clone();
    before.extend((1..=4).map(|s| op(s, 10 + s)));
    let (late, reports) = run_reopening(w.doc, vec![before, vec![rev]], 0, false);
    assert_eq!(late, never_closed.clone().tap_remove(n(0x70)));
    assert_eq!(reports[1].redecided.len(), 2, "{:?}", reports[1].redecided);
}

trait TapRemove {
    fn tap_remove(self, node: NodeId) -> Self;
}
impl TapRemove for Snapshot {
    fn tap_remove(mut self, node: NodeId) -> Self {
        self.0.remove(&node);
        let owner5 = OpId::new(rid(&key(1)), 5);
        self.1.remove(&owner5);
        self
    }
}

#[test]
fn a_held_op_is_released_by_a_proof_that_arrives_after_a_reopen() {
    let w = World::new();
    let alice = key(2);
    let (setup_items, chain, _) = setup(&w, &alice);
    let tree_ops: Vec<Vec<u8>> = setup_items.iter().filter(|i| i[0] == 2).cloned().collect();
    let proofs: Vec<Vec<u8>> = setup_items.iter().filter(|i| i[0] != 2).cloned().collect();
    let held = w
        .op(&alice, 1, 10, create(n(0x51), n(0xf)), 20, chain)
        .encode();
    let mut first = tree_ops.clone();
    first.push(held.clone());
    let (reopened, reports) = run_reopening(w.doc, vec![first.clone(), proofs.clone()], 0, false);
    assert!(matches!(reports[0].items[4], Ok(Accepted::Held { .. })));
    assert_eq!(reports[1].released.len(), 1, "{:?}", reports[1]);
    assert_eq!(reports[1].released[0].outcome, Outcome::Applied);
    let (never_closed, _) = run(MemoryStore::new(), w.doc, vec![first, proofs]);
    assert_eq!(reopened, never_closed);
    assert!(reopened.0.contains_key(&n(0x51)));
}

#[test]
fn proof_entries_come_from_the_store_in_arrival_order() {
    let w = World::new();
    let alice = key(2);
    let (setup_items, chain, g) = setup(&w, &alice);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.sqlite");
    let me = rid(&key(200));
    let mut a = Authz::new(SqliteStore::open(&path).unwrap(), w.doc, me).unwrap();
    let held = w.op(
        &alice,
        1,
        10,
        create(n(0x51), n(0xf)),
        20,
        chain_ref(&[g.cid(), g.cid()]),
    );
    let mut items = setup_items.clone();
    items.push(held.encode());
    // A duplicate proof is stored once.
    items.push(Entry::Delegation(g.clone()).encode());
    a.ingest(items).unwrap();
    drop(a);
    let a = Authz::open(SqliteStore::open(&path).unwrap(), w.doc, me).unwrap();
    assert_eq!(a.held_len(), 1);
    let got: Vec<Vec<u8>> = a
        .proof_entries()
        .unwrap()
        .iter()
        .map(Entry::encode)
        .collect();
    // The genesis comes first.
    let mut want: Vec<Vec<u8>> = vec![Entry::Genesis(w.doc).encode()];
    want.extend(setup_items.iter().filter(|i| i[0] != 2).cloned());
    want.push(held.encode());
    assert_eq!(got, want);
    assert!(a.state().chain(&chain).is_some());
    // The memory store keeps the same records.
    let mut m = Authz::new(MemoryStore::new(), w.doc, me).unwrap();
    let mut items = setup_items;
    items.push(held.encode());
    m.ingest(items).unwrap();
    let got_m: Vec<Vec<u8>> = m
        .proof_entries()
        .unwrap()
        .iter()
        .map(Entry::encode)
        .collect();
    assert_eq!(got_m, want);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_reopened_replica_equals_a_never_closed_one(
        steps in prop::collection::vec((0u8..4, 0u8..4, any::<u8>(), any::<u8>(), 0u64..800), 1..20),
        cutoff in prop::option::of(0u64..6),
        seed in any::<u64>(),
        reopen in 0usize..4,
    ) {
        let w = World::new();
        let items = history(&steps, cutoff);
        let batches = deliver(&items, seed);
        let (reference, _) = run(MemoryStore::new(), w.doc, batches.clone());
        let (reopened, _) = run_reopening(w.doc, batches, reopen, true);
        prop_assert_eq!(reopened, reference);
    }
}
