//! Integration tests of the sync protocol: convergence of full replicas, partial replicas equal to
//! the full replica restricted to their scope, resumption after cuts, read filtering against
//! crafted requests, live mode, refused writes, the wire format and its vectors.

use std::convert::Infallible;

use canopy_sync::memory::{self, Endpoint, FullPeer, PartialPeer, PumpError};
use canopy_sync::{
    AllowAll, EntriesSummary, EntryId, ErrorCode, Event, Message, Mode, NodeRecord, Options,
    Outcome, PartialReplica, PartialSession, PayloadState, Phase, ReadContext, ReadFilter,
    RefusalCode, Session, SubtreeScope, SyncError,
};
use canopy_tree::{
    Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Place, Policy, Position, ReplicaId, Store,
    Tree, VersionVector,
};
use proptest::prelude::*;

mod authz;

type T = Tree<MemoryStore>;

fn rep(b: u8) -> ReplicaId {
    ReplicaId::from_bytes([b; 32])
}

fn opts(live: bool) -> Options {
    Options {
        live,
        ..Options::default()
    }
}

fn sync_full(a: &mut T, b: &mut T) -> memory::PumpStats {
    let mut pa = FullPeer::new(a, Session::new(AllowAll, opts(false)));
    let mut pb = FullPeer::new(b, Session::new(AllowAll, opts(false)));
    memory::pump(&mut pa, &mut pb, None).expect("sync")
}

/// A pump's statistics and the messages the partial replica received.
type Received = (memory::PumpStats, Vec<Vec<u8>>);

fn sync_partial<F: ReadFilter>(
    full: &mut T,
    filter: F,
    p: &mut PartialReplica,
    cut: Option<u64>,
) -> Result<Received, PumpError<Infallible, Infallible>> {
    let mut rec = Recorder {
        inner: PartialPeer::new(p, PartialSession::new(opts(false))),
        got: Vec::new(),
    };
    let mut f = FullPeer::new(full, Session::new(filter, opts(false)));
    let stats = memory::pump(&mut rec, &mut f, cut)?;
    Ok((stats, rec.got))
}

/// Wraps an endpoint and records every message it receives.
struct Recorder<E> {
    inner: E,
    got: Vec<Vec<u8>>,
}

impl<E: Endpoint> Endpoint for Recorder<E> {
    type Error = E::Error;
    fn start(&mut self) -> Outcome<E::Error> {
        self.inner.start()
    }
    fn receive(&mut self, bytes: &[u8]) -> Outcome<E::Error> {
        self.got.push(bytes.to_vec());
        self.inner.receive(bytes)
    }
    fn poll(&mut self) -> Outcome<E::Error> {
        self.inner.poll()
    }
    fn close(&mut self) -> Outcome<E::Error> {
        self.inner.close()
    }
}

/// The full replica's subtree(X), as records, sorted by node.
fn restricted<S: Store, P: Policy>(t: &Tree<S, P>, x: NodeId, payloads: bool) -> Vec<NodeRecord> {
    let mut v: Vec<NodeRecord> = t
        .subtree(x)
        .map(|r| {
            let (n, _) = r.unwrap();
            let pl = t.placement(n).unwrap().unwrap();
            let payload = if !payloads {
                PayloadState::Withheld
            } else {
                match t.store().payload(n).unwrap() {
                    Some(p) => PayloadState::Present {
                        bytes: p.bytes,
                        set_by: p.set_by,
                    },
                    None => PayloadState::None,
                }
            };
            NodeRecord {
                node: n,
                parent: pl.parent,
                position: pl.position,
                placed_by: pl.placed_by,
                payload,
            }
        })
        .collect();
    v.sort_by_key(|r| r.node);
    v
}

/// Everything visible in a tree: nodes with parent, position and payload.
fn snapshot(t: &T) -> Vec<NodeRecord> {
    let mut all = restricted(t, NodeId::ROOT, true);
    all.extend(restricted(t, NodeId::TRASH, true));
    all.sort_by_key(|r| r.node);
    all
}

// ------------------------------------------------------------------ random histories

#[derive(Clone, Debug)]
enum Act {
    /// Replica `r` does op kind `k` with random picks `a`, `b`.
    Local { r: usize, k: u8, a: usize, b: usize },
    /// Full sync of replicas `r` and `s`.
    Sync { r: usize, s: usize },
    /// The partial replica syncs with replica `r` (cut after `cut` messages if `Some`).
    Partial { r: usize, cut: Option<u8> },
    /// The partial replica makes a local op.
    PartialLocal { k: u8, a: usize, b: usize },
}

fn act(replicas: usize) -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (0..replicas, 0u8..6, any::<usize>(), any::<usize>())
            .prop_map(|(r, k, a, b)| Act::Local { r, k, a, b }),
        2 => (0..replicas, 0..replicas).prop_map(|(r, s)| Act::Sync { r, s }),
        2 => (0..replicas, proptest::option::weighted(0.3, 1u8..12))
            .prop_map(|(r, cut)| Act::Partial { r, cut }),
        1 => (0u8..4, any::<usize>(), any::<usize>())
            .prop_map(|(k, a, b)| Act::PartialLocal { k, a, b }),
    ]
}

fn existing(t: &T, pool: &[NodeId]) -> Vec<NodeId> {
    pool.iter()
        .copied()
        .filter(|n| t.exists(*n).unwrap())
        .collect()
}

/// One random local op on `t` (errors such as cycles are simply skipped).
fn local(t: &mut T, pool: &mut Vec<NodeId>, k: u8, a: usize, b: usize) {
    let nodes = existing(t, pool);
    let pick = |i: usize| -> NodeId {
        if nodes.is_empty() || i % 5 == 0 {
            NodeId::ROOT
        } else {
            nodes[i % nodes.len()]
        }
    };
    let payload = vec![(a % 251) as u8; a % 7];
    match k {
        0 | 1 => {
            if let Ok(l) = t.create(pick(a), Place::Last, Some(payload)) {
                pool.push(l.node());
            }
        }
        2 => {
            let _ = t.move_node(pick(a), pick(b), Place::First);
        }
        3 => {
            let _ = t.delete(pick(a));
        }
        4 => {
            let _ = t.set_payload(pick(a), payload);
        }
        _ => {
            let _ = t.restore(pick(a), pick(b), Place::Last);
        }
    }
}

fn partial_local(p: &mut PartialReplica, pool: &mut Vec<NodeId>, k: u8, a: usize, b: usize) {
    let mut held: Vec<NodeId> = p.records().iter().map(|r| r.node).collect();
    held.push(p.scope());
    let pick = |i: usize| held[i % held.len()];
    match k {
        0 => {
            let id = NodeId::from_bytes({
                let mut x = [0xabu8; 16];
                x[..8]
                    .copy_from_slice(&(pool.len() as u64 + (a as u64 % 1000) * 1000).to_be_bytes());
                x
            });
            if p.create(id, pick(a), Place::First, Some(vec![7; 3]))
                .is_ok()
            {
                pool.push(id);
            }
        }
        1 => {
            let _ = p.move_node(pick(a), pick(b), Place::Last);
        }
        2 => {
            let _ = p.delete(pick(a));
        }
        _ => {
            let _ = p.set_payload(pick(a), vec![(b % 200) as u8]);
        }
    }
}

