//! Sync over authorized replicas (`canopy_caps::Authz`): ops and document entries converge,
//! pushed items that do not verify come back as typed refusals, and a capability-backed read
//! filter ([`CapsRead`]) never lets a node id or payload outside the grant out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use canopy_caps::{
    chain_ref, sign_op, subtree_policy, Ability, Authz, AuthzPolicy, ChainRef, Delegation,
    DelegationFields, Document, Entry, Revocation, SecretKey,
};
use canopy_sync::{CapsRead, Clock, EntryId, RefusalCode, Replica};

use super::*;

type A = Authz<MemoryStore>;

const NOW: u64 = 1_700_000_000;

fn clock() -> Clock {
    Arc::new(|| NOW)
}

fn replica_of(k: &SecretKey) -> ReplicaId {
    ReplicaId::from_bytes(*k.did().public_key())
}

/// A delegation from the owner to `to` of `ability` on subtree(`root`).
fn grant(
    owner: &SecretKey,
    to: &SecretKey,
    ability: Ability,
    root: NodeId,
    nonce: u8,
) -> Delegation {
    Delegation::issue_with_nonce(
        owner,
        DelegationFields {
            audience: to.did(),
            subject: Some(owner.did()),
            command: ability.command(),
            policy: subtree_policy(root.as_bytes(), &[]),
            expiration: None,
            not_before: None,
            meta: None,
        },
        vec![nonce; 12],
    )
}

/// The delegation and chain entries of a one-delegation chain, and its reference.
fn proofs(d: &Delegation) -> (Vec<Vec<u8>>, ChainRef) {
    (
        vec![
            Entry::Delegation(d.clone()).encode(),
            Entry::Chain(vec![d.cid()]).encode(),
        ],
        chain_ref(&[d.cid()]),
    )
}

/// A document with two folders, a private payload in `b`, and write grants for Alice (subtree
/// `a`) and Bob (subtree `b`).
struct World {
    owner: SecretKey,
    alice: SecretKey,
    bob: SecretKey,
    doc: Document,
    a: NodeId,
    b: NodeId,
    alice_grant: Delegation,
    bob_grant: Delegation,
}

impl World {
    fn new() -> (World, A) {
        let owner = SecretKey::from_bytes(&[1; 32]);
        let alice = SecretKey::from_bytes(&[2; 32]);
        let bob = SecretKey::from_bytes(&[3; 32]);
        let doc = Document::new(owner.did(), [7; 16]);
        let mut o = Authz::new(MemoryStore::new(), doc, replica_of(&owner)).unwrap();
        o.state_mut().set_signer(owner.clone(), chain_ref(&[]), NOW);
        let a = o
            .tree_mut()
            .create(NodeId::ROOT, Place::Last, Some(b"folder a".to_vec()));
        let a = a.unwrap().node();
        let b = o
            .tree_mut()
            .create(NodeId::ROOT, Place::Last, Some(b"private".to_vec()));
        let b = b.unwrap().node();
        let alice_grant = grant(&owner, &alice, Ability::Write, a, 1);
        let bob_grant = grant(&owner, &bob, Ability::Write, b, 2);
        let mut items = proofs(&alice_grant).0;
        items.extend(proofs(&bob_grant).0);
        ingest_ok(&mut o, items);
        let w = World {
            owner,
            alice,
            bob,
            doc,
            a,
            b,
            alice_grant,
            bob_grant,
        };
        (w, o)
    }

    /// A writer's replica that holds its own grant (as handed over by the owner).
    fn writer(&self, key: &SecretKey, g: &Delegation) -> A {
        let mut r = Authz::new(MemoryStore::new(), self.doc, replica_of(key)).unwrap();
        let (items, chain) = proofs(g);
        ingest_ok(&mut r, items);
        r.state_mut().set_signer(key.clone(), chain, NOW);
        r
    }

    /// Registers a read grant to `reader` in `r` and returns the filter it authenticates with.
    fn reader(
        &self,
        r: &mut A,
        reader: &SecretKey,
        ability: Ability,
        root: NodeId,
    ) -> (CapsRead, Delegation) {
        let g = grant(&self.owner, reader, ability, root, 9);
        let (items, chain) = proofs(&g);
        ingest_ok(r, items);
        (CapsRead::new(reader.did(), chain, clock()), g)
    }
}

fn ingest_ok(r: &mut A, items: Vec<Vec<u8>>) {
    let report = r.ingest(items).unwrap();
    assert!(report.items.iter().all(|i| i.is_ok()), "{report:?}");
}

fn full_sync(a: &mut A, b: &mut A) -> memory::PumpStats {
    let mut pa = FullPeer::new(a, Session::new(AllowAll, opts(false)));
    let mut pb = FullPeer::new(b, Session::new(AllowAll, opts(false)));
    memory::pump(&mut pa, &mut pb, None).expect("sync")
}

