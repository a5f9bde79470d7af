//! The sync server: accepts WebSocket connections, admits each to one document, and runs the
//! document's sessions on the thread that owns its replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canopy_tree::NodeId;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::docs::Documents;
use super::queue::{outq, write_loop, Outq};
use super::{transport_options, CloseReason, DocName, READ_RESERVE};
use canopy_caps::Document;

use super::auth::AuthError;
use crate::filter::{AllowAll, ReadContext, ReadFilter};
use crate::session::{Outcome, Replica, Session};
use crate::wire::MAX_MESSAGE_LEN;

/// The most one poll of a session queues: its 1 MiB budget plus one 256 KiB batch, and room for
/// the small messages around them.
const POLL_ANSWER: usize = (1 << 20) + (320 << 10);

/// Room a session's send queue needs before it is polled: a whole poll on top of the read
/// reserve.
pub(crate) const POLL_ROOM: usize = READ_RESERVE + POLL_ANSWER;

/// The `Ops` and `Entries` message types (`spec/sync.md`): after one, the other sessions of the
/// document are polled (fan-out).
const FAN_OUT_TYPES: [u8; 2] = [2, 12];

/// Under a steady stream of received ops, fan out at least once per this many frames.
const FANOUT_EVERY: usize = 64;

/// Server settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Let clients that ask for live mode stay connected after reconciling.
    pub live: bool,
    /// Received frames queued for a document's thread (all its connections together); readers
    /// wait when it is full.
    pub inbox: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            live: true,
            inbox: 256,
        }
    }
}

/// Decides, at the WebSocket handshake, whether a client may sync a document and what it may
/// read: where authentication plugs in (the `Authorization: Bearer` header carries the client's
/// credential; [`AuthzDocuments`](super::AuthzDocuments) checks a signed UCAN invocation).
pub trait Admit: Send + Sync + 'static {
    /// What an admitted client may read.
    type Filter: ReadFilter + Send + 'static;
    /// Admits a client to `doc`, given its bearer credential (if it sent one).
    fn admit(
        &self,
        doc: &DocName,
        bearer: Option<&str>,
    ) -> Result<Admission<Self::Filter>, AdmitError>;
}

/// What an admitted connection brings to its document.
#[derive(Debug)]
#[non_exhaustive]
pub struct Admission<F> {
    /// What it may read.
    pub filter: F,
    /// Document entries (encoded) ingested into the document before its session starts: the
    /// delegations and chain it authenticated with.
    pub entries: Vec<Vec<u8>>,
    /// The document, if the connection sent its genesis (it may then create it).
    pub genesis: Option<Document>,
    /// The document's genesis entry, sent back in the `Canopy-Genesis` response header.
    pub genesis_entry: Option<Vec<u8>>,
}

impl<F> Admission<F> {
    /// Admitted with `filter` and nothing else.
    pub fn new(filter: F) -> Self {
        Self {
            filter,
            entries: Vec::new(),
            genesis: None,
            genesis_entry: None,
        }
    }
}

/// Why a client was not admitted (sent as the handshake's HTTP status).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The credential is missing, does not verify, or grants nothing on this document: its
    /// [`AuthError::status`] (401, 403 or 503).
    #[error("{0}")]
    Credential(#[from] AuthError),
    /// No such document, and it cannot be created by this connection: 404.
    #[error("unknown document")]
    UnknownDocument,
    /// The document's store could not be read: 503.
    #[error("document unavailable")]
    Unavailable,
}

impl AdmitError {
    /// The HTTP status the handshake is refused with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Credential(e) => e.status(),
            Self::UnknownDocument => 404,
            Self::Unavailable => 503,
        }
    }
}

/// The response header carrying the document's genesis entry (hex).
pub const GENESIS_HEADER: &str = "canopy-genesis";

/// Everyone may read and write everything (a trusted network, tests): every client gets
/// [`AllowAll`]. Writes still go through the session's ingest.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAccess;

impl Admit for OpenAccess {
    type Filter = AllowAll;
    fn admit(&self, _: &DocName, _: Option<&str>) -> Result<Admission<AllowAll>, AdmitError> {
        Ok(Admission::new(AllowAll))
    }
}

/// A connection's filter, boxed so that one document thread serves every kind.
pub(crate) struct ConnFilter(Box<dyn ReadFilter + Send>);

impl ReadFilter for ConnFilter {
    fn can_read_log(&self, cx: &ReadContext<'_>) -> bool {
        self.0.can_read_log(cx)
    }
    fn can_read_structure(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.0.can_read_structure(cx, node, ancestors)
    }
    fn can_read_payload(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.0.can_read_payload(cx, node, ancestors)
    }
    fn can_read_path(&self, cx: &ReadContext<'_>, scope: NodeId, ancestors: &[NodeId]) -> bool {
        self.0.can_read_path(cx, scope, ancestors)
    }
}