fn check_partial(full: &T, p: &PartialReplica) -> Result<(), TestCaseError> {
    p.check_invariants()
        .map_err(|e| TestCaseError::fail(format!("partial invariants: {e}")))?;
    prop_assert_eq!(p.records(), restricted(full, p.scope(), true));
    // the path: the scope root up to ROOT/TRASH
    let path: Vec<NodeId> = p.path().iter().map(|e| e.node).collect();
    let mut want = vec![p.scope()];
    want.extend(full.ancestors(p.scope()).unwrap());
    want.pop();
    prop_assert_eq!(path, want);
    Ok(())
}

/// Runs a random history over `n` full replicas and one partial replica of X, checking the partial
/// replica against the full one after every completed partial sync, and convergence at the end.
fn run_history(n: usize, acts: Vec<Act>) -> Result<(), TestCaseError> {
    let mut trees: Vec<T> = (0..n)
        .map(|i| Tree::new(MemoryStore::new(), rep(i as u8 + 1)))
        .collect();
    // a path ROOT → g → x, shared by everyone
    let g = trees[0]
        .create(NodeId::ROOT, Place::Last, None)
        .unwrap()
        .node();
    let x = trees[0]
        .create(g, Place::Last, Some(b"x".to_vec()))
        .unwrap()
        .node();
    let mut pool = vec![g, x];
    for _ in 0..3 {
        let c = trees[0].create(x, Place::Last, None).unwrap().node();
        pool.push(c);
    }
    for i in 1..n {
        let (a, b) = trees.split_at_mut(i);
        sync_full(&mut a[0], &mut b[0]);
    }
    let mut p = PartialReplica::new(x, rep(200));
    for act in acts {
        match act {
            Act::Local { r, k, a, b } => local(&mut trees[r], &mut pool, k, a, b),
            Act::Sync { r, s } if r != s => {
                let (lo, hi) = (r.min(s), r.max(s));
                let (a, b) = trees.split_at_mut(hi);
                sync_full(&mut a[lo], &mut b[0]);
            }
            Act::Sync { .. } => {}
            Act::Partial { r, cut } => {
                // the responder filters with a grant on exactly X (the capability case)
                let (stats, _) = sync_partial(
                    &mut trees[r],
                    SubtreeScope::new(x),
                    &mut p,
                    cut.map(u64::from),
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                // own ops the responder could not apply yet (waiting for ops it lacks) are shown
                // optimistically on top of its state; otherwise the views are equal
                if !stats.cut && p.unacked().is_empty() {
                    check_partial(&trees[r], &p)?;
                }
                // a snapshot round-trips, even mid-delta
                let back = PartialReplica::decode(&p.encode())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back.records(), p.records());
                prop_assert_eq!(back.since(), p.since());
            }
            Act::PartialLocal { k, a, b } => partial_local(&mut p, &mut pool, k, a, b),
        }
    }
    // converge: a chain there and back, then the partial replica from replica 0
    for _ in 0..2 {
        for i in 1..n {
            let (a, b) = trees.split_at_mut(i);
            sync_full(&mut a[i - 1], &mut b[0]);
        }
    }
    sync_partial(&mut trees[0], AllowAll, &mut p, None)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for i in 1..n {
        let (a, b) = trees.split_at_mut(i);
        sync_full(&mut a[0], &mut b[0]);
    }
    let f0 = trees[0].store().frontier().unwrap();
    let s0 = snapshot(&trees[0]);
    for t in &trees {
        t.check_invariants()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(t.store().frontier().unwrap(), f0.clone());
        prop_assert_eq!(snapshot(t), s0.clone());
    }
    // every local op of the partial replica reached the full replicas
    prop_assert!(p.unacked().is_empty());
    sync_partial(&mut trees[0], AllowAll, &mut p, None)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    check_partial(&trees[0], &p)
}

/// Modest default case counts; `PROPTEST_CASES` raises them for long runs.
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}