/// The visible tree: every node under ROOT with its parent and payload, sorted.
fn state(t: &Tree<MemoryStore, AuthzPolicy>) -> Vec<(NodeId, NodeId, Option<Vec<u8>>)> {
    let mut v: Vec<_> = t
        .subtree(NodeId::ROOT)
        .map(|r| {
            let n = r.unwrap().0;
            let p = t.parent(n).unwrap().unwrap();
            let pl = t.store().payload(n).unwrap().map(|p| p.bytes);
            (n, p, pl)
        })
        .collect();
    v.sort();
    v
}

fn entry_ids(r: &A) -> Vec<EntryId> {
    let mut v: Vec<EntryId> = Replica::entries(r)
        .unwrap()
        .iter()
        .map(|e| EntryId::of(e))
        .collect();
    v.sort();
    v
}

/// A local op of replica `r` on nodes of `pool` that it holds (errors such as a cycle are
/// skipped; denials are logged no-ops, as on every replica).
fn act(r: &mut A, pool: &mut Vec<NodeId>, kind: u8, i: usize, j: usize) {
    let held: Vec<NodeId> = pool
        .iter()
        .copied()
        .filter(|n| r.tree().exists(*n).unwrap())
        .collect();
    if held.is_empty() {
        return;
    }
    let x = held[i % held.len()];
    let y = held[j % held.len()];
    let t = r.tree_mut();
    match kind {
        0 | 1 => {
            if let Ok(c) = t.create(x, Place::Last, Some(vec![kind; 3])) {
                pool.push(c.node());
            }
        }
        2 => {
            let _ = t.move_node(x, y, Place::First);
        }
        3 => {
            let _ = t.set_payload(x, vec![9, i as u8]);
        }
        _ => {
            let _ = t.delete(x);
        }
    }
}

fn authz_cases() -> ProptestConfig {
    cases(12)
}

proptest! {
    #![proptest_config(authz_cases())]

    /// Owner, Alice and Bob (each a verified, authorized replica with its own key and grant)
    /// write, sync in random pairs, and the owner revokes Alice's grant at some point (with a
    /// cutoff at what the owner has seen of her): after a final round of syncs all three hold
    /// the same ops, the same document entries (delegations, chains, the revocation), nothing
    /// held, and the same tree — the revocation re-decided the ops it cut off everywhere.
    #[test]
    fn authorized_replicas_converge_with_entries_and_a_late_revocation(
        acts in proptest::collection::vec((0u8..4, 0u8..6, any::<usize>(), any::<usize>()), 1..40),
    ) {
        let (w, o) = World::new();
        let alice = w.writer(&w.alice, &w.alice_grant);
        let bob = w.writer(&w.bob, &w.bob_grant);
        let mut rs = [o, alice, bob];
        let mut pool = vec![w.a, w.b];
        let mut revoked = false;
        for (who, kind, i, j) in acts {
            match (who, kind) {
                (3, 5) if !revoked => {
                    revoked = true;
                    let seen = rs[0].tree().store().max_seq(replica_of(&w.alice)).unwrap();
                    let rev = Revocation::issue(
                        &w.owner,
                        w.alice_grant.cid(),
                        BTreeMap::from([(*w.alice.did().public_key(), seen)]),
                        BTreeSet::new(),
                    );
                    ingest_ok(&mut rs[0], vec![Entry::Revocation(rev).encode()]);
                }
                (3, _) => {
                    let (x, y) = (i % 3, (i % 3 + 1 + j % 2) % 3);
                    let [r0, r1, r2] = &mut rs;
                    let (p, q): (&mut A, &mut A) = match (x, y) {
                        (0, 1) => (r0, r1),
                        (1, 0) => (r1, r0),
                        (0, 2) => (r0, r2),
                        (2, 0) => (r2, r0),
                        (1, 2) => (r1, r2),
                        _ => (r2, r1),
                    };
                    full_sync(p, q);
                }
                (who, kind) => act(&mut rs[who as usize], &mut pool, kind, i, j),
            }
        }
        for _ in 0..2 {
            let [r0, r1, r2] = &mut rs;
            full_sync(r0, r1);
            full_sync(r1, r2);
            full_sync(r2, r0);
        }
        let f0 = rs[0].tree().store().frontier().unwrap();
        let e0 = entry_ids(&rs[0]);
        let s0 = state(rs[0].tree());
        for r in &rs[1..] {
            prop_assert_eq!(&r.tree().store().frontier().unwrap(), &f0);
            prop_assert_eq!(&entry_ids(r), &e0);
            prop_assert_eq!(&state(r.tree()), &s0);
            prop_assert_eq!(r.held_len(), 0);
            r.tree().check_invariants().unwrap();
        }
        // genesis, 2 × (delegation + chain), and the revocation if issued
        prop_assert_eq!(e0.len(), 5 + usize::from(revoked));
        // the same replicas, in sync now: one round trip, digests only
        let [r0, r1, _] = &mut rs;
        let stats = full_sync(r0, r1);
        prop_assert_eq!(stats.round_trips, 1);
        prop_assert!(stats.bytes() < 1024);
    }
}