/// Closes a connection at once (not behind its queue).
#[derive(Clone)]
pub(crate) struct Killer(Arc<Mutex<Option<oneshot::Sender<CloseReason>>>>);

impl Killer {
    fn kill(&self, reason: CloseReason) {
        if let Some(tx) = self.0.lock().expect("poisoned").take() {
            let _ = tx.send(reason);
        }
    }
}

pub(crate) enum ToDoc {
    Join {
        conn: u64,
        filter: ConnFilter,
        entries: Vec<Vec<u8>>,
        q: Outq,
        killer: Killer,
        wants: Arc<AtomicBool>,
        ack: oneshot::Sender<bool>,
    },
    Frame {
        conn: u64,
        bytes: Vec<u8>,
        reserve: OwnedSemaphorePermit,
    },
    Drained {
        conn: u64,
    },
    Leave {
        conn: u64,
    },
}

/// Tells a document that a connection's queue has drained enough for a session that was
/// waiting for room.
pub(crate) struct DrainHook {
    wants: Arc<AtomicBool>,
    tx: mpsc::Sender<ToDoc>,
    conn: u64,
}

impl DrainHook {
    /// False when the document is gone.
    pub(crate) async fn notify(&self, room: usize) -> bool {
        if room >= POLL_ROOM && self.wants.swap(false, Ordering::SeqCst) {
            return self
                .tx
                .send(ToDoc::Drained { conn: self.conn })
                .await
                .is_ok();
        }
        true
    }
}

/// Open documents: the thread's generation and inbox.
type Registry = Mutex<HashMap<DocName, (u64, mpsc::Sender<ToDoc>)>>;

struct Shared<D, A> {
    docs: D,
    admit: A,
    config: ServerConfig,
    registry: Registry,
    next_conn: AtomicU64,
}

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN))
        .max_frame_size(Some(MAX_MESSAGE_LEN))
}

/// Serves sync sessions on `listener` until it fails: each connection's URL path names the
/// document (`/DOC`), `admit` decides what it may read, `docs` opens the documents. Runs on the
/// calling tokio runtime, plus one thread per open document.
pub async fn serve<D: Documents, A: Admit>(
    listener: TcpListener,
    docs: D,
    admit: A,
    config: ServerConfig,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        docs,
        admit,
        config,
        registry: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // out of file descriptors and the like: wait a little, keep serving
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        tokio::spawn(connection(shared.clone(), stream));
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 23 || c == 24)
}

fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(text.to_owned()));
    *r.status_mut() = status;
    r
}