proptest! {
    #![proptest_config(cases(64))]

    /// Two or three full replicas syncing in random pairings converge, and a partial replica of X
    /// synced at random points (with cuts, and its own writes) equals the full replica's
    /// subtree(X) after every completed sync.
    #[test]
    fn partial_equals_full_restricted(
        n in 2usize..4,
        acts in proptest::collection::vec(act(3), 1..60),
    ) {
        let acts = acts
            .into_iter()
            .map(|a| match a {
                Act::Local { r, k, a, b } => Act::Local { r: r % n, k, a, b },
                Act::Sync { r, s } => Act::Sync { r: r % n, s: s % n },
                Act::Partial { r, cut } => Act::Partial { r: r % n, cut },
                other => other,
            })
            .collect();
        run_history(n, acts)?;
    }

    /// A full sync cut after a random number of messages, then resumed, converges; the resumed
    /// session receives exactly the ops still missing (nothing applied before the cut is re-sent).
    #[test]
    fn full_sync_resumes_after_cut(
        a_ops in 1usize..40,
        b_ops in 1usize..40,
        cut in 1u64..8,
        batch in 64usize..2048,
    ) {
        let mut a = Tree::new(MemoryStore::new(), rep(1));
        let mut b = Tree::new(MemoryStore::new(), rep(2));
        let mut pool = Vec::new();
        for i in 0..a_ops { local(&mut a, &mut pool, (i % 5) as u8, i * 7, i * 3); }
        let mut pool_b = Vec::new();
        for i in 0..b_ops { local(&mut b, &mut pool_b, (i % 5) as u8, i * 5, i * 11); }
        let small = Options { live: false, batch_bytes: batch, poll_budget: batch };
        {
            let mut pa = FullPeer::new(&mut a, Session::new(AllowAll, small));
            let mut pb = FullPeer::new(&mut b, Session::new(AllowAll, small));
            memory::pump(&mut pa, &mut pb, Some(cut)).unwrap();
        }
        let fa = a.store().frontier().unwrap();
        let fb = b.store().frontier().unwrap();
        let missing_at_b: u64 = fa.iter().map(|(r, s)| s.saturating_sub(fb.get(&r))).sum();
        let stats = {
            let mut pa = FullPeer::new(&mut a, Session::new(AllowAll, small));
            let mut pb = FullPeer::new(&mut b, Session::new(AllowAll, small));
            memory::pump(&mut pa, &mut pb, None).unwrap()
        };
        let total_b = stats.events_b.iter().find_map(|e| match e {
            Event::Progress(p) if p.total.is_some() => p.total,
            _ => None,
        });
        prop_assert_eq!(total_b, Some(missing_at_b));
        let received = stats.events_b.iter().rev().find_map(|e| match e {
            Event::Progress(p) => Some(p.done),
            _ => None,
        });
        prop_assert_eq!(received, Some(missing_at_b));
        prop_assert_eq!(a.store().frontier().unwrap(), b.store().frontier().unwrap());
        prop_assert_eq!(snapshot(&a), snapshot(&b));
    }

    /// With a subtree grant, a partial replica receives nothing about nodes outside subtree(X) and
    /// the path: no node id outside them appears in any message it receives, payloads are withheld
    /// without the payload right, and what it holds equals the full replica restricted.
    #[test]
    fn read_filter_never_leaks_node_ids(
        acts in proptest::collection::vec((0u8..6, any::<usize>(), any::<usize>(), any::<bool>()), 1..60),
        payloads in any::<bool>(),
    ) {
        let mut t = Tree::new(MemoryStore::new(), rep(1));
        let g = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
        let x = t.create(g, Place::Last, None).unwrap().node();
        let mut pool = vec![g, x];
        for _ in 0..3 { pool.push(t.create(x, Place::Last, None).unwrap().node()); }
        let mut p = PartialReplica::new(x, rep(9));
        let filter = if payloads { SubtreeScope::new(x) } else { SubtreeScope::structure_only(x) };
        for (k, a, b, sync) in acts {
            local(&mut t, &mut pool, k, a, b);
            if !sync { continue; }
            let (_, got) = sync_partial(&mut t, filter, &mut p, None)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut allowed: Vec<NodeId> = t.subtree(x).map(|r| r.unwrap().0).collect();
            allowed.push(x);
            allowed.extend(t.ancestors(x).unwrap());
            for n in &pool {
                if allowed.contains(n) { continue; }
                for m in &got {
                    prop_assert!(
                        !m.windows(16).any(|w| w == n.as_bytes()),
                        "node id outside the grant sent"
                    );
                }
            }
            prop_assert_eq!(p.records(), restricted(&t, x, payloads));
        }
    }

    /// Two full replicas and a partial replica in live sessions, with local ops on all three
    /// between deliveries, end with identical full replicas and the partial one equal to the full
    /// one restricted to its scope; nothing is lost or echoed.
    #[test]
    fn live_sessions_converge(
        acts in proptest::collection::vec((0u8..3, 0u8..6, any::<usize>(), any::<usize>(), any::<bool>()), 1..40),
    ) {
        let (mut a, mut b) = diverged(3, 2, 2);
        let x = a.children(NodeId::ROOT, None, 1).unwrap()[0].node;
        let mut pool: Vec<NodeId> = a.subtree(NodeId::ROOT).map(|r| r.unwrap().0).collect();
        pool.extend(b.subtree(NodeId::ROOT).map(|r| r.unwrap().0));
        let mut p = PartialReplica::new(x, rep(9));
        let (mut sa, mut sb) = {
            let mut pa = FullPeer::new(&mut a, Session::new(AllowAll, opts(true)));
            let mut pb = FullPeer::new(&mut b, Session::new(AllowAll, opts(true)));
            memory::pump(&mut pa, &mut pb, None).unwrap();
            (Some(pa.into_session()), Some(pb.into_session()))
        };
        let (mut sp, mut sr) = {
            let mut pp = PartialPeer::new(&mut p, PartialSession::new(opts(true)));
            let mut pr = FullPeer::new(&mut b, Session::new(SubtreeScope::new(x), opts(true)));
            memory::pump(&mut pp, &mut pr, None).unwrap();
            (Some(pp.into_session()), Some(pr.into_session()))
        };
        let mut settle = |a: &mut T, b: &mut T, p: &mut PartialReplica| {
            let mut pa = FullPeer::new(a, sa_take(&mut sa));
            let mut pb = FullPeer::new(&mut *b, sa_take(&mut sb));
            memory::settle(&mut pa, &mut pb).unwrap();
            sa = Some(pa.into_session());
            sb = Some(pb.into_session());
            let mut pp = PartialPeer::new(p, sp.take().unwrap());
            let mut pr = FullPeer::new(b, sa_take(&mut sr));
            memory::settle(&mut pp, &mut pr).unwrap();
            sp = Some(pp.into_session());
            sr = Some(pr.into_session());
        };
        for (who, k, i, j, deliver) in acts {
            match who {
                0 => local(&mut a, &mut pool, k, i, j),
                1 => local(&mut b, &mut pool, k, i, j),
                _ => partial_local(&mut p, &mut pool, k % 4, i, j),
            }
            if deliver {
                settle(&mut a, &mut b, &mut p);
            }
        }
        for _ in 0..3 {
            settle(&mut a, &mut b, &mut p);
        }
        prop_assert_eq!(a.store().frontier().unwrap(), b.store().frontier().unwrap());
        prop_assert_eq!(snapshot(&a), snapshot(&b));
        prop_assert!(p.unacked().is_empty());
        p.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.records(), restricted(&b, x, true));
    }

    /// Any sequence of well-formed but arbitrary messages (crafted peers) never panics a full
    /// or partial session, never corrupts the tree, and ends in a typed error or a normal state.
    #[test]
    fn crafted_message_sequences_never_panic(
        msgs in proptest::collection::vec(message(), 1..12),
        scoped in any::<bool>(),
    ) {
        let mut t = Tree::new(MemoryStore::new(), rep(1));
        let x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
        t.create(x, Place::Last, Some(b"p".to_vec())).unwrap();
        let hello = Message::Hello {
            mode: Mode::Partial { scope: x, since: VersionVector::new() },
            digest: [0; 32],
            count: 0,
            live: true,
            entries: EntriesSummary::default(),
        };
        let mut full_s = Session::new(AllowAll, opts(true));
        let mut scoped_s = Session::new(SubtreeScope::new(x), opts(true));
        let mut p = PartialReplica::new(x, rep(9));
        let mut ps = PartialSession::new(opts(true));
        let _ = ps.start(&mut p);
        let server_hello = Message::Hello {
            mode: Mode::Full,
            digest: [0; 32],
            count: 0,
            live: true,
            entries: EntriesSummary::default(),
        };
        let _ = ps.receive(&mut p, &server_hello.encode());
        for m in std::iter::once(hello).chain(msgs.iter().cloned()) {
            let bytes = m.encode();
            let out = if scoped {
                scoped_s.receive(&mut t, &bytes)
            } else {
                full_s.receive(&mut t, &bytes)
            };
            for sent in &out.send {
                prop_assert!(Message::decode(sent).is_ok());
            }
            let _ = if scoped { scoped_s.poll(&t) } else { full_s.poll(&t) };
        }
        for m in &msgs {
            let _ = ps.receive(&mut p, &m.encode());
            let _ = ps.poll(&p);
        }
        t.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
        p.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    /// A grant on X that excludes a subtree H inside it (the shape of an attenuated capability):
    /// the partial replica holds subtree(X) minus subtree(H), also when nodes move into or out of
    /// H, and no id under H is ever sent.
    #[test]
    fn read_filter_with_an_excluded_subtree(
        acts in proptest::collection::vec((0u8..6, any::<usize>(), any::<usize>(), any::<bool>()), 1..60),
    ) {
        let mut t = Tree::new(MemoryStore::new(), rep(1));
        let x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
        let h = t.create(x, Place::Last, None).unwrap().node();
        let mut pool = vec![x, h];
        for _ in 0..2 { pool.push(t.create(x, Place::Last, None).unwrap().node()); }
        pool.push(t.create(h, Place::Last, None).unwrap().node());
        let mut p = PartialReplica::new(x, rep(9));
        let filter = Excluding { root: x, hidden: h };
        for (k, a, b, sync) in acts {
            local(&mut t, &mut pool, k, a, b);
            if !sync { continue; }
            let got = match sync_partial(&mut t, filter, &mut p, None) {
                Ok((_, got)) => got,
                // X itself moved under H: the grant no longer covers the scope
                Err(PumpError::B(SyncError::RefusedPeer(ErrorCode::ScopeNotReadable)))
                    if t.store().is_within(x, h).unwrap() => continue,
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            let under_h: Vec<NodeId> = if t.store().is_within(h, x).unwrap() {
                std::iter::once(h).chain(t.subtree(h).map(|r| r.unwrap().0)).collect()
            } else {
                Vec::new()
            };
            for n in &under_h {
                for m in &got {
                    prop_assert!(!m.windows(16).any(|w| w == n.as_bytes()), "hidden id sent");
                }
            }
            let want: Vec<NodeRecord> = restricted(&t, x, true)
                .into_iter()
                .filter(|r| !under_h.contains(&r.node))
                .collect();
            prop_assert_eq!(p.records(), want);
        }
    }

    /// Random bytes never panic the decoder, and decoding then re-encoding is the identity.
    #[test]
    fn random_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes.clone());
        }
        let mut framed = vec![1u8];
        framed.extend_from_slice(&bytes);
        if let Ok(m) = Message::decode(&framed) {
            prop_assert_eq!(m.encode(), framed);
        }
        let _ = PartialReplica::decode(&bytes);
    }

    /// Every message round-trips through its encoding.
    #[test]
    fn messages_round_trip(m in message()) {
        let bytes = m.encode();
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
        // every strict prefix is a typed error
        for cut in 0..bytes.len() {
            prop_assert!(Message::decode(&bytes[..cut]).is_err());
        }
    }
}

