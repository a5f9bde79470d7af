//! The WebSocket transport end to end over loopback: clients converge through a server on SQLite,
//! live fan-out, partial sync of a subtree, bad frames close only their connection and store
//! nothing, a sync cut short resumes without re-sending what was applied; and the authorized
//! server (`AuthzDocuments`): handshake credentials (401/403/404), capability-filtered reads,
//! writes decided op by op.

use std::time::Duration;

use canopy_sync::memory::{FullPeer, PartialPeer};
use canopy_sync::net::{
    self, ClientError, CloseReason, DocName, Documents, Flow, MemoryDocuments, OpenAccess,
    ServerConfig, SqliteDocuments,
};
use canopy_sync::{
    frontier_count, frontier_digest, AllowAll, Event, Message, Mode, NodeRecord, PartialReplica,
    PartialSession, PayloadState, Phase, Session, SyncError,
};
use canopy_tree::{MemoryStore, NodeId, Place, ReplicaId, SqliteStore, Store, Tree, VersionVector};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type T = Tree<MemoryStore>;

fn rep(b: u8) -> ReplicaId {
    ReplicaId::from_bytes([b; 32])
}

fn session() -> Session<AllowAll> {
    Session::new(AllowAll, net::transport_options(false))
}

fn live_session() -> Session<AllowAll> {
    Session::new(AllowAll, net::transport_options(true))
}

async fn start<D: Documents>(docs: D) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(net::serve(
        listener,
        docs,
        OpenAccess,
        ServerConfig::default(),
    ));
    base
}

/// `n` creates by `r`: a chain-and-fan shape with payloads, returning the nodes.
fn grow(t: &mut T, n: usize, under: NodeId) -> Vec<NodeId> {
    let mut nodes = vec![under];
    for i in 0..n {
        let parent = nodes[(i * 7) % nodes.len()];
        let node = t
            .create(parent, Place::Last, Some(format!("node {i}").into_bytes()))
            .unwrap()
            .node();
        nodes.push(node);
    }
    nodes
}

async fn full_sync(
    url: &str,
    t: &mut T,
) -> Result<net::SyncReport, ClientError<std::convert::Infallible>> {
    let mut peer = FullPeer::new(t, session());
    net::sync(url, &mut peer, |_, _| Flow::Continue).await
}