async fn connection<D: Documents, A: Admit>(shared: Arc<Shared<D, A>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut admitted: Option<(DocName, Admission<A::Filter>)> = None;
    // the error type is tungstenite's handshake callback's
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let path = req.uri().path();
        let doc: DocName = path
            .strip_prefix('/')
            .unwrap_or(path)
            .parse()
            .map_err(|e: super::DocNameError| refuse(StatusCode::NOT_FOUND, &e.to_string()))?;
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let admission = shared.admit.admit(&doc, bearer).map_err(|e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            refuse(status, &e.to_string())
        })?;
        let mut resp = resp;
        if let Some(g) = &admission.genesis_entry {
            if let Ok(v) = hex::encode(g).parse() {
                resp.headers_mut().insert(GENESIS_HEADER, v);
            }
        }
        admitted = Some((doc, admission));
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())).await
    else {
        return;
    };
    let Some((doc, admission)) = admitted else {
        return;
    };
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (sink, mut stream) = ws.split();
    let (q, qrx) = outq();
    let (kill_tx, kill_rx) = oneshot::channel();
    let killer = Killer(Arc::new(Mutex::new(Some(kill_tx))));
    let wants = Arc::new(AtomicBool::new(false));
    let doc_tx = join(
        &shared,
        &doc,
        conn,
        Joining {
            filter: ConnFilter(Box::new(admission.filter)),
            entries: admission.entries,
            genesis: admission.genesis,
        },
        &q,
        &killer,
        &wants,
    )
    .await;
    let hook = doc_tx.as_ref().map(|tx| DrainHook {
        wants: wants.clone(),
        tx: tx.clone(),
        conn,
    });
    let mut writer = tokio::spawn(write_loop(sink, qrx, kill_rx, hook));
    let Some(doc_tx) = doc_tx else {
        killer.kill(CloseReason::Storage);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        return;
    };
    let sem = q.semaphore();
    let mut writer_done = false;
    loop {
        // read the next frame only when its answer surely fits the send queue
        let reserve = tokio::select! {
            r = sem.clone().acquire_many_owned(READ_RESERVE as u32) => match r {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut writer => { writer_done = true; break; }
        };
        let m = tokio::select! {
            m = stream.next() => m,
            _ = &mut writer => { writer_done = true; break; }
        };
        match m {
            Some(Ok(WsMessage::Binary(b))) => {
                let frame = ToDoc::Frame {
                    conn,
                    bytes: b.into(),
                    reserve,
                };
                if doc_tx.send(frame).await.is_err() {
                    killer.kill(CloseReason::Storage);
                    break;
                }
            }
            Some(Ok(WsMessage::Text(_))) => {
                killer.kill(CloseReason::TextFrame);
                break;
            }
            Some(Ok(WsMessage::Close(_))) | None => break,
            Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(_))) => {
                killer.kill(CloseReason::TooLarge);
                break;
            }
            Some(Err(_)) => {
                killer.kill(CloseReason::Protocol);
                break;
            }
        }
    }
    let _ = doc_tx.send(ToDoc::Leave { conn }).await;
    drop(q);
    if !writer_done
        && tokio::time::timeout(Duration::from_secs(5), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// What a connection brings to its document's thread.
struct Joining {
    filter: ConnFilter,
    entries: Vec<Vec<u8>>,
    genesis: Option<Document>,
}

/// Attaches the connection to the document's thread (starting it if needed, with the
/// connection's genesis). None if the document could not be opened.
async fn join<D: Documents, A: Admit>(
    shared: &Arc<Shared<D, A>>,
    doc: &DocName,
    conn: u64,
    joining: Joining,
    q: &Outq,
    killer: &Killer,
    wants: &Arc<AtomicBool>,
) -> Option<mpsc::Sender<ToDoc>> {
    let Joining {
        mut filter,
        mut entries,
        genesis,
    } = joining;
    loop {
        let tx = {
            let mut reg = shared.registry.lock().expect("poisoned");
            match reg.get(doc) {
                Some((_, tx)) if !tx.is_closed() => tx.clone(),
                _ => {
                    let (tx, rx) = mpsc::channel(shared.config.inbox.max(1));
                    let gen = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    reg.insert(doc.clone(), (gen, tx.clone()));
                    let shared = shared.clone();
                    let name = doc.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("canopy-doc-{doc}"))
                        .spawn(move || run_doc(shared, name, genesis, gen, rx));
                    if spawned.is_err() {
                        reg.remove(doc);
                        return None;
                    }
                    tx
                }
            }
        };
        let (ack, ack_rx) = oneshot::channel();
        let msg = ToDoc::Join {
            conn,
            filter,
            entries,
            q: q.clone(),
            killer: killer.clone(),
            wants: wants.clone(),
            ack,
        };
        match tx.send(msg).await {
            Ok(()) => {}
            Err(mpsc::error::SendError(ToDoc::Join {
                filter: f,
                entries: e,
                ..
            })) => {
                // the thread was leaving: start another
                filter = f;
                entries = e;
                continue;
            }
            Err(_) => return None,
        }
        match ack_rx.await {
            Ok(true) => return Some(tx),
            Ok(false) => return None,
            // dropped unread by a thread that was leaving; the filter went with it
            Err(_) => return None,
        }
    }
}

struct Conn {
    session: Option<Session<ConnFilter>>,
    q: Outq,
    killer: Killer,
    wants: Arc<AtomicBool>,
}

