//! The WebSocket transport end to end over loopback: clients converge through a server on SQLite,
//! live fan-out, partial sync of a subtree, bad frames close only their connection and store
//! nothing, a sync cut short resumes without re-sending what was applied.

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
fn restricted<S: Store>(t: &Tree<S>, x: NodeId) -> Vec<NodeRecord> {
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
        live: false,
        entries: Default::default(),
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
        fn admit(&self, _: &DocName, _: Option<&str>) -> Result<Self::Filter, net::AdmitError> {
            Ok(canopy_sync::SubtreeScope::new(NodeId::from_bytes([5; 16])))
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