fn vv_strategy() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((any::<u8>(), 1u64..1 << 40), 0..4)
        .prop_map(|v| v.into_iter().map(|(r, s)| (rep(r), s)).collect())
}

fn node_strategy() -> impl Strategy<Value = NodeId> {
    any::<[u8; 16]>().prop_map(NodeId::from_bytes)
}

fn op_id_strategy() -> impl Strategy<Value = OpId> {
    (any::<u8>(), 1u64..1 << 50).prop_map(|(r, s)| OpId::new(rep(r), s))
}

fn position_strategy() -> impl Strategy<Value = Position> {
    (any::<u8>(), 0u64..1000).prop_map(|(r, i)| {
        let mut p = Position::first(&rep(r));
        for _ in 0..(i % 5) {
            p = Position::after(&p, &rep(r)).unwrap();
        }
        p
    })
}

fn record_strategy() -> impl Strategy<Value = NodeRecord> {
    (
        node_strategy(),
        node_strategy(),
        position_strategy(),
        op_id_strategy(),
        prop_oneof![
            Just(PayloadState::None),
            Just(PayloadState::Withheld),
            (
                proptest::collection::vec(any::<u8>(), 0..20),
                op_id_strategy()
            )
                .prop_map(|(bytes, set_by)| PayloadState::Present { bytes, set_by }),
        ],
    )
        .prop_map(|(node, parent, position, placed_by, payload)| NodeRecord {
            node,
            parent,
            position,
            placed_by,
            payload,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<bool>(),
            node_strategy(),
            vv_strategy(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<bool>(),
            (0u64..3, any::<[u8; 32]>()),
        )
            .prop_map(|(partial, scope, since, digest, count, live, (n, d))| {
                Message::Hello {
                    mode: if partial {
                        Mode::Partial { scope, since }
                    } else {
                        Mode::Full
                    },
                    digest,
                    count,
                    live,
                    entries: if n == 0 {
                        EntriesSummary::default()
                    } else {
                        EntriesSummary {
                            count: n,
                            digest: d,
                        }
                    },
                }
            }),
        (
            proptest::collection::btree_set(any::<[u8; 32]>(), 0..4),
            any::<bool>()
        )
            .prop_map(|(ids, more)| Message::EntryIds {
                ids: ids.into_iter().map(EntryId::from_bytes).collect(),
                more
            }),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)
            .prop_map(Message::Entries),
        (any::<[u8; 32]>(), refusal_strategy()).prop_map(|(e, code)| Message::RefusedEntry {
            entry: EntryId::from_bytes(e),
            code
        }),
        vv_strategy().prop_map(Message::Frontier),
        proptest::collection::vec(
            (op_id_strategy(), node_strategy(), position_strategy()),
            0..4
        )
        .prop_map(|v| Message::Ops(
            v.into_iter()
                .map(|(id, node, position)| Op::new(
                    id,
                    Lamport::new(id.seq() + 1),
                    OpKind::Move {
                        node,
                        parent: NodeId::ROOT,
                        position
                    },
                ))
                .collect()
        )),
        Just(Message::End),
        Just(Message::Close),
        (
            proptest::collection::vec(record_strategy(), 0..4),
            any::<bool>()
        )
            .prop_map(|(records, first_view)| Message::Nodes {
                records,
                first_view
            }),
        proptest::collection::vec(any::<[u8; 16]>(), 0..4).prop_map(Message::Gone),
        (vv_strategy(), any::<u64>()).prop_map(|(frontier, max_lamport)| Message::Checkpoint {
            frontier,
            max_lamport
        }),
        (
            proptest::collection::vec(
                (node_strategy(), node_strategy(), position_strategy()),
                0..3
            ),
            any::<u64>()
        )
            .prop_map(|(v, total)| Message::Path {
                entries: v
                    .into_iter()
                    .map(|(node, parent, position)| canopy_sync::PathEntry {
                        node,
                        parent,
                        position
                    })
                    .collect(),
                total,
                reset: total % 2 == 0,
            }),
        (op_id_strategy(), refusal_strategy()).prop_map(|(op, code)| Message::Refused { op, code }),
        prop_oneof![
            Just(ErrorCode::Malformed),
            Just(ErrorCode::Unexpected),
            Just(ErrorCode::FullSyncNotAllowed),
            Just(ErrorCode::ScopeNotReadable),
            Just(ErrorCode::Storage),
        ]
        .prop_map(Message::Error),
    ]
}

fn refusal_strategy() -> impl Strategy<Value = RefusalCode> {
    (0u8..=10).prop_map(|b| RefusalCode::from_byte(b).expect("codes 0..=10 exist"))
}

// ------------------------------------------------------------------ examples

/// Read access to subtree(`root`) except subtree(`hidden`).
#[derive(Clone, Copy, Debug)]
struct Excluding {
    root: NodeId,
    hidden: NodeId,
}

impl ReadFilter for Excluding {
    fn can_read_log(&self, _: &ReadContext<'_>) -> bool {
        false
    }
    fn can_read_structure(&self, _: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        (node == self.root || ancestors.contains(&self.root))
            && node != self.hidden
            && !ancestors.contains(&self.hidden)
    }
    fn can_read_payload(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.can_read_structure(cx, node, ancestors)
    }
}

/// Takes a session out of its slot (live tests pair sessions with trees again for each delivery).
fn sa_take<F: ReadFilter>(slot: &mut Option<Session<F>>) -> Session<F> {
    slot.take().expect("session")
}

fn diverged(common: usize, a_only: usize, b_only: usize) -> (T, T) {
    let mut a = Tree::new(MemoryStore::new(), rep(1));
    for _ in 0..common {
        a.create(NodeId::ROOT, Place::Last, Some(vec![1; 8]))
            .unwrap();
    }
    let mut b = Tree::new(MemoryStore::new(), rep(2));
    sync_full(&mut a, &mut b);
    for _ in 0..a_only {
        a.create(NodeId::ROOT, Place::Last, Some(vec![2; 8]))
            .unwrap();
    }
    for _ in 0..b_only {
        b.create(NodeId::ROOT, Place::First, Some(vec![3; 8]))
            .unwrap();
    }
    (a, b)
}

#[test]
fn in_sync_replicas_finish_in_one_round_trip_under_1kb() {
    let (mut a, mut b) = diverged(2000, 0, 0);
    let stats = sync_full(&mut a, &mut b);
    assert_eq!(stats.round_trips, 1);
    assert_eq!(stats.messages, 2);
    assert!(stats.bytes() < 1024, "{} bytes", stats.bytes());
    assert!(stats.events_a.contains(&Event::FirstViewReady));
}