proptest! {
    #![proptest_config(authz_cases())]

    /// The owner edits (creates, moves in, out of and within X, payloads, deletes) and a reader
    /// holding a `/tree/read` or `/tree/read/structure` grant on X syncs a partial replica of X
    /// through `CapsRead` now and then: no message carries a node id outside subtree(X) and its
    /// path, payloads only with the payload ability, and the partial replica equals the owner's
    /// tree restricted to X. After the grant is revoked, a sync is refused and sends no node.
    #[test]
    fn caps_read_never_leaks_under_random_histories(
        acts in proptest::collection::vec((0u8..5, any::<usize>(), any::<usize>(), 0u8..4), 1..50),
        payloads in any::<bool>(),
        revoke_at in proptest::option::of(0usize..50),
    ) {
        let (w, mut o) = World::new();
        let x = o.tree_mut().create(w.a, Place::Last, None).unwrap().node();
        let mut pool = vec![w.a, w.b, x];
        for _ in 0..3 {
            pool.push(o.tree_mut().create(x, Place::Last, Some(b"inside-payload".to_vec())).unwrap().node());
        }
        let reader = SecretKey::from_bytes(&[0x39; 32]);
        let ability = if payloads { Ability::Read } else { Ability::ReadStructure };
        let (filter, g) = w.reader(&mut o, &reader, ability, x);
        let chain = *filter.chain();
        let mut p = PartialReplica::new(x, rep(9));
        let mut revoked = false;
        for (step, (kind, i, j, sync)) in acts.into_iter().enumerate() {
            act(&mut o, &mut pool, kind, i, j);
            if revoke_at == Some(step) && !revoked {
                revoked = true;
                let rev = Revocation::issue(&w.owner, g.cid(), BTreeMap::new(), BTreeSet::new());
                ingest_ok(&mut o, vec![Entry::Revocation(rev).encode()]);
            }
            if sync != 0 {
                continue;
            }
            let filter = CapsRead::new(reader.did(), chain, clock());
            let (r, got) = partial_sync(&mut o, filter, &mut p);
            let mut allowed: Vec<NodeId> = Vec::new();
            if o.tree().exists(x).unwrap() {
                allowed.extend(o.tree().subtree(x).map(|r| r.unwrap().0));
                allowed.push(x);
                allowed.extend(o.tree().ancestors(x).unwrap());
            }
            if revoked {
                prop_assert!(r.is_err());
                allowed.clear();
            }
            let hidden: Vec<NodeId> = pool.iter().copied().filter(|n| !allowed.contains(n)).collect();
            assert_no_leak(&got, &hidden, &[]);
            if !payloads {
                for m in &got {
                    prop_assert!(!m.windows(14).any(|w| w == b"inside-payload"), "payload without the ability");
                }
            }
            if r.is_ok() {
                prop_assert_eq!(p.records(), restricted(o.tree(), x, payloads));
            }
        }
    }
}

#[test]
fn a_revocation_that_arrives_later_re_decides_on_the_peer() {
    let (w, mut o) = World::new();
    let mut alice = w.writer(&w.alice, &w.alice_grant);
    full_sync(&mut o, &mut alice);
    let first = alice.tree_mut().create(w.a, Place::Last, None).unwrap();
    let second = alice.tree_mut().create(w.a, Place::Last, None).unwrap();
    let mut bob = w.writer(&w.bob, &w.bob_grant);
    full_sync(&mut alice, &mut bob);
    assert!(bob.tree().exists(second.node()).unwrap());
    // the owner saw only Alice's first op when it revoked: her later ops are cut off
    let rev = Revocation::issue(
        &w.owner,
        w.alice_grant.cid(),
        BTreeMap::from([(*w.alice.did().public_key(), first.op.id().seq())]),
        BTreeSet::new(),
    );
    ingest_ok(&mut o, vec![Entry::Revocation(rev.clone()).encode()]);
    let stats = full_sync(&mut o, &mut bob);
    let rev_id = EntryId::of(&Entry::Revocation(rev).encode());
    assert!(entry_ids(&bob).contains(&rev_id));
    assert!(bob.tree().exists(first.node()).unwrap());
    assert!(!bob.tree().exists(second.node()).unwrap());
    assert!(
        stats
            .events_b
            .iter()
            .any(|e| matches!(e, Event::Changed(_))),
        "the re-decision changed Bob's tree"
    );
}

#[test]
fn entries_in_sync_take_one_round_trip_and_differences_two() {
    let (w, mut o) = World::new();
    let mut alice = w.writer(&w.alice, &w.alice_grant);
    let first = full_sync(&mut o, &mut alice);
    assert_eq!(first.round_trips, 2);
    assert_eq!(entry_ids(&o), entry_ids(&alice));
    let again = full_sync(&mut o, &mut alice);
    assert_eq!(again.round_trips, 1);
    // two Hellos with an entries summary each
    assert!(again.bytes() < 200, "{}", again.bytes());
    // only an entry differs (a new grant): ids and the one entry travel, no ops
    let extra = grant(&w.owner, &w.bob, Ability::Read, w.a, 5);
    ingest_ok(&mut o, proofs(&extra).0);
    let stats = full_sync(&mut alice, &mut o);
    assert_eq!(stats.round_trips, 2);
    assert_eq!(entry_ids(&o), entry_ids(&alice));
    assert!(stats.bytes() < 2048, "{}", stats.bytes());
}