/// The document's thread: owns the replica and every session on it.
fn run_doc<D: Documents, A: Admit>(
    shared: Arc<Shared<D, A>>,
    doc: DocName,
    genesis: Option<Document>,
    gen: u64,
    mut rx: mpsc::Receiver<ToDoc>,
) {
    let mut tree = match shared.docs.open(&doc, genesis.as_ref()) {
        Ok(t) => t,
        Err(_) => {
            // refuse every waiting client, then go (the next one retries the open)
            let mut reg = shared.registry.lock().expect("poisoned");
            if reg.get(&doc).is_some_and(|(g, _)| *g == gen) {
                reg.remove(&doc);
            }
            drop(reg);
            rx.close();
            while let Ok(m) = rx.try_recv() {
                if let ToDoc::Join { ack, .. } = m {
                    let _ = ack.send(false);
                }
            }
            return;
        }
    };
    let options = transport_options(shared.config.live);
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    // frames with ops received since the last fan-out
    let mut unfanned = 0usize;
    loop {
        // fan out once the inbox is empty (or every FANOUT_EVERY frames under load): one poll
        // of every session covers many received batches
        let msg = match rx.try_recv() {
            Ok(m) if unfanned < FANOUT_EVERY => m,
            Ok(m) => {
                fan_out(&mut conns, &tree);
                unfanned = 0;
                m
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                if unfanned > 0 {
                    fan_out(&mut conns, &tree);
                    unfanned = 0;
                }
                match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        match msg {
            ToDoc::Join {
                conn,
                filter,
                entries,
                q,
                killer,
                wants,
                ack,
            } => {
                // the proofs the connection authenticated with, before its session reads
                if !entries.is_empty() && tree.ingest_entries(entries).is_err() {
                    killer.kill(CloseReason::Storage);
                    let _ = ack.send(false);
                    continue;
                }
                conns.insert(
                    conn,
                    Conn {
                        session: Some(Session::new(filter, options)),
                        q,
                        killer,
                        wants,
                    },
                );
                let _ = ack.send(true);
            }
            ToDoc::Frame {
                conn,
                bytes,
                mut reserve,
            } => {
                let Some(c) = conns.get_mut(&conn) else {
                    continue;
                };
                let Some(s) = c.session.as_mut() else {
                    continue;
                };
                let out = s.receive(&mut tree, &bytes);
                deliver(c, out, Some(&mut reserve));
                drop(reserve);
                poll_conn(c, &tree);
                if bytes.get(1).is_some_and(|t| FAN_OUT_TYPES.contains(t)) {
                    unfanned += 1;
                }
            }
            ToDoc::Drained { conn } => {
                if let Some(c) = conns.get_mut(&conn) {
                    poll_conn(c, &tree);
                }
            }
            ToDoc::Leave { conn } => {
                if let Some(c) = conns.remove(&conn) {
                    // the reader is gone: make sure the writer ends too
                    c.q.close(CloseReason::Done);
                }
                if conns.is_empty() {
                    let mut reg = shared.registry.lock().expect("poisoned");
                    if rx.is_empty() {
                        if reg.get(&doc).is_some_and(|(g, _)| *g == gen) {
                            reg.remove(&doc);
                        }
                        rx.close();
                        shared.docs.release(&doc, tree);
                        drop(reg);
                        // joins sent after the check find the channel closed and retry
                        while let Ok(m) = rx.try_recv() {
                            drop(m);
                        }
                        return;
                    }
                }
            }
        }
    }
    shared.docs.release(&doc, tree);
}

/// Polls every session: live ones send their peers the ops they lack.
fn fan_out<R: Replica>(conns: &mut HashMap<u64, Conn>, tree: &R) {
    for c in conns.values_mut() {
        poll_conn(c, tree);
    }
}

/// Polls a session while its queue has room for a whole poll and it has something to send;
/// otherwise marks it as waiting for its writer to drain.
fn poll_conn<R: Replica>(c: &mut Conn, tree: &R) {
    loop {
        if c.session.is_none() {
            return;
        }
        let Some(mut room) = take_poll_room(c) else {
            return;
        };
        let Some(s) = c.session.as_mut() else {
            return;
        };
        let out = s.poll(tree);
        let sent = !out.send.is_empty();
        // the poll's frames are paid from the room taken before it; the rest goes back
        deliver(c, out, Some(&mut room));
        drop(room);
        if !sent {
            return;
        }
    }
}

/// Takes the room for one poll's answer from the connection's send queue, if the queue has room
/// for it on top of a read reserve. Taken *before* polling: the connection's reader takes its
/// read reserves from the same queue concurrently, so a check alone could be overtaken between
/// the poll and the queueing of its frames (the peer would then be closed as overloaded though
/// it reads). Without room, marks the connection as waiting for its writer to drain.
fn take_poll_room(c: &Conn) -> Option<OwnedSemaphorePermit> {
    let take = || {
        if c.q.room() < POLL_ROOM {
            return None;
        }
        c.q.semaphore()
            .try_acquire_many_owned(POLL_ANSWER as u32)
            .ok()
    };
    if let Some(room) = take() {
        return Some(room);
    }
    c.wants.store(true, Ordering::SeqCst);
    // the writer may have drained between the check and the store; if not, it (or the next
    // received frame) polls again
    let room = take()?;
    c.wants.store(false, Ordering::SeqCst);
    Some(room)
}

/// Queues a session's messages (closing the connection if the peer has stopped reading and
/// its queue is full); ends the connection when the session is over.
fn deliver<E: std::error::Error + 'static>(
    c: &mut Conn,
    out: Outcome<E>,
    mut reserve: Option<&mut OwnedSemaphorePermit>,
) {
    for frame in out.send {
        if !c.q.push(frame, reserve.as_deref_mut()) {
            c.killer.kill(CloseReason::Overloaded);
            c.session = None;
            return;
        }
    }
    if out.finished {
        let reason = out
            .error
            .as_ref()
            .map_or(CloseReason::Done, CloseReason::for_error);
        c.q.close(reason);
        c.session = None;
    }
}