#[test]
fn differences_cost_about_the_ops_and_two_round_trips() {
    let (mut a, mut b) = diverged(3000, 500, 500);
    let fa = a.store().frontier().unwrap();
    let ops_bytes: usize = (1..=fa.get(&rep(1)))
        .skip(3000)
        .map(|s| {
            a.store()
                .entry(OpId::new(rep(1), s))
                .unwrap()
                .unwrap()
                .op
                .encode()
                .len()
        })
        .sum::<usize>()
        * 2;
    let stats = sync_full(&mut a, &mut b);
    assert_eq!(stats.round_trips, 2);
    assert!(stats.bytes() as usize <= 2 * ops_bytes + 2048);
    assert_eq!(snapshot(&a), snapshot(&b));
    // the exact total is known after the frontiers, and reached
    let totals: Vec<_> = stats
        .events_b
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => p.total,
            _ => None,
        })
        .collect();
    assert_eq!(totals.first(), Some(&500));
    assert!(stats
        .events_b
        .iter()
        .any(|e| matches!(e, Event::Progress(p) if p.phase == Phase::Applying)));
    assert!(stats
        .events_b
        .iter()
        .any(|e| matches!(e, Event::Changed(_))));
}

#[test]
fn sqlite_and_memory_replicas_sync() {
    let mut a = Tree::new(canopy_tree::SqliteStore::open_in_memory().unwrap(), rep(1));
    let mut b = Tree::new(MemoryStore::new(), rep(2));
    let n = a
        .create(NodeId::ROOT, Place::Last, Some(b"a".to_vec()))
        .unwrap()
        .node();
    b.create(NodeId::ROOT, Place::Last, Some(b"b".to_vec()))
        .unwrap();
    let mut pa = FullPeer::new(&mut a, Session::new(AllowAll, opts(false)));
    let mut pb = FullPeer::new(&mut b, Session::new(AllowAll, opts(false)));
    memory::pump(&mut pa, &mut pb, None).unwrap();
    assert_eq!(a.child_count(NodeId::ROOT).unwrap(), 2);
    assert_eq!(b.payload(n).unwrap(), Some(b"a".to_vec()));
    // and a partial replica from the SQLite replica
    let mut p = PartialReplica::new(NodeId::ROOT, rep(3));
    let mut rec = PartialPeer::new(&mut p, PartialSession::new(opts(false)));
    let mut f = FullPeer::new(&mut a, Session::new(AllowAll, opts(false)));
    memory::pump(&mut rec, &mut f, None).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p.records(), restricted(&a, NodeId::ROOT, true));
}

#[test]
fn live_mode_carries_new_ops_both_ways_and_to_partial_replicas() {
    let (mut a, mut b) = diverged(10, 0, 0);
    let x = a.children(NodeId::ROOT, None, 1).unwrap()[0].node;
    let mut p = PartialReplica::new(x, rep(7));
    {
        let mut pa = FullPeer::new(&mut a, Session::new(AllowAll, opts(true)));
        let mut pb = FullPeer::new(&mut b, Session::new(AllowAll, opts(true)));
        let stats = memory::pump(&mut pa, &mut pb, None).unwrap();
        assert_eq!(pa.session().phase(), Phase::Live);
        assert!(stats
            .events_b
            .iter()
            .any(|e| matches!(e, Event::Progress(p) if p.phase == Phase::Live)));
        let n = pa
            .replica()
            .create(NodeId::ROOT, Place::Last, None)
            .unwrap()
            .node();
        memory::settle(&mut pa, &mut pb).unwrap();
        assert!(pb.replica().exists(n).unwrap());
        let m = pb.replica().create(n, Place::Last, None).unwrap().node();
        memory::settle(&mut pa, &mut pb).unwrap();
        assert_eq!(pa.replica().parent(m).unwrap(), Some(n));
        // nothing is echoed back
        let quiet = memory::settle(&mut pa, &mut pb).unwrap();
        assert_eq!(quiet.messages, 0);
    }
    let mut pp = PartialPeer::new(&mut p, PartialSession::new(opts(true)));
    let mut pa = FullPeer::new(&mut a, Session::new(SubtreeScope::new(x), opts(true)));
    memory::pump(&mut pp, &mut pa, None).unwrap();
    assert_eq!(pp.session().phase(), Phase::Live);
    let c = pa
        .replica()
        .create(x, Place::Last, Some(b"live".to_vec()))
        .unwrap()
        .node();
    memory::settle(&mut pp, &mut pa).unwrap();
    assert!(pp.replica().contains(c));
    let d = NodeId::from_bytes([0x42; 16]);
    pp.replica().create(d, c, Place::Last, None).unwrap();
    memory::settle(&mut pp, &mut pa).unwrap();
    assert_eq!(pa.replica().parent(d).unwrap(), Some(c));
    assert!(pp.replica().unacked().is_empty());
    // a node moved out of scope arrives as gone
    pa.replica()
        .move_node(c, NodeId::ROOT, Place::Last)
        .unwrap();
    memory::settle(&mut pp, &mut pa).unwrap();
    assert!(!pp.replica().contains(c) && !pp.replica().contains(d));
}

#[test]
fn crafted_requests_outside_the_grant_are_refused() {
    let mut t = Tree::new(MemoryStore::new(), rep(1));
    let x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    let y = t
        .create(NodeId::ROOT, Place::Last, Some(b"secret".to_vec()))
        .unwrap()
        .node();
    let inside = t.create(x, Place::Last, None).unwrap().node();
    let grant = SubtreeScope::new(x);

    // asking for another subtree
    let mut p = PartialReplica::new(y, rep(9));
    let err = sync_partial(&mut t, grant, &mut p, None).unwrap_err();
    assert!(matches!(
        err,
        PumpError::B(SyncError::RefusedPeer(ErrorCode::ScopeNotReadable))
    ));
    assert!(p.is_empty());
    // asking for ROOT, TRASH or an unknown node
    for scope in [NodeId::ROOT, NodeId::TRASH, NodeId::from_bytes([9; 16])] {
        let mut p = PartialReplica::new(scope, rep(9));
        assert!(sync_partial(&mut t, grant, &mut p, None).is_err());
        assert!(p.is_empty());
    }
    // asking for the full log
    let mut other = Tree::new(MemoryStore::new(), rep(2));
    let mut pa = FullPeer::new(&mut t, Session::new(grant, opts(false)));
    let mut pb = FullPeer::new(&mut other, Session::new(AllowAll, opts(false)));
    let err = memory::pump(&mut pb, &mut pa, None).unwrap_err();
    assert!(matches!(
        err,
        PumpError::B(SyncError::RefusedPeer(ErrorCode::FullSyncNotAllowed))
    ));
    assert_eq!(other.store().log_len().unwrap(), 0);

    // a forged checkpoint (claims ops that do not exist, other replicas) gets nothing outside
    let mut forged = VersionVector::new();
    forged.set(rep(1), 1);
    forged.set(rep(77), 5);
    let hello = Message::Hello {
        mode: Mode::Partial {
            scope: x,
            since: forged,
        },
        digest: [0; 32],
        count: 6,
        live: false,
        entries: EntriesSummary::default(),
    };
    let mut s = Session::new(grant, opts(false));
    let mut sent = Vec::new();
    for m in [hello.encode(), Message::End.encode()] {
        let out = s.receive(&mut t, &m);
        assert!(out.error.is_none());
        sent.extend(out.send);
    }
    for m in &sent {
        assert!(!m.windows(16).any(|w| w == y.as_bytes()));
        assert!(!m.windows(6).any(|w| w == b"secret"));
    }
    let records: Vec<NodeId> = sent
        .iter()
        .filter_map(|m| match Message::decode(m).unwrap() {
            Message::Nodes { records, .. } => Some(records),
            _ => None,
        })
        .flatten()
        .map(|r| r.node)
        .collect();
    assert_eq!(records, vec![inside]);

    // a partial replica may not send full-mode messages
    let mut s = Session::new(grant, opts(false));
    let out = s.receive(&mut t, &hello.encode());
    assert!(out.error.is_none());
    let out = s.receive(&mut t, &Message::Frontier(VersionVector::new()).encode());
    assert!(matches!(
        out.error,
        Some(SyncError::Unexpected { got: "frontier" })
    ));
    assert_eq!(
        Message::decode(&out.send[0]),
        Ok(Message::Error(ErrorCode::Unexpected))
    );
    // a malformed message closes the session with a typed error and changes nothing
    let mut s = Session::new(AllowAll, opts(false));
    let before = t.store().log_len().unwrap();
    let out = s.receive(&mut t, &[1, 2, 5, 0xff]);
    assert!(matches!(out.error, Some(SyncError::Wire(_))) && out.finished);
    assert_eq!(t.store().log_len().unwrap(), before);
    assert!(s.receive(&mut t, &Message::End.encode()).error.is_some());
}