/// A plain tree pushing crafted ops (it does not verify anything) to an authorized replica.
#[test]
fn forged_unsigned_and_foreign_ops_are_refused_typed_and_the_session_goes_on() {
    let (w, mut o) = World::new();
    let mallory = SecretKey::from_bytes(&[6; 32]);
    let other_doc = Document::new(w.owner.did(), [8; 16]);
    let alice_chain = chain_ref(&[w.alice_grant.cid()]);
    let bob_chain = chain_ref(&[w.bob_grant.cid()]);
    let mk = |key: &SecretKey, seq: u64, parent: NodeId, node: u8| {
        Op::new(
            OpId::new(replica_of(key), seq),
            Lamport::new(100 + seq),
            OpKind::Create {
                node: NodeId::from_bytes([node; 16]),
                parent,
                position: Position::first(&replica_of(key)),
                payload: None,
            },
        )
    };
    // Alice: a valid op in her folder, then one outside it (denied by capability)
    let good = sign_op(
        &w.alice,
        &w.doc.id(),
        NOW,
        &alice_chain,
        mk(&w.alice, 1, w.a, 0x61),
    )
    .unwrap();
    let outside = sign_op(
        &w.alice,
        &w.doc.id(),
        NOW,
        &alice_chain,
        mk(&w.alice, 2, w.b, 0x62),
    )
    .unwrap();
    // Bob: a signature made over other bytes (forged)
    let honest = sign_op(
        &w.bob,
        &w.doc.id(),
        NOW,
        &bob_chain,
        mk(&w.bob, 1, w.b, 0x63),
    )
    .unwrap();
    let forged = mk(&w.bob, 1, w.a, 0x64).with_attestation(honest.attestation().unwrap().clone());
    // Mallory: unsigned; and an op signed for another document
    let unsigned = mk(&mallory, 1, w.a, 0x65);
    let carol = SecretKey::from_bytes(&[4; 32]);
    let foreign = sign_op(
        &carol,
        &other_doc.id(),
        NOW,
        &chain_ref(&[]),
        mk(&carol, 1, w.a, 0x66),
    )
    .unwrap();

    let mut evil = Tree::new(MemoryStore::new(), rep(0xee));
    let mut seed = Vec::new();
    for e in o
        .tree()
        .store()
        .log_after(canopy_tree::LogKey::new(Lamport::default(), rep(0)))
        .unwrap()
    {
        seed.push(e.op);
    }
    evil.apply(seed).unwrap();
    let crafted = vec![
        good.clone(),
        outside.clone(),
        forged.clone(),
        unsigned.clone(),
        foreign.clone(),
    ];
    evil.apply(crafted).unwrap();

    let mut pe = FullPeer::new(&mut evil, Session::new(AllowAll, opts(false)));
    let mut po = FullPeer::new(&mut o, Session::new(AllowAll, opts(false)));
    let stats = memory::pump(&mut pe, &mut po, None).expect("the session completes");
    let refused: Vec<(OpId, RefusalCode)> = stats
        .events_a
        .iter()
        .filter_map(|e| match e {
            Event::Refused { op, code } => Some((*op, *code)),
            _ => None,
        })
        .collect();
    let expect = [
        (outside.id(), RefusalCode::Denied),
        (forged.id(), RefusalCode::BadSignature),
        (unsigned.id(), RefusalCode::Unsigned),
        (foreign.id(), RefusalCode::WrongDocument),
    ];
    for e in expect {
        assert!(refused.contains(&e), "{e:?} not in {refused:?}");
    }
    assert_eq!(refused.len(), expect.len(), "{refused:?}");
    // the plain tree keeps no entries: the owner's come back as `unsupported`, typed too
    assert!(stats.events_a.iter().any(|e| matches!(
        e,
        Event::RejectedEntryFromPeer {
            code: RefusalCode::Unsupported,
            ..
        }
    )));
    let store = o.tree().store();
    assert!(o.tree().exists(good.node()).unwrap());
    for bad in [&forged, &unsigned, &foreign] {
        assert!(
            store.entry(bad.id()).unwrap().is_none(),
            "{:?} stored",
            bad.id()
        );
        assert!(!o.tree().exists(bad.node()).unwrap());
    }
    // the denied op is logged as a no-op, as on every replica
    assert!(store.entry(outside.id()).unwrap().is_some());
    assert!(!o.tree().exists(outside.node()).unwrap());
    assert_eq!(o.held_len(), 0);

    // entries pushed directly: a garbage entry and a delegation with a broken signature
    let mut s = Session::new(AllowAll, opts(false));
    let _ = s.start(&o);
    let hello = Message::Hello {
        mode: Mode::Full,
        digest: [0; 32],
        count: 0,
        live: false,
        entries: EntriesSummary::default(),
    };
    let _ = s.receive(&mut o, &hello.encode());
    let mut bad_delegation = Entry::Delegation(w.bob_grant.clone()).encode();
    let last = bad_delegation.len() - 1;
    bad_delegation[last] ^= 1;
    let garbage = vec![0x55, 1, 2];
    let before = entry_ids(&o);
    let out = s.receive(
        &mut o,
        &Message::Entries(vec![garbage.clone(), bad_delegation.clone()]).encode(),
    );
    assert!(out.error.is_none());
    let codes: Vec<(EntryId, RefusalCode)> = out
        .send
        .iter()
        .filter_map(|m| match Message::decode(m).unwrap() {
            Message::RefusedEntry { entry, code } => Some((entry, code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes[0],
        (EntryId::of(&garbage), RefusalCode::MalformedEntry)
    );
    assert_eq!(codes[1].0, EntryId::of(&bad_delegation));
    assert!(matches!(
        codes[1].1,
        RefusalCode::BadDelegation | RefusalCode::MalformedEntry
    ));
    assert_eq!(entry_ids(&o), before);
    assert!(!s.is_closed());
}

// ------------------------------------------------------------------ read filtering by caps

/// Node ids and payloads that must not appear in any message a reader receives.
fn assert_no_leak(msgs: &[Vec<u8>], hidden: &[NodeId], secrets: &[&[u8]]) {
    for m in msgs {
        for n in hidden {
            assert!(
                !m.windows(16).any(|w| w == n.as_bytes()),
                "node id {n} outside the grant sent"
            );
        }
        for s in secrets {
            assert!(
                !m.windows(s.len()).any(|w| w == *s),
                "payload outside the grant sent"
            );
        }
    }
}

fn partial_sync(
    full: &mut A,
    filter: CapsRead,
    p: &mut PartialReplica,
) -> (Result<memory::PumpStats, String>, Vec<Vec<u8>>) {
    let mut rec = Recorder {
        inner: PartialPeer::new(p, PartialSession::new(opts(false))),
        got: Vec::new(),
    };
    let mut f = FullPeer::new(full, Session::new(filter, opts(false)));
    let r = memory::pump(&mut rec, &mut f, None).map_err(|e| e.to_string());
    (r, rec.got)
}

#[test]
fn caps_read_serves_only_the_granted_subtree() {
    let (w, mut o) = World::new();
    let inside = o
        .tree_mut()
        .create(w.a, Place::Last, Some(b"visible".to_vec()))
        .unwrap()
        .node();
    let hidden = o
        .tree_mut()
        .create(w.b, Place::Last, Some(b"secret".to_vec()))
        .unwrap()
        .node();
    let reader = SecretKey::from_bytes(&[0x33; 32]);
    let (filter, _) = w.reader(&mut o, &reader, Ability::Read, w.a);
    let chain = *filter.chain();
    let never = [w.b, hidden];
    let secrets: [&[u8]; 2] = [b"secret", b"private"];

    // partial sync of the grant: records of subtree(a) only, with payloads
    let mut p = PartialReplica::new(w.a, rep(9));
    let (r, got) = partial_sync(&mut o, filter, &mut p);
    r.unwrap();
    assert_no_leak(&got, &never, &secrets);
    assert!(p.contains(inside));
    // a partial reader never receives entries or ops, nor (from a responder that learned it
    // is partial before answering) their summary
    let mut s = Session::new(CapsRead::new(reader.did(), chain, clock()), opts(false));
    let hello = Message::Hello {
        mode: Mode::Partial {
            scope: w.a,
            since: VersionVector::new(),
        },
        digest: [0; 32],
        count: 0,
        live: false,
        entries: EntriesSummary::default(),
    };
    let out = s.receive(&mut o, &hello.encode());
    match Message::decode(&out.send[0]).unwrap() {
        Message::Hello { entries, .. } => assert_eq!(entries, EntriesSummary::default()),
        m => panic!("{m:?}"),
    }
    for m in &got {
        assert!(!matches!(
            Message::decode(m).unwrap(),
            Message::Ops(_) | Message::Entries(_) | Message::EntryIds { .. }
        ));
    }

    // a partial Hello for a scope outside the grant, for ROOT, or for an unknown node
    for scope in [w.b, NodeId::ROOT, NodeId::from_bytes([0x99; 16])] {
        let filter = CapsRead::new(reader.did(), chain, clock());
        let mut p = PartialReplica::new(scope, rep(9));
        let (r, got) = partial_sync(&mut o, filter, &mut p);
        assert!(r.unwrap_err().contains("scope not readable"));
        assert_no_leak(&got, &never, &secrets);
        assert!(p.is_empty());
    }

    // full sync with a subtree grant
    let mut other = Authz::new(MemoryStore::new(), w.doc, rep(0x44)).unwrap();
    let mut got = Vec::new();
    {
        let mut rec = Recorder {
            inner: FullPeer::new(&mut other, Session::new(AllowAll, opts(false))),
            got: Vec::new(),
        };
        let filter = CapsRead::new(reader.did(), chain, clock());
        let mut po = FullPeer::new(&mut o, Session::new(filter, opts(false)));
        let err = memory::pump(&mut rec, &mut po, None).unwrap_err();
        assert!(err.to_string().contains("full sync not allowed"), "{err}");
        got.append(&mut rec.got);
    }
    assert_no_leak(&got, &never, &secrets);
    assert_no_leak(&got, &[inside, w.a], &[b"visible"]);
    assert_eq!(other.tree().store().log_len().unwrap(), 0);
    assert_eq!(entry_ids(&other).len(), 1, "only its own genesis");

    // a chain whose delegations the responder does not know grants nothing
    let stranger = SecretKey::from_bytes(&[0x34; 32]);
    let unknown = grant(&w.owner, &stranger, Ability::Read, w.a, 3);
    let filter = CapsRead::new(stranger.did(), proofs(&unknown).1, clock());
    let mut p = PartialReplica::new(w.a, rep(9));
    let (r, got) = partial_sync(&mut o, filter, &mut p);
    assert!(r.is_err());
    assert_no_leak(&got, &[inside, w.a, w.b, hidden], &[b"visible", b"secret"]);

    // a grant on ROOT with both read abilities allows full sync (entries included)
    let root_reader = SecretKey::from_bytes(&[0x35; 32]);
    let g = grant(&w.owner, &root_reader, Ability::Read, NodeId::ROOT, 4);
    let (items, chain) = proofs(&g);
    ingest_ok(&mut o, items);
    let mut mirror = Authz::new(MemoryStore::new(), w.doc, rep(0x45)).unwrap();
    let mut pm = FullPeer::new(&mut mirror, Session::new(AllowAll, opts(false)));
    let mut po = FullPeer::new(
        &mut o,
        Session::new(
            CapsRead::new(root_reader.did(), chain, clock()),
            opts(false),
        ),
    );
    memory::pump(&mut pm, &mut po, None).unwrap();
    assert_eq!(state(mirror.tree()), state(o.tree()));
    assert_eq!(entry_ids(&mirror), entry_ids(&o));
}

#[test]
fn payloads_need_the_payload_ability() {
    let (w, mut o) = World::new();
    let inside = o
        .tree_mut()
        .create(w.a, Place::Last, Some(b"payload-x".to_vec()))
        .unwrap()
        .node();
    let reader = SecretKey::from_bytes(&[0x36; 32]);
    let (filter, _) = w.reader(&mut o, &reader, Ability::ReadStructure, w.a);
    let mut p = PartialReplica::new(w.a, rep(9));
    let (r, got) = partial_sync(&mut o, filter, &mut p);
    r.unwrap();
    assert!(p.contains(inside));
    assert_no_leak(&got, &[w.b], &[b"payload-x", b"folder a", b"private"]);
    let records: Vec<NodeRecord> = got
        .iter()
        .filter_map(|m| match Message::decode(m).unwrap() {
            Message::Nodes { records, .. } => Some(records),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r.payload == PayloadState::Withheld));
}

/// A live partial session: a node moved out of the grant arrives as gone (not with its new
/// place), and once the grant is revoked on the responder nothing more is sent.
#[test]
fn moves_out_of_the_grant_and_a_revocation_mid_session() {
    let (w, mut o) = World::new();
    let x = o
        .tree_mut()
        .create(w.a, Place::Last, Some(b"x".to_vec()))
        .unwrap()
        .node();
    let y = o
        .tree_mut()
        .create(x, Place::Last, Some(b"y".to_vec()))
        .unwrap()
        .node();
    let reader = SecretKey::from_bytes(&[0x37; 32]);
    let (filter, g) = w.reader(&mut o, &reader, Ability::Read, w.a);
    let mut p = PartialReplica::new(w.a, rep(9));
    let mut rec = Recorder {
        inner: PartialPeer::new(&mut p, PartialSession::new(opts(true))),
        got: Vec::new(),
    };
    let mut po = FullPeer::new(&mut o, Session::new(filter, opts(true)));
    memory::pump(&mut rec, &mut po, None).unwrap();
    assert!(rec.inner.replica().contains(y));

    // moved out of the grant (under the private folder): gone, its new parent never named
    rec.got.clear();
    po.replica()
        .tree_mut()
        .move_node(x, w.b, Place::Last)
        .unwrap();
    memory::settle(&mut rec, &mut po).unwrap();
    assert!(!rec.inner.replica().contains(x) && !rec.inner.replica().contains(y));
    assert!(rec
        .got
        .iter()
        .any(|m| matches!(Message::decode(m).unwrap(), Message::Gone(_))));
    assert_no_leak(&rec.got, &[w.b], &[b"private"]);

    // a write inside the grant still flows
    let z = po
        .replica()
        .tree_mut()
        .create(w.a, Place::Last, None)
        .unwrap()
        .node();
    memory::settle(&mut rec, &mut po).unwrap();
    assert!(rec.inner.replica().contains(z));

    // the grant is revoked on the responder: the next delta is refused, nothing is sent
    let rev = Revocation::issue(&w.owner, g.cid(), BTreeMap::new(), BTreeSet::new());
    po.replica()
        .ingest([Entry::Revocation(rev).encode()])
        .unwrap();
    rec.got.clear();
    let after = po
        .replica()
        .tree_mut()
        .create(w.a, Place::Last, Some(b"after".to_vec()))
        .unwrap()
        .node();
    let r = memory::settle(&mut rec, &mut po);
    assert!(r.is_err(), "the session ends");
    assert_no_leak(&rec.got, &[after], &[b"after"]);
    assert!(!rec.inner.replica().contains(after));
}

/// An op whose proofs a replica lacks is held, not refused, and held ops travel as entries: a
/// third replica holds it too until the proofs reach it, then applies it.
#[test]
fn held_ops_travel_as_entries_and_are_released_by_the_proofs() {
    let (w, mut o) = World::new();
    let mut alice = w.writer(&w.alice, &w.alice_grant);
    full_sync(&mut o, &mut alice);
    let op = alice.tree_mut().create(w.a, Place::Last, None).unwrap();
    // X got Alice's op alone (say, from Alice over another link): it waits for her chain
    let mut x = Authz::new(MemoryStore::new(), w.doc, rep(0x51)).unwrap();
    ingest_ok(&mut x, vec![op.op.encode()]);
    assert_eq!(x.held_len(), 1);
    let mut y = Authz::new(MemoryStore::new(), w.doc, rep(0x52)).unwrap();
    let stats = full_sync(&mut x, &mut y);
    assert_eq!(y.held_len(), 1, "the held op travelled as an entry");
    assert!(!stats
        .events_a
        .iter()
        .chain(&stats.events_b)
        .any(|e| matches!(e, Event::Refused { .. } | Event::RefusedEntry { .. })));
    // the owner's replica brings the folders and the proofs: released
    full_sync(&mut o, &mut y);
    assert_eq!(y.held_len(), 0);
    assert!(y.tree().exists(op.node()).unwrap());
    assert!(o.tree().exists(op.node()).unwrap());
    assert_eq!(state(y.tree()), state(o.tree()));
}

/// Live full sync: new entries flow before new ops; once the reader's root grant is revoked on
/// the responder, the next batch is refused and nothing more is sent.
#[test]
fn live_full_sync_relays_entries_and_stops_at_a_revocation() {
    let (w, mut o) = World::new();
    let reader = SecretKey::from_bytes(&[0x38; 32]);
    let (filter, g) = w.reader(&mut o, &reader, Ability::Read, NodeId::ROOT);
    let mut m = Authz::new(MemoryStore::new(), w.doc, rep(0x53)).unwrap();
    let mut rec = Recorder {
        inner: FullPeer::new(&mut m, Session::new(AllowAll, opts(true))),
        got: Vec::new(),
    };
    let mut po = FullPeer::new(&mut o, Session::new(filter, opts(true)));
    memory::pump(&mut rec, &mut po, None).unwrap();
    assert_eq!(po.session().phase(), Phase::Live);

    // a new grant and a new node on the responder: the entries come first
    rec.got.clear();
    let extra = grant(&w.owner, &w.bob, Ability::Read, w.b, 6);
    po.replica().ingest(proofs(&extra).0).unwrap();
    let n = po
        .replica()
        .tree_mut()
        .create(w.a, Place::Last, None)
        .unwrap()
        .node();
    memory::settle(&mut rec, &mut po).unwrap();
    let kinds: Vec<&'static str> = rec
        .got
        .iter()
        .map(|b| match Message::decode(b).unwrap() {
            Message::Entries(_) => "entries",
            Message::Ops(_) => "ops",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["entries", "ops"]);
    assert!(rec.inner.replica().tree().exists(n).unwrap());
    assert_eq!(entry_ids(rec.inner.replica()), entry_ids(po.replica()));

    // revoked: the next live batch is refused; neither the revocation nor later ops are sent
    let rev = Revocation::issue(&w.owner, g.cid(), BTreeMap::new(), BTreeSet::new());
    po.replica()
        .ingest([Entry::Revocation(rev).encode()])
        .unwrap();
    rec.got.clear();
    let after = po
        .replica()
        .tree_mut()
        .create(w.a, Place::Last, Some(b"after".to_vec()));
    let after = after.unwrap().node();
    let err = memory::settle(&mut rec, &mut po).unwrap_err();
    assert!(err.to_string().contains("full sync not allowed"), "{err}");
    assert_no_leak(&rec.got, &[after], &[b"after"]);
    assert!(rec
        .got
        .iter()
        .all(|b| matches!(Message::decode(b).unwrap(), Message::Error(_))));
}

#[test]
fn more_entry_ids_than_announced_end_the_session() {
    let (_, mut o) = World::new();
    let mut s = Session::new(AllowAll, opts(false));
    let hello = Message::Hello {
        mode: Mode::Full,
        digest: [0; 32],
        count: 0,
        live: false,
        entries: EntriesSummary {
            count: 1,
            digest: [1; 32],
        },
    };
    assert!(s.receive(&mut o, &hello.encode()).error.is_none());
    let ids = Message::EntryIds {
        ids: vec![EntryId::from_bytes([1; 32]), EntryId::from_bytes([2; 32])],
        more: true,
    };
    let out = s.receive(&mut o, &ids.encode());
    assert!(matches!(out.error, Some(SyncError::Unexpected { .. })));
    assert!(s.is_closed());
}

/// Alice signs two versions of her first op. One replica holds version 1 (her proofs have not
/// reached it), another logged version 2: the held op travels as an entry, the second replica
/// refuses it as an equivocation and records the evidence, and the evidence then travels back
/// like any entry — both end up with the same entries and the same tree.
#[test]
fn equivocation_evidence_travels_as_an_entry() {
    let (w, mut o) = World::new();
    let chain = chain_ref(&[w.alice_grant.cid()]);
    let version = |node: u8| {
        let op = Op::new(
            OpId::new(replica_of(&w.alice), 1),
            Lamport::new(50),
            OpKind::Create {
                node: NodeId::from_bytes([node; 16]),
                parent: w.a,
                position: Position::first(&replica_of(&w.alice)),
                payload: None,
            },
        );
        sign_op(&w.alice, &w.doc.id(), NOW, &chain, op).unwrap()
    };
    let (v1, v2) = (version(0x71), version(0x72));
    let mut x = Authz::new(MemoryStore::new(), w.doc, rep(0x54)).unwrap();
    ingest_ok(&mut x, vec![v1.encode()]);
    assert_eq!(x.held_len(), 1);
    ingest_ok(&mut o, vec![v2.encode()]);
    assert!(o.tree().exists(v2.node()).unwrap());

    let stats = full_sync(&mut x, &mut o);
    assert!(
        stats.events_a.iter().any(|e| matches!(
            e,
            Event::RefusedEntry {
                code: RefusalCode::Equivocation,
                ..
            }
        )),
        "{:?}",
        stats.events_a
    );
    let ids_o = entry_ids(&o);
    assert!(ids_o.len() > 5, "the owner's replica recorded evidence");
    // the next sync brings the evidence (and the proofs) to X
    full_sync(&mut x, &mut o);
    assert_eq!(entry_ids(&x), entry_ids(&o));
    assert_eq!(state(x.tree()), state(o.tree()));
    // Alice's ops from seq 1 on are denied everywhere: neither version is visible
    assert!(!o.tree().exists(v2.node()).unwrap());
    assert!(!x.tree().exists(v1.node()).unwrap());
}

/// A partial replica of Alice's folder writes back to the authorized responder: signed ops under
/// her grant are applied; an op outside her grant is logged as denied and comes back `Denied`; a
/// partial replica without a signer gets `Unsigned`, and nothing of it is stored.
#[test]
fn partial_writers_sign_their_ops_and_get_typed_refusals() {
    let (w, mut o) = World::new();
    // Alice may write only under `inner`; she reads all of folder a
    let inner = o.tree_mut().create(w.a, Place::Last, None).unwrap().node();
    let g = grant(&w.owner, &w.alice, Ability::Write, inner, 11);
    let (items, chain) = proofs(&g);
    ingest_ok(&mut o, items);
    let (read, _) = w.reader(&mut o, &w.alice, Ability::Read, w.a);
    let read_chain = *read.chain();
    let sync = |p: &mut PartialReplica, o: &mut A| {
        let mut pp = PartialPeer::new(p, PartialSession::new(opts(false)));
        let f = CapsRead::new(w.alice.did(), read_chain, clock());
        let mut po = FullPeer::new(o, Session::new(f, opts(false)));
        memory::pump(&mut pp, &mut po, None).unwrap()
    };

    let mut p = PartialReplica::new(w.a, replica_of(&w.alice));
    let (alice, doc) = (w.alice.clone(), w.doc.id());
    p.set_signer(canopy_sync::OpSigner::new(move |op| {
        sign_op(&alice, &doc, NOW, &chain, op).expect("the replica is Alice's key")
    }));
    sync(&mut p, &mut o);
    let ok = NodeId::from_bytes([0x81; 16]);
    let denied = NodeId::from_bytes([0x82; 16]);
    p.create(ok, inner, Place::Last, Some(b"mine".to_vec()))
        .unwrap();
    let op = p.create(denied, w.a, Place::Last, None).unwrap();
    let stats = sync(&mut p, &mut o);
    assert_eq!(o.tree().parent(ok).unwrap(), Some(inner));
    assert!(!o.tree().exists(denied).unwrap());
    let refused: Vec<_> = stats
        .events_a
        .iter()
        .filter_map(|e| match e {
            Event::Refused { op, code } => Some((*op, *code)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![(op.id(), RefusalCode::Denied)]);

    // no signer: refused as unsigned, nothing stored
    let mut q = PartialReplica::new(w.a, rep(0x77));
    sync(&mut q, &mut o);
    let op = q
        .create(NodeId::from_bytes([0x83; 16]), inner, Place::Last, None)
        .unwrap();
    let stats = sync(&mut q, &mut o);
    assert!(stats.events_a.iter().any(|e| matches!(
        e,
        Event::Refused { op: id, code: RefusalCode::Unsigned } if *id == op.id()
    )));
    assert!(o.tree().store().entry(op.id()).unwrap().is_none());
}
