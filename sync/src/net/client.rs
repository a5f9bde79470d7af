//! The client side: connects to a server's document and pumps one session over the connection.

use std::time::Duration;

use canopy_caps::{Document, DocumentId, GenesisError};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::auth::Credential;
use super::queue::{outq, write_loop, Outq};
use super::server::{ws_config, GENESIS_HEADER, POLL_ROOM};
use super::{CloseReason, READ_RESERVE};
use crate::memory::Endpoint;
use crate::session::{Event, Outcome, SyncError};
use crate::wire::Message;

/// The handshake request for `url` with `credential` in its `Authorization` header (what
/// [`sync`] takes for an authorized server).
pub fn request(url: &str, credential: &Credential) -> Result<Request, WsError> {
    let mut req = url.into_client_request()?;
    let value = credential
        .to_header()
        .parse()
        .map_err(|e| WsError::HttpFormat(tokio_tungstenite::tungstenite::http::Error::from(e)))?;
    req.headers_mut().insert(AUTHORIZATION, value);
    Ok(req)
}

/// Why [`fetch_genesis`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisFetchError {
    /// The handshake failed (refused with an HTTP status such as 401/403/404, or no connection).
    #[error("connecting: {0}")]
    Connect(#[source] WsError),
    /// The server sent no `Canopy-Genesis` header.
    #[error("the server sent no genesis")]
    Missing,
    /// The header is not hex.
    #[error("the genesis header is not hex")]
    Hex,
    /// The header is not the genesis of the document asked for.
    #[error("bad genesis from the server: {0}")]
    Genesis(#[source] GenesisError),
}

/// Learns a document's owner and nonce from the server (the `Canopy-Genesis` handshake header,
/// checked against `doc`: the id is derived from them), then closes the connection. For a client
/// that knows only the document id and must create its local authorized replica first. The
/// credential is spent (one handshake); [`sync`] needs a fresh one.
pub async fn fetch_genesis(
    request: Request,
    doc: &DocumentId,
) -> Result<Document, GenesisFetchError> {
    let (mut ws, resp) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true)
            .await
            .map_err(GenesisFetchError::Connect)?;
    let _ = ws.close(None).await;
    let hex_value = resp
        .headers()
        .get(GENESIS_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(GenesisFetchError::Missing)?;
    let bytes = hex::decode(hex_value).map_err(|_| GenesisFetchError::Hex)?;
    Document::from_genesis(&bytes, doc).map_err(GenesisFetchError::Genesis)
}

/// What the event callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Drop the connection now (a WebSocket close, no protocol goodbye), as a disconnect would.
    /// What was applied stays applied; the next sync resumes from there. Local ops made since
    /// the last poll are not sent.
    Stop,
    /// End the session politely: send the local ops made so far (e.g. by this callback), then
    /// `Close`, and return once the server has closed its side too, i.e. has applied everything
    /// sent ([`SyncReport::finished`]).
    Finish,
}

/// What a [`sync`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// The session finished (reconciled, or closed politely).
    pub finished: bool,
    /// The callback stopped it ([`Flow::Stop`]; a [`Flow::Finish`] ends as `finished`).
    pub stopped: bool,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes of frames sent.
    pub bytes_sent: u64,
    /// Bytes of frames received.
    pub bytes_received: u64,
}