#[test]
fn refused_writes_come_back_as_typed_refusals() {
    let mut t = Tree::new(MemoryStore::new(), rep(1));
    let x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    let other = NodeId::from_bytes([4; 16]);
    // a different op with an existing id (equivocation), and an invalid one (parent TRASH)
    let equivocating = Op::new(
        OpId::new(rep(1), 1),
        Lamport::new(1),
        OpKind::Create {
            node: other,
            parent: NodeId::ROOT,
            position: Position::first(&rep(1)),
            payload: None,
        },
    );
    let invalid = Op::new(
        OpId::new(rep(3), 1),
        Lamport::new(5),
        OpKind::Move {
            node: x,
            parent: NodeId::TRASH,
            position: Position::first(&rep(3)),
        },
    );
    let hello = Message::Hello {
        mode: Mode::Partial {
            scope: x,
            since: VersionVector::new(),
        },
        digest: [0; 32],
        count: 0,
        live: false,
        entries: EntriesSummary::default(),
    };
    let mut s = Session::new(AllowAll, opts(false));
    let mut sent = Vec::new();
    let mut events = Vec::new();
    for m in [
        hello.encode(),
        Message::Ops(vec![equivocating.clone(), invalid.clone()]).encode(),
        Message::End.encode(),
    ] {
        let out = s.receive(&mut t, &m);
        assert!(out.error.is_none());
        sent.extend(out.send.iter().map(|b| Message::decode(b).unwrap()));
        events.extend(out.events);
    }
    use canopy_sync::RefusalCode;
    assert!(sent.contains(&Message::Refused {
        op: equivocating.id(),
        code: RefusalCode::Equivocation
    }));
    assert!(sent.contains(&Message::Refused {
        op: invalid.id(),
        code: RefusalCode::Invalid
    }));
    assert!(events.contains(&Event::RejectedFromPeer {
        op: invalid.id(),
        code: RefusalCode::Invalid
    }));
    assert!(!t.exists(other).unwrap() && !t.is_deleted(x).unwrap());
    assert_eq!(t.store().log_len().unwrap(), 1);

    // a partial replica drops a local op refused as invalid (it would never be acknowledged)
    let mut p = PartialReplica::new(x, rep(9));
    sync_partial(&mut t, AllowAll, &mut p, None).unwrap();
    let op = p
        .create(NodeId::from_bytes([3; 16]), x, Place::Last, None)
        .unwrap();
    let mut ps = PartialSession::new(opts(false));
    let out = ps.start(&mut p);
    assert_eq!(out.send.len(), 3, "hello, the unacked op, end");
    let out = ps.receive(
        &mut p,
        &Message::Refused {
            op: op.id(),
            code: RefusalCode::Invalid,
        }
        .encode(),
    );
    assert!(out.events.contains(&Event::Refused {
        op: op.id(),
        code: RefusalCode::Invalid
    }));
    assert!(p.unacked().is_empty());
}

#[test]
fn cold_partial_sync_reports_first_view_and_exact_totals() {
    let mut t = Tree::new(MemoryStore::new(), rep(1));
    let x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    for i in 0..30 {
        let c = t.create(x, Place::Last, Some(vec![i])).unwrap().node();
        for _ in 0..20 {
            t.create(c, Place::Last, Some(vec![0; 100])).unwrap();
        }
    }
    let mut p = PartialReplica::new(x, rep(9));
    let mut pp = PartialPeer::new(
        &mut p,
        PartialSession::new(Options {
            live: false,
            batch_bytes: 4096,
            poll_budget: 1 << 20,
        }),
    );
    let mut f = FullPeer::new(&mut t, Session::new(AllowAll, opts(false)));
    let stats = memory::pump(&mut pp, &mut f, None).unwrap();
    let first_view = stats
        .events_a
        .iter()
        .position(|e| *e == Event::FirstViewReady)
        .unwrap();
    let last_progress = stats
        .events_a
        .iter()
        .rposition(|e| matches!(e, Event::Progress(_)))
        .unwrap();
    assert!(first_view < last_progress, "first view before the end");
    assert_eq!(
        stats.events_a[last_progress],
        Event::Progress(canopy_sync::Progress {
            phase: Phase::Done,
            total: Some(630),
            done: 630,
            bytes_sent: match &stats.events_a[last_progress] {
                Event::Progress(p) => p.bytes_sent,
                _ => 0,
            },
            bytes_received: stats.bytes_b_to_a,
        })
    );
    assert_eq!(stats.round_trips, 1);
    // warm and unchanged: one round trip, tiny, the checkpoint alone
    let (stats, got) = sync_partial(&mut t, AllowAll, &mut p, None).unwrap();
    assert_eq!(stats.round_trips, 1);
    assert!(stats.bytes() < 1024);
    let kinds: Vec<Message> = got.iter().map(|m| Message::decode(m).unwrap()).collect();
    assert!(
        matches!(
            kinds[..],
            [Message::Hello { .. }, Message::Checkpoint { .. }]
        ),
        "{kinds:?}"
    );
}

// ------------------------------------------------------------------ spec vectors

mod vectors {
    use super::*;
    use canopy_sync::{
        entries_digest, frontier_count, frontier_digest, gone_digest, PathEntry, RefusalCode,
    };
    use serde_json::{json, Value};

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/vectors/sync.json");

    fn vv_json(vv: &VersionVector) -> Value {
        Value::Array(
            vv.iter()
                .map(|(r, s)| json!({"replica": r.to_string(), "seq": s}))
                .collect(),
        )
    }

    fn op_id_json(id: OpId) -> Value {
        json!({"replica": id.replica().to_string(), "seq": id.seq()})
    }