/// subtree(x) of a full replica as node records, sorted (what a partial replica must hold).
fn restricted<S: Store, P: canopy_tree::Policy>(t: &Tree<S, P>, x: NodeId) -> Vec<NodeRecord> {
    let mut v: Vec<NodeRecord> = t
        .subtree(x)
        .map(|r| {
            let (n, _) = r.unwrap();
            let pl = t.placement(n).unwrap().unwrap();
            let payload = match t.store().payload(n).unwrap() {
                Some(p) => PayloadState::Present {
                    bytes: p.bytes,
                    set_by: p.set_by,
                },
                None => PayloadState::None,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_converge_through_a_sqlite_server() {
    let dir = tempfile::tempdir().unwrap();
    let base = start(SqliteDocuments::new(dir.path(), rep(99))).await;
    let url = format!("{base}/doc-1");

    let mut a = Tree::new(MemoryStore::new(), rep(1));
    let mut b = Tree::new(MemoryStore::new(), rep(2));
    grow(&mut a, 300, NodeId::ROOT);
    grow(&mut b, 200, NodeId::ROOT);

    let ra = full_sync(&url, &mut a).await.unwrap();
    assert!(ra.finished);
    let rb = full_sync(&url, &mut b).await.unwrap();
    assert!(rb.finished);
    full_sync(&url, &mut a).await.unwrap();

    let fa = a.store().frontier().unwrap();
    assert_eq!(frontier_count(&fa), 500);
    assert_eq!(fa, b.store().frontier().unwrap());
    assert_eq!(restricted(&a, NodeId::ROOT), restricted(&b, NodeId::ROOT));

    // a synced pair: one hello each way, nothing else
    let again = full_sync(&url, &mut b).await.unwrap();
    assert_eq!((again.frames_sent, again.frames_received), (1, 1));

    // the server's file holds the same ops, and another document is separate
    tokio::time::sleep(Duration::from_millis(200)).await;
    let docs = SqliteDocuments::new(dir.path(), rep(99));
    let server = Tree::new(
        SqliteStore::open(docs.path(&"doc-1".parse().unwrap())).unwrap(),
        rep(98),
    );
    assert_eq!(server.store().frontier().unwrap(), fa);
    let mut c = Tree::new(MemoryStore::new(), rep(3));
    full_sync(&format!("{base}/doc-2"), &mut c).await.unwrap();
    assert_eq!(c.node_count().unwrap(), 0);
}

/// `Flow::Finish` sends the ops the callback made before it said so, then closes politely and
/// returns once the server applied them; `Flow::Stop` drops them (they go with the next sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_sends_ops_made_by_the_last_callback() {
    let base = start(MemoryDocuments::new(rep(99))).await;
    // more ops than one poll sends (1 MiB budget): Finish keeps polling until all are out
    const N: usize = 20_000;
    for (doc, flow, expect) in [("fin", Flow::Finish, N), ("stop", Flow::Stop, 0)] {
        let url = format!("{base}/{doc}");
        let mut a = Tree::new(MemoryStore::new(), rep(1));
        let mut made = false;
        let report = {
            let mut peer = FullPeer::new(&mut a, live_session());
            net::sync(url.as_str(), &mut peer, |p, ev| {
                if !made && matches!(ev, Event::Progress(pr) if pr.phase == Phase::Live) {
                    made = true;
                    grow(p.replica(), N, NodeId::ROOT);
                    return flow;
                }
                Flow::Continue
            })
            .await
            .unwrap()
        };
        assert!(made);
        assert_eq!(report.finished, flow == Flow::Finish);
        assert_eq!(report.stopped, flow == Flow::Stop);
        let mut b = Tree::new(MemoryStore::new(), rep(2));
        full_sync(&url, &mut b).await.unwrap();
        assert_eq!(b.node_count().unwrap(), expect as u64, "{doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_clients_get_ops_pushed_by_others() {
    let base = start(MemoryDocuments::new(rep(99))).await;
    let url = format!("{base}/live");

    // two live listeners wait for 3 ops made elsewhere
    let mut listeners = Vec::new();
    for r in [1u8, 2] {
        let url = url.clone();
        listeners.push(tokio::spawn(async move {
            let mut t = Tree::new(MemoryStore::new(), rep(r));
            let mut peer = FullPeer::new(&mut t, live_session());
            let mut live_seen = false;
            let report = net::sync(url.as_str(), &mut peer, |p, ev| {
                if matches!(ev, Event::Progress(pr) if pr.phase == Phase::Live) {
                    live_seen = true;
                }
                let n = p.replica().node_count().unwrap();
                if n == 3 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .await
            .unwrap();
            assert!(report.stopped && live_seen);
            t
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut w = Tree::new(MemoryStore::new(), rep(3));
    grow(&mut w, 3, NodeId::ROOT);
    full_sync(&url, &mut w).await.unwrap();
    for l in listeners {
        let t = tokio::time::timeout(Duration::from_secs(20), l)
            .await
            .expect("live client got the ops")
            .unwrap();
        assert_eq!(restricted(&t, NodeId::ROOT), restricted(&w, NodeId::ROOT));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_sync_of_a_subtree_holds_exactly_that_subtree() {
    let base = start(MemoryDocuments::new(rep(99))).await;
    let url = format!("{base}/outline");
    let mut full = Tree::new(MemoryStore::new(), rep(1));
    let x = full
        .create(NodeId::ROOT, Place::Last, Some(b"X".to_vec()))
        .unwrap()
        .node();
    let inside = grow(&mut full, 400, x);
    grow(&mut full, 400, NodeId::ROOT);
    full_sync(&url, &mut full).await.unwrap();

    let mut p = PartialReplica::new(x, rep(7));
    let mut first_view = false;
    let mut peer = PartialPeer::new(&mut p, PartialSession::new(net::transport_options(false)));
    let report = net::sync(url.as_str(), &mut peer, |_, ev| {
        first_view |= matches!(ev, Event::FirstViewReady);
        Flow::Continue
    })
    .await
    .unwrap();
    assert!(report.finished && first_view);
    p.check_invariants().unwrap();
    assert_eq!(p.records(), restricted(&full, x));
    assert_eq!(p.len(), inside.len() - 1);

    // moves into and out of the scope reach the partial replica on its next (warm) sync
    full.move_node(inside[5], NodeId::ROOT, Place::Last)
        .unwrap();
    let outside = full.children(NodeId::ROOT, None, 10).unwrap()[1].node;
    full.move_node(outside, x, Place::First).unwrap();
    full_sync(&url, &mut full).await.unwrap();
    let mut peer = PartialPeer::new(&mut p, PartialSession::new(net::transport_options(false)));
    net::sync(url.as_str(), &mut peer, |_, _| Flow::Continue)
        .await
        .unwrap();
    p.check_invariants().unwrap();
    assert_eq!(p.records(), restricted(&full, x));
    assert!(!p.contains(inside[5]) && p.contains(outside));
}

/// A raw WebSocket client: sends `frames`, then reads until the connection ends; returns the
/// binary frames it got and the close code.
async fn raw(url: &str, frames: Vec<WsMessage>) -> (Vec<Vec<u8>>, Option<u16>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for f in frames {
        if ws.send(f).await.is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let mut code = None;
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(WsMessage::Binary(b)) => got.push(b.to_vec()),
                Ok(WsMessage::Close(f)) => {
                    code = f.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closed the connection");
    (got, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = start(SqliteDocuments::new(dir.path(), rep(99))).await;
    let url = format!("{base}/doc");
    let mut a = Tree::new(MemoryStore::new(), rep(1));
    grow(&mut a, 50, NodeId::ROOT);
    full_sync(&url, &mut a).await.unwrap();
    let baseline = a.store().frontier().unwrap();

    // a live client stays connected through all of it
    let live_url = url.clone();
    let live = tokio::spawn(async move {
        let mut t = Tree::new(MemoryStore::new(), rep(2));
        let mut peer = FullPeer::new(&mut t, live_session());
        net::sync(live_url.as_str(), &mut peer, |p, _| {
            if p.replica().node_count().unwrap() == 51 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .await
        .map(|r| r.stopped)
    });

    // garbage: the session's Error message (malformed), then close 1002
    let (got, code) = raw(&url, vec![WsMessage::Binary(vec![1, 200, 3].into())]).await;
    assert_eq!(code, Some(CloseReason::Protocol.code()));
    assert_eq!(
        got.last().map(|m| Message::decode(m).unwrap()),
        Some(Message::Error(canopy_sync::ErrorCode::Malformed))
    );

    // a text frame: 1003
    let (_, code) = raw(&url, vec![WsMessage::Text("hello".into())]).await;
    assert_eq!(code, Some(CloseReason::TextFrame.code()));

    // an oversized frame: 1009 (or the connection is cut while the client still writes)
    let (got, code) = raw(
        &url,
        vec![WsMessage::Binary(vec![0u8; (4 << 20) + 1].into())],
    )
    .await;
    assert!(got.is_empty());
    assert!(
        code.is_none() || code == Some(CloseReason::TooLarge.code()),
        "{code:?}"
    );

    // a valid opening, then an Ops message whose last op is truncated: nothing of it is stored
    let mut evil = Tree::new(MemoryStore::new(), rep(66));
    grow(&mut evil, 3, NodeId::ROOT);
    let ops: Vec<_> = (1..=3)
        .map(|s| {
            evil.store()
                .entry(canopy_tree::OpId::new(rep(66), s))
                .unwrap()
                .unwrap()
                .op
        })
        .collect();
    let mut bad_ops = Message::Ops(ops).encode();
    bad_ops.pop();
    let empty = VersionVector::new();
    let hello = Message::Hello {
        mode: Mode::Full,
        digest: frontier_digest(&empty),
        count: 0,
        entries: canopy_sync::EntriesSummary::default(),
        live: false,
    };
    let (_, code) = raw(
        &url,
        vec![
            WsMessage::Binary(hello.encode().into()),
            WsMessage::Binary(Message::Frontier(baseline.clone()).encode().into()),
            WsMessage::Binary(bad_ops.into()),
        ],
    )
    .await;
    assert_eq!(code, Some(CloseReason::Protocol.code()));

    // the server still serves, and holds exactly the baseline
    let mut b = Tree::new(MemoryStore::new(), rep(3));
    full_sync(&url, &mut b).await.unwrap();
    assert_eq!(b.store().frontier().unwrap(), baseline);

    // and the live client is still connected: a new op reaches it
    a.create(NodeId::ROOT, Place::First, None).unwrap();
    full_sync(&url, &mut a).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(20), live)
        .await
        .expect("live client still served")
        .unwrap()
        .unwrap();
    assert!(stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_refused_at_the_handshake() {
    let base = start(MemoryDocuments::new(rep(99))).await;
    for path in ["/", "/a/b", "/..%2f", "/-x"] {
        let r = tokio_tungstenite::connect_async(format!("{base}{path}")).await;
        assert!(r.is_err(), "{path}");
    }
    assert!("ok-name".parse::<DocName>().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_sync_resumes_without_resending_what_was_applied() {
    let docs = MemoryDocuments::new(rep(99));
    let mut server = Tree::new(MemoryStore::new(), rep(1));
    grow(&mut server, 20_000, NodeId::ROOT);
    let want = server.store().frontier().unwrap();
    let snapshot = restricted(&server, NodeId::ROOT);
    docs.insert("big".parse().unwrap(), server);
    let base = start(docs).await;
    let url = format!("{base}/big");

    let mut c = Tree::new(MemoryStore::new(), rep(2));
    let mut peer = FullPeer::new(&mut c, session());
    let report = net::sync(url.as_str(), &mut peer, |_, ev| match ev {
        Event::Progress(p) if p.done > 0 => Flow::Stop,
        _ => Flow::Continue,
    })
    .await
    .unwrap();
    assert!(report.stopped && !report.finished);
    let applied = frontier_count(&c.store().frontier().unwrap());
    assert!(applied > 0 && applied < 20_000, "{applied}");

    let mut total = None;
    let mut peer = FullPeer::new(&mut c, session());
    let report = net::sync(url.as_str(), &mut peer, |_, ev| {
        if let Event::Progress(p) = ev {
            if p.total.is_some() {
                total = total.or(p.total);
            }
        }
        Flow::Continue
    })
    .await
    .unwrap();
    assert!(report.finished);
    assert_eq!(total, Some(20_000 - applied));
    assert_eq!(c.store().frontier().unwrap(), want);
    assert_eq!(restricted(&c, NodeId::ROOT), snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_end_with_a_typed_error() {
    // a full-sync request against a filter that only grants a subtree
    struct SubtreeOnly;
    impl net::Admit for SubtreeOnly {
        type Filter = canopy_sync::SubtreeScope;
        fn admit(
            &self,
            _: &DocName,
            _: Option<&str>,
        ) -> Result<net::Admission<Self::Filter>, net::AdmitError> {
            Ok(net::Admission::new(canopy_sync::SubtreeScope::new(
                NodeId::from_bytes([5; 16]),
            )))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/d", listener.local_addr().unwrap());
    tokio::spawn(net::serve(
        listener,
        MemoryDocuments::new(rep(99)),
        SubtreeOnly,
        ServerConfig::default(),
    ));
    let mut c = Tree::new(MemoryStore::new(), rep(2));
    grow(&mut c, 5, NodeId::ROOT);
    let err = full_sync(&url, &mut c).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Session(SyncError::Peer(canopy_sync::ErrorCode::FullSyncNotAllowed))
        ),
        "{err:?}"
    );
}

// ---- the authorized server: AuthzDocuments ----

mod authz {
    use super::*;
    use canopy_caps::{
        chain_ref, subtree_policy, Ability, Authz, Delegation, DelegationFields, Document,
        Invocation, SecretKey,
    };
    use canopy_sync::net::{AuthzDocuments, Credential, SyncCommand};
    use canopy_sync::RefusalCode;
    use rand_core::OsRng;
    use tokio_tungstenite::tungstenite::handshake::client::Request;
    use tokio_tungstenite::tungstenite::Error as WsError;

    pub(super) fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes(&[b; 32])
    }

    fn key_rep(k: &SecretKey) -> ReplicaId {
        ReplicaId::from_bytes(*k.did().public_key())
    }

    /// A replica of `doc` that signs with `k` under `chain` (registered first).
    fn replica(doc: Document, k: u8, chain: &[Delegation]) -> Authz<MemoryStore> {
        let signer = key(k);
        let mut a = Authz::new(MemoryStore::new(), doc, key_rep(&signer)).unwrap();
        let cids: Vec<_> = chain.iter().map(Delegation::cid).collect();
        if !chain.is_empty() {
            let mut items: Vec<Vec<u8>> = chain
                .iter()
                .map(|d| canopy_caps::Entry::Delegation(d.clone()).encode())
                .collect();
            items.push(canopy_caps::Entry::Chain(cids.clone()).encode());
            let report = a.ingest(items).unwrap();
            assert!(report.items.iter().all(Result::is_ok));
        }
        a.state_mut().set_signer(signer, chain_ref(&cids), now());
        a
    }

    fn grant(
        from: &SecretKey,
        to: &SecretKey,
        owner: &SecretKey,
        ability: Ability,
        under: Option<NodeId>,
    ) -> Delegation {
        Delegation::issue(
            from,
            DelegationFields {
                audience: to.did(),
                subject: Some(owner.did()),
                command: ability.command(),
                policy: match under {
                    Some(x) => subtree_policy(x.as_bytes(), &[]),
                    None => canopy_caps::Policy::new(Vec::new()),
                },
                expiration: None,
                not_before: None,
                meta: None,
            },
            &mut OsRng,
        )
    }

    /// A handshake request for `url` by `k` on `doc` under `chain`.
    fn request(
        url: &str,
        k: &SecretKey,
        doc: &Document,
        cmd: SyncCommand,
        chain: &[Delegation],
        genesis: bool,
        at: u64,
    ) -> Request {
        let fields = net::invocation_fields(
            doc.id(),
            *doc.owner(),
            cmd,
            chain.iter().map(Delegation::cid).collect(),
            at,
            60,
        );
        let inv = Invocation::issue(k, fields, &mut OsRng);
        let cred = Credential::new(inv, chain.to_vec(), genesis.then_some(*doc.nonce()));
        net::request(url, &cred).unwrap()
    }

    async fn start_authz() -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let docs = AuthzDocuments::new(dir.path(), rep(99));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("ws://{}", listener.local_addr().unwrap());
        tokio::spawn(net::serve(
            listener,
            docs.clone(),
            docs,
            ServerConfig::default(),
        ));
        (base, dir)
    }

    fn status(e: &ClientError<impl std::error::Error + 'static>) -> Option<u16> {
        match e {
            ClientError::Connect(WsError::Http(r)) => Some(r.status().as_u16()),
            _ => None,
        }
    }

    /// The owner's replica with X (`n` nodes under it) and Y (`n` under it), pushed to the
    /// server (creating the document).
    async fn owner_pushes(
        url: &str,
        n: usize,
    ) -> (Authz<MemoryStore>, Document, NodeId, NodeId, Vec<NodeId>) {
        let owner = key(1);
        let doc = Document::new(owner.did(), [1; 16]);
        let mut a = replica(doc, 1, &[]);
        let t = a.tree_mut();
        let x = t
            .create(NodeId::ROOT, Place::Last, Some(b"X".to_vec()))
            .unwrap()
            .node();
        let y = t
            .create(NodeId::ROOT, Place::Last, Some(b"Y".to_vec()))
            .unwrap()
            .node();
        let mut inside = vec![x];
        for i in 0..n {
            let p = inside[(i * 7) % inside.len()];
            let node = t
                .create(p, Place::Last, Some(format!("in {i}").into_bytes()))
                .unwrap()
                .node();
            inside.push(node);
            t.create(y, Place::Last, Some(format!("out {i}").into_bytes()))
                .unwrap();
        }
        let req = request(url, &owner, &doc, SyncCommand::Write, &[], true, now());
        let mut peer = FullPeer::new(
            &mut a,
            Session::new(AllowAll, net::transport_options(false)),
        );
        let report = net::sync(req, &mut peer, |_, _| Flow::Continue)
            .await
            .unwrap();
        assert!(report.finished);
        (a, doc, x, y, inside)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owner_pushes_and_a_subtree_reader_gets_only_the_subtree() {
        let (base, _dir) = start_authz().await;
        let doc_id = Document::new(key(1).did(), [1; 16]).id();
        let url = format!("{base}/{doc_id}");
        let (owner_replica, doc, x, _y, inside) = owner_pushes(&url, 200).await;

        // a depth-2 chain: owner -> alice (read X) -> reader (read X)
        let (owner, alice, reader) = (key(1), key(2), key(3));
        let d1 = grant(&owner, &alice, &owner, Ability::Read, Some(x));
        let d2 = grant(&alice, &reader, &owner, Ability::Read, Some(x));
        let chain = [d1, d2];
        let req = request(&url, &reader, &doc, SyncCommand::Read, &chain, false, now());
        let mut p = PartialReplica::new(x, key_rep(&reader));
        let mut peer = PartialPeer::new(&mut p, PartialSession::new(net::transport_options(false)));
        let report = net::sync(req, &mut peer, |_, _| Flow::Continue)
            .await
            .unwrap();
        assert!(report.finished);
        p.check_invariants().unwrap();
        assert_eq!(p.records(), restricted(owner_replica.tree(), x));
        assert_eq!(p.len(), inside.len() - 1);

        // the same reader may not sync the whole document (its grant is on X only)
        let req = request(&url, &reader, &doc, SyncCommand::Read, &chain, false, now());
        let mut t = Authz::new(MemoryStore::new(), doc, key_rep(&reader)).unwrap();
        let mut peer = FullPeer::new(
            &mut t,
            Session::new(AllowAll, net::transport_options(false)),
        );
        let err = net::sync(req, &mut peer, |_, _| Flow::Continue)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Session(SyncError::Peer(canopy_sync::ErrorCode::FullSyncNotAllowed))
            ),
            "{err:?}"
        );
        assert_eq!(t.tree().node_count().unwrap(), 0);

        // nor a partial sync of a scope outside its grant (the root)
        let req = request(&url, &reader, &doc, SyncCommand::Read, &chain, false, now());
        let mut q = PartialReplica::new(NodeId::ROOT, key_rep(&reader));
        let mut peer = PartialPeer::new(&mut q, PartialSession::new(net::transport_options(false)));
        assert!(net::sync(req, &mut peer, |_, _| Flow::Continue)
            .await
            .is_err());
        assert_eq!(q.len(), 0);

        // a newcomer that knows only the id learns the genesis from the handshake
        let full_reader = key(4);
        let root_read = grant(&owner, &full_reader, &owner, Ability::Read, None);
        let req = request(
            &url,
            &full_reader,
            &doc,
            SyncCommand::Read,
            std::slice::from_ref(&root_read),
            false,
            now(),
        );
        let learned = net::fetch_genesis(req, &doc_id).await.unwrap();
        assert_eq!(learned, doc);
        let req = request(
            &url,
            &full_reader,
            &doc,
            SyncCommand::Read,
            &[root_read],
            false,
            now(),
        );
        let mut t = Authz::new(MemoryStore::new(), learned, key_rep(&full_reader)).unwrap();
        let mut peer = FullPeer::new(
            &mut t,
            Session::new(AllowAll, net::transport_options(false)),
        );
        assert!(
            net::sync(req, &mut peer, |_, _| Flow::Continue)
                .await
                .unwrap()
                .finished
        );
        assert_eq!(
            t.tree().node_count().unwrap(),
            owner_replica.tree().node_count().unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_credentials_are_refused_at_the_handshake() {
        let (base, _dir) = start_authz().await;
        let doc_id = Document::new(key(1).did(), [1; 16]).id();
        let url = format!("{base}/{doc_id}");
        let (_, doc, x, _, _) = owner_pushes(&url, 5).await;
        let (owner, reader, stranger) = (key(1), key(3), key(5));
        let chain = [grant(&owner, &reader, &owner, Ability::Read, Some(x))];
        let try_partial = |req: Request| async move {
            let mut p = PartialReplica::new(x, rep(7));
            let mut peer =
                PartialPeer::new(&mut p, PartialSession::new(net::transport_options(false)));
            let r = net::sync(req, &mut peer, |_, _| Flow::Continue).await;
            drop(peer);
            (r.map(|_| ()), p.len())
        };

        // missing
        let (r, n) = try_partial(url.as_str().into_client_request().unwrap()).await;
        assert_eq!(status(&r.unwrap_err()), Some(401));
        assert_eq!(n, 0);
        // forged: a valid credential with one signature byte flipped
        let good = request(&url, &reader, &doc, SyncCommand::Read, &chain, false, now());
        let mut forged = good.clone();
        let h = good.headers()["authorization"].to_str().unwrap();
        let raw = h.strip_prefix("Bearer ").unwrap();
        let mut bytes = base64_decode(raw);
        *bytes.last_mut().unwrap() ^= 1;
        forged.headers_mut().insert(
            "authorization",
            format!("Bearer {}", base64_encode(&bytes)).parse().unwrap(),
        );
        let (r, _) = try_partial(forged).await;
        assert_eq!(status(&r.unwrap_err()), Some(401));
        // expired
        let old = request(
            &url,
            &reader,
            &doc,
            SyncCommand::Read,
            &chain,
            false,
            now() - 600,
        );
        let (r, _) = try_partial(old).await;
        assert_eq!(status(&r.unwrap_err()), Some(401));
        // the good one works once, then is a replay
        let (r, n) = try_partial(good.clone()).await;
        r.unwrap();
        assert!(n > 0);
        let (r, n) = try_partial(good).await;
        assert_eq!(status(&r.unwrap_err()), Some(401));
        assert_eq!(n, 0);
        // valid, but grants nothing on this document: a stranger with no chain, and the
        // reader's chain presented by the stranger
        let req = request(&url, &stranger, &doc, SyncCommand::Read, &[], false, now());
        let (r, _) = try_partial(req).await;
        assert_eq!(status(&r.unwrap_err()), Some(403));
        let req = request(
            &url,
            &stranger,
            &doc,
            SyncCommand::Read,
            &chain,
            false,
            now(),
        );
        let (r, _) = try_partial(req).await;
        assert_eq!(status(&r.unwrap_err()), Some(403));
        // a chain from another owner
        let other_owner = key(6);
        let other_doc = Document::new(other_owner.did(), [6; 16]);
        let c = [grant(
            &other_owner,
            &reader,
            &other_owner,
            Ability::Read,
            None,
        )];
        let req = request(
            &url,
            &reader,
            &other_doc,
            SyncCommand::Read,
            &c,
            false,
            now(),
        );
        let (r, _) = try_partial(req).await;
        assert_eq!(
            status(&r.unwrap_err()),
            Some(401),
            "bound to another document"
        );
        // an unknown document without its genesis
        let url2 = format!("{base}/{}", other_doc.id());
        let req = request(
            &url2,
            &reader,
            &other_doc,
            SyncCommand::Read,
            &c,
            false,
            now(),
        );
        let (r, _) = try_partial(req).await;
        assert_eq!(status(&r.unwrap_err()), Some(404));
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    }

    fn base64_encode(b: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_outside_its_grant_is_refused_and_the_server_serves_others() {
        let (base, _dir) = start_authz().await;
        let doc_id = Document::new(key(1).did(), [1; 16]).id();
        let url = format!("{base}/{doc_id}");
        let (mut owner_replica, doc, x, y, _) = owner_pushes(&url, 20).await;
        let (owner, writer) = (key(1), key(8));
        // the writer reads the whole document and writes under X only
        let read = grant(&owner, &writer, &owner, Ability::Read, None);
        let write = grant(&owner, &writer, &owner, Ability::Write, Some(x));
        let mut w = replica(doc, 8, std::slice::from_ref(&write));
        let req = request(
            &url,
            &writer,
            &doc,
            SyncCommand::Read,
            std::slice::from_ref(&read),
            false,
            now(),
        );
        let mut peer = FullPeer::new(
            &mut w,
            Session::new(AllowAll, net::transport_options(false)),
        );
        assert!(
            net::sync(req, &mut peer, |_, _| Flow::Continue)
                .await
                .unwrap()
                .finished
        );
        let ok = w
            .tree_mut()
            .create(x, Place::Last, Some(b"allowed".to_vec()))
            .unwrap();
        let denied = w
            .tree_mut()
            .create(y, Place::Last, Some(b"outside".to_vec()))
            .unwrap();
        let req = request(
            &url,
            &writer,
            &doc,
            SyncCommand::Read,
            &[read],
            false,
            now(),
        );
        let mut refused = Vec::new();
        let mut peer = FullPeer::new(
            &mut w,
            Session::new(AllowAll, net::transport_options(false)),
        );
        let report = net::sync(req, &mut peer, |_, ev| {
            if let Event::Refused { op, code } = ev {
                refused.push((*op, *code));
            }
            Flow::Continue
        })
        .await
        .unwrap();
        assert!(report.finished);
        assert_eq!(refused, vec![(denied.op.id(), RefusalCode::Denied)]);

        // the owner gets the allowed op, not the other
        let req = request(&url, &owner, &doc, SyncCommand::Write, &[], false, now());
        let mut peer = FullPeer::new(
            &mut owner_replica,
            Session::new(AllowAll, net::transport_options(false)),
        );
        assert!(
            net::sync(req, &mut peer, |_, _| Flow::Continue)
                .await
                .unwrap()
                .finished
        );
        let t = owner_replica.tree();
        assert!(t.exists(ok.node()).unwrap());
        assert!(!t.exists(denied.node()).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_frame_closes_only_its_authenticated_connection() {
        let (base, _dir) = start_authz().await;
        let doc_id = Document::new(key(1).did(), [1; 16]).id();
        let url = format!("{base}/{doc_id}");
        let (owner_replica, doc, x, _, _) = owner_pushes(&url, 10).await;
        let (owner, reader) = (key(1), key(3));
        let chain = [grant(&owner, &reader, &owner, Ability::Read, Some(x))];
        // an authenticated connection that sends garbage
        let req = request(&url, &reader, &doc, SyncCommand::Read, &chain, false, now());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws.send(WsMessage::Binary(vec![1, 0xee, 0, 0].into()))
            .await
            .unwrap();
        let mut code = None;
        while let Some(m) = ws.next().await {
            match m {
                Ok(WsMessage::Close(f)) => {
                    code = f.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert_eq!(code, Some(CloseReason::Protocol.code()));
        // others go on
        let req = request(&url, &reader, &doc, SyncCommand::Read, &chain, false, now());
        let mut p = PartialReplica::new(x, rep(7));
        let mut peer = PartialPeer::new(&mut p, PartialSession::new(net::transport_options(false)));
        assert!(
            net::sync(req, &mut peer, |_, _| Flow::Continue)
                .await
                .unwrap()
                .finished
        );
        assert_eq!(p.records(), restricted(owner_replica.tree(), x));
    }
}