/// Why a sync over WebSocket failed. What was applied before the failure stays applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError<E: std::error::Error + 'static> {
    /// The connection could not be opened (bad URL, refused, handshake refused with an HTTP
    /// status such as 401/403/404).
    #[error("connecting: {0}")]
    Connect(#[source] WsError),
    /// The connection failed.
    #[error("connection: {0}")]
    Socket(#[source] WsError),
    /// The session failed (a malformed or unexpected message, a refusal, the peer's error, the
    /// local store).
    #[error("session: {0}")]
    Session(#[source] SyncError<E>),
    /// The server closed the connection before the session finished.
    #[error("closed by the server (code {code:?}, {reason:?})")]
    Closed {
        /// The close code (none if the connection just ended).
        code: Option<u16>,
        /// The code's meaning, if it is one of ours.
        reason: Option<CloseReason>,
    },
    /// The server sent something that is not a binary frame of at most 4 MiB.
    #[error("bad frame from the server: {0:?}")]
    BadFrame(CloseReason),
    /// The server did not read what it was sent and the send queue is full.
    #[error("the server stopped reading")]
    Overloaded,
}

struct Driver {
    q: Outq,
    report: SyncReport,
    /// The callback asked for [`Flow::Finish`].
    finishing: bool,
}

impl Driver {
    /// Queues what a call produced and reports its events. Err on a session failure (after
    /// queuing its last messages).
    fn take<Ep: Endpoint>(
        &mut self,
        ep: &mut Ep,
        out: Outcome<Ep::Error>,
        on_event: &mut impl FnMut(&mut Ep, &Event) -> Flow,
        mut reserve: Option<&mut tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<bool, ClientError<Ep::Error>> {
        for frame in out.send {
            self.report.frames_sent += 1;
            self.report.bytes_sent += frame.len() as u64;
            if !self.q.push(frame, reserve.as_deref_mut()) {
                return Err(ClientError::Overloaded);
            }
        }
        for ev in &out.events {
            match on_event(ep, ev) {
                Flow::Continue => {}
                Flow::Stop => self.report.stopped = true,
                Flow::Finish => self.finishing = true,
            }
        }
        if let Some(e) = out.error {
            self.q.close(CloseReason::for_error(&e));
            return Err(ClientError::Session(e));
        }
        if out.finished {
            self.report.finished = true;
        }
        Ok(!self.report.finished && !self.report.stopped && !self.finishing)
    }
}

/// Syncs `endpoint` (a [`FullPeer`](crate::memory::FullPeer) or
/// [`PartialPeer`](crate::memory::PartialPeer)) with the server document at `request` (a URL
/// such as `ws://127.0.0.1:7070/notes`, or a request carrying an `Authorization` header).
///
/// Returns when the session finishes (after reconciling, unless both sides are live; once the
/// server has closed its side too, so everything sent has been applied there),
/// when `on_event` returns [`Flow::Stop`], or on failure. Every event is passed to `on_event`
/// with the endpoint (to read the replica). Batches are applied as they arrive, so a sync cut
/// short resumes where it stopped.
pub async fn sync<Ep, R, F>(
    request: R,
    endpoint: &mut Ep,
    mut on_event: F,
) -> Result<SyncReport, ClientError<Ep::Error>>
where
    Ep: Endpoint,
    R: IntoClientRequest + Unpin,
    F: FnMut(&mut Ep, &Event) -> Flow,
{
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true)
        .await
        .map_err(ClientError::Connect)?;
    let (sink, mut stream) = ws.split();
    let (q, qrx) = outq();
    let (kill_tx, kill_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(sink, qrx, kill_rx, None));
    let sem = q.semaphore();
    let mut d = Driver {
        q,
        report: SyncReport::default(),
        finishing: false,
    };
    let result = async {
        let out = endpoint.start();
        let mut going = d.take(endpoint, out, &mut on_event, None)?;
        let mut poll_pending = true;
        while going {
            tokio::select! {
                // read only when the answer surely fits the send queue
                got = async {
                    let reserve = sem.clone().acquire_many_owned(READ_RESERVE as u32).await;
                    (stream.next().await, reserve)
                } => {
                    let (m, reserve) = got;
                    let Ok(mut reserve) = reserve else {
                        return Err(ClientError::Overloaded);
                    };
                    match m {
                        Some(Ok(WsMessage::Binary(b))) => {
                            d.report.frames_received += 1;
                            d.report.bytes_received += b.len() as u64;
                            let out = endpoint.receive(&b);
                            going = d.take(endpoint, out, &mut on_event, Some(&mut reserve))?;
                            poll_pending = true;
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let code = frame.map(|f| u16::from(f.code));
                            return Err(ClientError::Closed {
                                code,
                                reason: code.and_then(CloseReason::from_code),
                            });
                        }
                        None => return Err(ClientError::Closed { code: None, reason: None }),
                        Some(Ok(WsMessage::Text(_))) => {
                            return Err(ClientError::BadFrame(CloseReason::TextFrame));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(_))) => {
                            return Err(ClientError::BadFrame(CloseReason::TooLarge));
                        }
                        Some(Err(e)) => return Err(ClientError::Socket(e)),
                    }
                }
                room = sem.clone().acquire_many_owned(POLL_ROOM as u32), if poll_pending => {
                    drop(room);
                    let out = endpoint.poll();
                    // poll again after sending, and after events: the callback may have made
                    // local ops (live mode) that only a poll sends
                    poll_pending = !out.send.is_empty() || !out.events.is_empty();
                    going = d.take(endpoint, out, &mut on_event, None)?;
                }
            }
        }
        if d.finishing && !d.report.finished && !d.report.stopped {
            // Flow::Finish: send what the session has ready (the local ops made so far), then
            // Close; the server's close below confirms it applied all of it
            loop {
                let room = sem.clone().acquire_many_owned(POLL_ROOM as u32).await;
                let Ok(room) = room else {
                    return Err(ClientError::Overloaded);
                };
                drop(room);
                let out = endpoint.poll();
                let sent = !out.send.is_empty();
                d.take(endpoint, out, &mut on_event, None)?;
                if !sent || d.report.finished || d.report.stopped {
                    break;
                }
            }
            if !d.report.finished {
                let out = endpoint.close();
                d.take(endpoint, out, &mut on_event, None)?;
            }
        }
        Ok(())
    }
    .await;
    match &result {
        Err(ClientError::BadFrame(r)) => {
            let _ = kill_tx.send(*r);
        }
        Err(ClientError::Closed { .. } | ClientError::Socket(_)) => {
            let _ = kill_tx.send(CloseReason::Done);
        }
        Ok(()) if d.report.finished => {
            // the server closes once its side of the session is over too, i.e. after it has
            // applied everything we sent: wait for that, so that returning means "the server
            // has it". Its verdicts on our last ops (`Refused`, `RefusedEntry`) may come after
            // our session finished: they are still reported.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(m) = stream.next().await {
                    match m {
                        Ok(WsMessage::Binary(b)) => {
                            d.report.frames_received += 1;
                            d.report.bytes_received += b.len() as u64;
                            let ev = match Message::decode(&b) {
                                Ok(Message::Refused { op, code }) => Event::Refused { op, code },
                                Ok(Message::RefusedEntry { entry, code }) => {
                                    Event::RefusedEntry { entry, code }
                                }
                                _ => continue,
                            };
                            let _ = on_event(endpoint, &ev);
                        }
                        Ok(WsMessage::Close(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            d.q.close(CloseReason::Done);
        }
        _ => d.q.close(CloseReason::Done),
    }
    drop(d.q);
    if tokio::time::timeout(Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    result.map(|()| d.report)
}