    /// The JSON form of a message, as the vectors list it.
    fn to_json(m: &Message) -> Value {
        match m {
            Message::Hello {
                mode,
                digest,
                count,
                live,
                entries,
            } => {
                let mode = match mode {
                    Mode::Full => json!({"kind": "full"}),
                    Mode::Partial { scope, since } => {
                        json!({"kind": "partial", "scope": scope.to_string(), "since": vv_json(since)})
                    }
                    _ => json!({"kind": "unknown"}),
                };
                json!({
                    "type": "hello", "mode": mode, "digest": hex::encode(digest), "count": count,
                    "live": live, "entries": {"count": entries.count, "digest": hex::encode(entries.digest)},
                })
            }
            Message::Frontier(vv) => json!({"type": "frontier", "frontier": vv_json(vv)}),
            Message::Ops(ops) => json!({
                "type": "ops",
                "ops": ops.iter().map(|o| hex::encode(o.encode())).collect::<Vec<_>>(),
            }),
            Message::End => json!({"type": "end"}),
            Message::Path {
                entries,
                total,
                reset,
            } => json!({
                "type": "path",
                "reset": reset,
                "total": total,
                "entries": entries.iter().map(|e| json!({
                    "node": e.node.to_string(),
                    "parent": e.parent.to_string(),
                    "position": hex::encode(e.position.as_bytes()),
                })).collect::<Vec<_>>(),
            }),
            Message::Nodes {
                records,
                first_view,
            } => json!({
                "type": "nodes",
                "first_view": first_view,
                "records": records.iter().map(|r| json!({
                    "node": r.node.to_string(),
                    "parent": r.parent.to_string(),
                    "position": hex::encode(r.position.as_bytes()),
                    "placed_by": op_id_json(r.placed_by),
                    "payload": match &r.payload {
                        PayloadState::None => json!({"kind": "none"}),
                        PayloadState::Withheld => json!({"kind": "withheld"}),
                        PayloadState::Present { bytes, set_by } => json!({
                            "kind": "present", "bytes": hex::encode(bytes), "set_by": op_id_json(*set_by),
                        }),
                        _ => json!({"kind": "unknown"}),
                    },
                })).collect::<Vec<_>>(),
            }),
            Message::Gone(ds) => json!({
                "type": "gone",
                "digests": ds.iter().map(hex::encode).collect::<Vec<_>>(),
            }),
            Message::Checkpoint {
                frontier,
                max_lamport,
            } => json!({
                "type": "checkpoint", "frontier": vv_json(frontier), "max_lamport": max_lamport,
            }),
            Message::Refused { op, code } => json!({
                "type": "refused", "op": op_id_json(*op), "code": format!("{code:?}"),
            }),
            Message::EntryIds { ids, more } => json!({
                "type": "entry_ids", "more": more,
                "ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
            }),
            Message::Entries(es) => json!({
                "type": "entries",
                "entries": es.iter().map(hex::encode).collect::<Vec<_>>(),
            }),
            Message::RefusedEntry { entry, code } => json!({
                "type": "refused_entry", "entry": entry.to_string(), "code": format!("{code:?}"),
            }),
            Message::Error(code) => json!({"type": "error", "code": format!("{code:?}")}),
            Message::Close => json!({"type": "close"}),
            _ => json!({"type": "unknown"}),
        }
    }

    fn samples() -> Vec<(&'static str, Message)> {
        let a = rep(0xa1);
        let b = rep(0xb2);
        let mut vv = VersionVector::new();
        vv.set(a, 3);
        vv.set(b, 200);
        let x = NodeId::from_bytes([0x11; 16]);
        let y = NodeId::from_bytes([0x22; 16]);
        let pos = Position::first(&a);
        let op = Op::new(
            OpId::new(a, 4),
            Lamport::new(9),
            OpKind::Create {
                node: y,
                parent: x,
                position: pos.clone(),
                payload: Some(b"hi".to_vec()),
            },
        );
        vec![
            (
                "hello full",
                Message::Hello {
                    mode: Mode::Full,
                    digest: frontier_digest(&vv),
                    count: frontier_count(&vv),
                    live: true,
                    entries: EntriesSummary::default(),
                },
            ),
            (
                "hello full with entries",
                Message::Hello {
                    mode: Mode::Full,
                    digest: frontier_digest(&vv),
                    count: frontier_count(&vv),
                    live: false,
                    entries: EntriesSummary::of(&entry_ids()),
                },
            ),
            (
                "hello partial cold",
                Message::Hello {
                    mode: Mode::Partial {
                        scope: x,
                        since: VersionVector::new(),
                    },
                    digest: frontier_digest(&VersionVector::new()),
                    count: 0,
                    live: false,
                    entries: EntriesSummary::default(),
                },
            ),
            ("frontier", Message::Frontier(vv.clone())),
            ("ops", Message::Ops(vec![op])),
            ("end", Message::End),
            (
                "path",
                Message::Path {
                    entries: vec![PathEntry {
                        node: x,
                        parent: NodeId::ROOT,
                        position: pos.clone(),
                    }],
                    total: 2,
                    reset: true,
                },
            ),
            (
                "nodes",
                Message::Nodes {
                    first_view: true,
                    records: vec![
                        NodeRecord {
                            node: y,
                            parent: x,
                            position: pos.clone(),
                            placed_by: OpId::new(a, 4),
                            payload: PayloadState::Present {
                                bytes: b"hi".to_vec(),
                                set_by: OpId::new(a, 4),
                            },
                        },
                        NodeRecord {
                            node: NodeId::from_bytes([0x33; 16]),
                            parent: y,
                            position: pos.clone(),
                            placed_by: OpId::new(b, 130),
                            payload: PayloadState::Withheld,
                        },
                    ],
                },
            ),
            ("gone", Message::Gone(vec![gone_digest(y)])),
            (
                "checkpoint",
                Message::Checkpoint {
                    frontier: vv.clone(),
                    max_lamport: 300,
                },
            ),
            (
                "refused",
                Message::Refused {
                    op: OpId::new(b, 1),
                    code: RefusalCode::Equivocation,
                },
            ),
            (
                "entry ids",
                Message::EntryIds {
                    ids: entry_ids(),
                    more: false,
                },
            ),
            ("entries", Message::Entries(sample_entries())),
            (
                "refused entry",
                Message::RefusedEntry {
                    entry: entry_ids()[0],
                    code: RefusalCode::BadDelegation,
                },
            ),
            (
                "refused bad signature",
                Message::Refused {
                    op: OpId::new(a, 2),
                    code: RefusalCode::BadSignature,
                },
            ),
            ("error", Message::Error(ErrorCode::ScopeNotReadable)),
            ("close", Message::Close),
        ]
    }

    /// Two document entries (opaque to sync: any bytes) and their sorted ids.
    fn sample_entries() -> Vec<Vec<u8>> {
        vec![b"\x11\x00".to_vec(), b"\x13entry".to_vec()]
    }

    fn entry_ids() -> Vec<EntryId> {
        let mut ids: Vec<EntryId> = sample_entries().iter().map(|e| EntryId::of(e)).collect();
        ids.sort();
        ids
    }

