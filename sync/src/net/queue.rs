//! A connection's bounded send queue and the task that writes it to the socket.
//!
//! The queue is an unbounded channel whose bytes are bounded by a semaphore of
//! [`SEND_QUEUE_BYTES`](super::SEND_QUEUE_BYTES) permits: a frame takes its length in permits
//! when queued and gives them back once written. Producers never wait on it: they check room
//! first (and close the connection if a peer that does not read has filled it).

use std::sync::Arc;

use futures_util::{Sink, SinkExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::server::DrainHook;
use super::{CloseReason, SEND_QUEUE_BYTES};

pub(crate) enum Outbound {
    Frame(Vec<u8>),
    Close(CloseReason),
}

/// The producer side of a send queue.
#[derive(Clone)]
pub(crate) struct Outq {
    tx: mpsc::UnboundedSender<Outbound>,
    room: Arc<Semaphore>,
}

pub(crate) struct OutqRx {
    rx: mpsc::UnboundedReceiver<Outbound>,
    room: Arc<Semaphore>,
}

pub(crate) fn outq() -> (Outq, OutqRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(SEND_QUEUE_BYTES));
    (
        Outq {
            tx,
            room: room.clone(),
        },
        OutqRx { rx, room },
    )
}

impl Outq {
    /// Bytes that may still be queued.
    pub(crate) fn room(&self) -> usize {
        self.room.available_permits()
    }

    /// The semaphore (to wait for room).
    pub(crate) fn semaphore(&self) -> Arc<Semaphore> {
        self.room.clone()
    }

    /// Queues a frame, paying from `reserve` first, then from free room. False (nothing queued)
    /// when there is not enough room.
    pub(crate) fn push(&self, frame: Vec<u8>, reserve: Option<&mut OwnedSemaphorePermit>) -> bool {
        let n = frame.len();
        let mut paid = 0;
        if let Some(r) = reserve {
            let take = n.min(r.num_permits());
            if take > 0 {
                if let Some(p) = r.split(take) {
                    p.forget();
                    paid = take;
                }
            }
        }
        let rest = n - paid;
        if rest > 0 {
            let ok = u32::try_from(rest)
                .ok()
                .and_then(|r| self.room.try_acquire_many(r).ok());
            match ok {
                Some(p) => p.forget(),
                None => {
                    // give back what the reserve paid
                    self.room.add_permits(paid);
                    return false;
                }
            }
        }
        self.tx.send(Outbound::Frame(frame)).is_ok()
    }

    /// Queues the close frame (after everything already queued); it needs no room.
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.tx.send(Outbound::Close(reason));
    }
}

pub(crate) fn close_frame(reason: CloseReason) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(reason.code()),
        reason: reason.text().into(),
    }
}

/// Writes queued frames until a close (queued, or `kill` for one that must not wait behind the
/// queue), the queue's end, or a socket error. After each written frame, `drain` (the server's)
/// tells the document a session waiting for room may be polled again.
pub(crate) async fn write_loop<W>(
    mut sink: W,
    mut q: OutqRx,
    mut kill: oneshot::Receiver<CloseReason>,
    drain: Option<DrainHook>,
) where
    W: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut kill_live = true;
    loop {
        let next = tokio::select! {
            biased;
            k = &mut kill, if kill_live => match k {
                Ok(reason) => Outbound::Close(reason),
                Err(_) => { kill_live = false; continue; }
            },
            o = q.rx.recv() => match o {
                Some(o) => o,
                None => break,
            },
        };
        match next {
            Outbound::Frame(b) => {
                let n = b.len();
                if sink.send(WsMessage::Binary(b.into())).await.is_err() {
                    break;
                }
                q.room.add_permits(n);
                if let Some(d) = &drain {
                    if !d.notify(q.room.available_permits()).await {
                        break;
                    }
                }
            }
            Outbound::Close(reason) => {
                let _ = sink.send(WsMessage::Close(Some(close_frame(reason)))).await;
                break;
            }
        }
    }
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_refuses_frames_beyond_its_bound_and_reserves_pay_first() {
        let (q, mut rx) = outq();
        let frame = vec![0u8; 1 << 20];
        for _ in 0..16 {
            assert!(q.push(frame.clone(), None));
        }
        assert_eq!(q.room(), 0);
        assert!(!q.push(vec![1], None), "a full queue takes nothing more");
        // writing a frame gives its room back
        assert!(matches!(rx.rx.try_recv(), Ok(Outbound::Frame(f)) if f.len() == 1 << 20));
        rx.room.add_permits(1 << 20);
        // a reserve taken before reading pays for the answer; the unused rest returns on drop
        let mut reserve = q.semaphore().try_acquire_many_owned(1000).unwrap();
        assert!(q.push(vec![2; 600], Some(&mut reserve)));
        assert_eq!(reserve.num_permits(), 400);
        drop(reserve);
        assert_eq!(q.room(), (1 << 20) - 600);
        // a frame larger than the reserve takes the rest from free room, or nothing at all
        let mut reserve = q.semaphore().try_acquire_many_owned(10).unwrap();
        assert!(!q.push(vec![3; 2 << 20], Some(&mut reserve)));
        assert_eq!(reserve.num_permits(), 0);
        drop(reserve);
        assert_eq!(q.room(), (1 << 20) - 600);
    }
}