    fn invalid() -> Vec<(&'static str, Vec<u8>, &'static str)> {
        vec![
            ("empty", vec![], "Truncated"),
            ("version 1", vec![1, 3], "UnsupportedVersion"),
            ("unknown type", vec![2, 99], "UnknownType"),
            ("trailing byte", vec![2, 3, 0], "TrailingBytes"),
            ("overlong varint", vec![2, 1, 0x80, 0x00], "VarintOverlong"),
            (
                "zero vv entry",
                {
                    let mut v = vec![2, 1, 1];
                    v.extend_from_slice(&[7; 32]);
                    v.push(0);
                    v
                },
                "VersionVector",
            ),
            (
                "bad live flag",
                {
                    let mut v = vec![2, 0, 0];
                    v.extend_from_slice(&[0; 32]);
                    v.extend_from_slice(&[0, 2]);
                    v
                },
                "InvalidValue",
            ),
            (
                "hello entries count without digest",
                {
                    let mut v = vec![2, 0, 0];
                    v.extend_from_slice(&[0; 32]);
                    v.extend_from_slice(&[0, 0, 1]);
                    v
                },
                "Truncated",
            ),
            ("list too long", vec![2, 6, 0x81, 0x80, 0x04], "TooMany"),
            ("truncated gone", vec![2, 6, 1, 0xaa], "Truncated"),
            (
                "entry ids not sorted",
                {
                    let mut v = vec![2, 11, 0, 2];
                    v.extend_from_slice(&[2; 32]);
                    v.extend_from_slice(&[1; 32]);
                    v
                },
                "InvalidValue",
            ),
            (
                "unknown refusal code",
                {
                    let mut v = vec![2, 13];
                    v.extend_from_slice(&[1; 32]);
                    v.push(11);
                    v
                },
                "InvalidValue",
            ),
        ]
    }

    fn build() -> Value {
        let vvs: Vec<VersionVector> = vec![
            VersionVector::new(),
            [(rep(1), 1)].into_iter().collect(),
            [(rep(0xa1), 3), (rep(0xb2), 200)].into_iter().collect(),
        ];
        let nodes = [NodeId::from_bytes([0x22; 16]), NodeId::from_bytes([0; 16])];
        let entries_sets = [Vec::new(), entry_ids()];
        json!({
            "description": "canopy sync messages (spec/sync.md): hex is the exact encoding; message is its decoded form; invalid inputs name the WireError variant",
            "messages": samples().iter().map(|(name, m)| json!({
                "name": name, "hex": hex::encode(m.encode()), "message": to_json(m),
            })).collect::<Vec<_>>(),
            "frontier_digests": vvs.iter().map(|vv| json!({
                "frontier": vv_json(vv),
                "digest": hex::encode(frontier_digest(vv)),
                "count": frontier_count(vv),
            })).collect::<Vec<_>>(),
            "entries_digests": entries_sets.iter().map(|ids| json!({
                "ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                "digest": hex::encode(entries_digest(ids)),
            })).collect::<Vec<_>>(),
            "gone_digests": nodes.iter().map(|n| json!({
                "node": n.to_string(), "digest": hex::encode(gone_digest(*n)),
            })).collect::<Vec<_>>(),
            "invalid": invalid().iter().map(|(name, bytes, error)| json!({
                "name": name, "hex": hex::encode(bytes), "error": error,
            })).collect::<Vec<_>>(),
        })
    }

    /// Checks `spec/vectors/sync.json` against the implementation. `CANOPY_WRITE_VECTORS=1`
    /// rewrites it from the samples above (then review the diff).
    #[test]
    fn spec_vectors() {
        if std::env::var_os("CANOPY_WRITE_VECTORS").is_some() {
            let text = serde_json::to_string_pretty(&build()).unwrap();
            std::fs::write(PATH, text + "\n").unwrap();
        }
        let text = std::fs::read_to_string(PATH).expect("spec/vectors/sync.json");
        let v: Value = serde_json::from_str(&text).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), samples().len());
        for m in msgs {
            let bytes = hex::decode(m["hex"].as_str().unwrap()).unwrap();
            let decoded = Message::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", m["name"]));
            assert_eq!(to_json(&decoded), m["message"], "{}", m["name"]);
            assert_eq!(decoded.encode(), bytes, "{}", m["name"]);
        }
        for d in v["frontier_digests"].as_array().unwrap() {
            let vv: VersionVector = d["frontier"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["replica"].as_str().unwrap().parse().unwrap(),
                        e["seq"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                hex::encode(frontier_digest(&vv)),
                d["digest"].as_str().unwrap()
            );
            assert_eq!(frontier_count(&vv), d["count"].as_u64().unwrap());
        }
        for d in v["entries_digests"].as_array().unwrap() {
            let ids: Vec<EntryId> = d["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().parse().unwrap())
                .collect();
            assert_eq!(
                hex::encode(entries_digest(&ids)),
                d["digest"].as_str().unwrap()
            );
        }
        for d in v["gone_digests"].as_array().unwrap() {
            let n: NodeId = d["node"].as_str().unwrap().parse().unwrap();
            assert_eq!(hex::encode(gone_digest(n)), d["digest"].as_str().unwrap());
        }
        let bad = v["invalid"].as_array().unwrap();
        assert!(!bad.is_empty());
        for b in bad {
            let bytes = hex::decode(b["hex"].as_str().unwrap()).unwrap();
            let err = Message::decode(&bytes).unwrap_err();
            let name = format!("{err:?}");
            assert!(
                name.starts_with(b["error"].as_str().unwrap()),
                "{}: {name}",
                b["name"]
            );
        }
    }
}

/// Regression: a tree engine bug found by `partial_equals_full_restricted` (fixed in the tree:
/// a revive walks back through a delete of a node already in TRASH). These 14 valid ops (two
/// replicas; deletes whose `seen` vectors lag, creates into the deleted subtree), applied to a
/// fresh tree in total order, broke `Tree::check_invariants` (`TrashPlacement`).
#[test]
fn tree_trash_placement_reproducer() {
    let text = include_str!("data/trash-placement-ops.hex");
    let ops: Vec<Op> = text
        .lines()
        .map(|l| Op::decode(&hex::decode(l).unwrap()).unwrap())
        .collect();
    let mut t = Tree::new(MemoryStore::new(), rep(99));
    let report = t.apply(ops).unwrap();
    assert_eq!(t.store().log_len().unwrap(), 14, "{report:?}");
    t.check_invariants().unwrap();
}

#[test]
fn many_changes_outside_a_small_scope_become_a_snapshot() {
    let mut t = Tree::new(MemoryStore::new(), rep(1));
    let x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    for _ in 0..10 {
        t.create(x, Place::Last, Some(vec![1])).unwrap();
    }
    let mut p = PartialReplica::new(x, rep(9));
    sync_partial(&mut t, SubtreeScope::new(x), &mut p, None).unwrap();
    let mut outside = Vec::new();
    for _ in 0..2000 {
        outside.push(t.create(NodeId::ROOT, Place::Last, None).unwrap().node());
    }
    let inner = t.create(x, Place::First, None).unwrap().node();
    let (stats, got) = sync_partial(&mut t, SubtreeScope::new(x), &mut p, None).unwrap();
    let msgs: Vec<Message> = got.iter().map(|m| Message::decode(m).unwrap()).collect();
    assert!(msgs
        .iter()
        .any(|m| matches!(m, Message::Path { reset: true, .. })));
    assert!(!msgs.iter().any(|m| matches!(m, Message::Gone(_))));
    assert!(stats.bytes() < 4096, "{} bytes", stats.bytes());
    assert!(p.contains(inner));
    assert_eq!(p.records(), restricted(&t, x, true));
    // a few changes outside stay a warm delta
    for _ in 0..10 {
        t.create(NodeId::ROOT, Place::Last, None).unwrap();
    }
    let (_, got) = sync_partial(&mut t, SubtreeScope::new(x), &mut p, None).unwrap();
    assert!(got.iter().any(|m| matches!(
        Message::decode(m).unwrap(),
        Message::Path { reset: false, .. }
    )));
    assert_eq!(p.records(), restricted(&t, x, true));
}
