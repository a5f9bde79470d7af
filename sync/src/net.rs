//! The WebSocket transport (feature `net`): a server for many documents and clients, and a client
//! that syncs one replica. Both are small adapters that pump the sans-IO sessions over a
//! connection; framing, limits and close codes are in `spec/sync.md` ("Transport: WebSocket").
//!
//! * One binary WebSocket message carries one protocol message (at most
//!   [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN) = 4 MiB; larger frames close the connection with
//!   code 1009 before anything is decoded).
//! * The URL path names the document: `ws://HOST:PORT/DOC` ([`DocName`]; for
//!   [`AuthzDocuments`], the document id in hex).
//! * Authentication at the handshake ([`Admit`]): [`AuthzDocuments`] (what `canopy serve` runs)
//!   takes an `Authorization: Bearer` [`Credential`] — a UCAN invocation signed by the client's
//!   key, bound to the document, with its delegation chain — and refuses a missing, forged,
//!   expired or replayed one (401), one whose chain grants nothing on the document (403), an
//!   unknown document (404). The connection then reads through [`CapsRead`](crate::CapsRead)
//!   for its DID and chain, and every op it pushes goes through the document's authorized
//!   ingest. [`OpenAccess`] admits everyone (trusted set-ups, tests).
//! * Backpressure: each connection has a bounded send queue ([`SEND_QUEUE_BYTES`]). A session is
//!   polled for more only when its queue has room for a whole poll, and the next frame is read
//!   only when the queue has room for the largest answer to it; a peer that stops reading stops
//!   being sent to, and the server stops reading from it, so nothing grows without bound.
//! * A bad frame (text, oversized, malformed message, message not allowed) closes that connection
//!   with a typed [`CloseReason`] (an `Error` protocol message first when the session produced
//!   one); a malformed message is decoded whole before anything is applied, so nothing partial is
//!   stored. Other connections are not affected.
//!
//! The server ([`serve`]) runs one thread per open document that owns the replica (an
//! authorized `canopy_caps::Authz` on [`AuthzDocuments`], or a plain [`canopy_tree::Tree`] on
//! [`SqliteDocuments`] / [`MemoryDocuments`]) and the sessions of every connection to it: ops pushed by one client are applied once, then every other live session is polled, which
//! fans them out (live mode).
//!
//! ```
//! use canopy_sync::net::{self, DocName, MemoryDocuments, OpenAccess, ServerConfig};
//! use canopy_sync::{memory::FullPeer, Options, Session, AllowAll};
//! use canopy_tree::{MemoryStore, NodeId, Place, ReplicaId, Store, Tree};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let docs = MemoryDocuments::new(ReplicaId::from_bytes([9; 32]));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/notes", listener.local_addr()?);
//! tokio::spawn(net::serve(listener, docs, OpenAccess, ServerConfig::default()));
//!
//! let mut a = Tree::new(MemoryStore::new(), ReplicaId::from_bytes([1; 32]));
//! a.create(NodeId::ROOT, Place::Last, Some(b"hello".to_vec()))?;
//! let mut peer = FullPeer::new(&mut a, Session::new(AllowAll, Options::default()));
//! net::sync(&url, &mut peer, |_, _| net::Flow::Continue).await?;
//!
//! let mut b = Tree::new(MemoryStore::new(), ReplicaId::from_bytes([2; 32]));
//! let mut peer = FullPeer::new(&mut b, Session::new(AllowAll, Options::default()));
//! let report = net::sync(&url, &mut peer, |_, _| net::Flow::Continue).await?;
//! assert!(report.finished);
//! assert_eq!(b.child_count(NodeId::ROOT)?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

mod auth;
mod client;
mod docs;
mod queue;
mod server;

pub use auth::{
    invocation_fields, AuthError, Authenticated, Authenticator, Credential, CredentialDecodeError,
    SyncCommand, CREDENTIAL_VERSION, MAX_CREDENTIAL_BYTES, MAX_SKEW_SECS, MAX_WINDOW_SECS,
};
pub use client::{fetch_genesis, request, sync, ClientError, Flow, GenesisFetchError, SyncReport};
pub use docs::{
    AuthzDocuments, AuthzOpenError, Documents, MemoryDocuments, OpenError, SqliteDocuments,
};
pub use server::{serve, Admission, Admit, AdmitError, OpenAccess, ServerConfig, GENESIS_HEADER};
/// Turns a URL into a WebSocket handshake request ([`sync`] takes either).
pub use tokio_tungstenite::tungstenite::client::IntoClientRequest;
/// A WebSocket handshake request (e.g. from [`request`], carrying a credential).
pub use tokio_tungstenite::tungstenite::handshake::client::Request;

/// Bytes of frames one connection may have queued for sending (each side, each connection).
pub const SEND_QUEUE_BYTES: usize = 16 << 20;

/// Room kept free in the send queue before the next frame is read: the largest answer to one
/// received message (a `Frontier` of 65,536 entries, or one `Refused` per op of a 4 MiB `Ops`).
pub(crate) const READ_RESERVE: usize = (4 << 20) + (1 << 19);

/// Session options the transport uses: batches of 256 KiB, at most 1 MiB per poll.
pub fn transport_options(live: bool) -> crate::Options {
    crate::Options {
        live,
        batch_bytes: 256 << 10,
        poll_budget: 1 << 20,
    }
}

/// A document's name in a URL path and on disk: 1–128 of `A-Z a-z 0-9 _ -`, not starting with
/// `-`. (So it is always a safe file name.)
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocName(String);

/// A string is not a valid [`DocName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocNameError {
    /// Empty, or longer than 128 bytes.
    #[error("document names have 1 to 128 characters")]
    Length,
    /// A character outside `A-Z a-z 0-9 _ -`, or a leading `-`.
    #[error("document names use only A-Z a-z 0-9 _ - and do not start with -")]
    Character,
}

impl DocName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DocName {
    type Err = DocNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 128 {
            return Err(DocNameError::Length);
        }
        if s.starts_with('-')
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(DocNameError::Character);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocName({})", self.0)
    }
}

/// Why a connection was closed, as sent in the WebSocket close frame (code and reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The session finished (reconciled and not live, or closed politely): 1000.
    Done,
    /// A malformed message, or one the protocol does not allow now: 1002.
    Protocol,
    /// A text frame: 1003.
    TextFrame,
    /// The peer's request was refused (full sync not allowed, scope not readable): 1008.
    Refused,
    /// A frame over [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN): 1009.
    TooLarge,
    /// The replica's store failed, or the document could not be opened: 1011.
    Storage,
    /// The peer did not read what it was sent and the send queue is full: 1013.
    Overloaded,
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Self::Done => 1000,
            Self::Protocol => 1002,
            Self::TextFrame => 1003,
            Self::Refused => 1008,
            Self::TooLarge => 1009,
            Self::Storage => 1011,
            Self::Overloaded => 1013,
        }
    }

    /// The reason text sent with the code.
    pub fn text(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Protocol => "protocol error",
            Self::TextFrame => "text frames are not part of the protocol",
            Self::Refused => "request refused",
            Self::TooLarge => "frame exceeds 4 MiB",
            Self::Storage => "storage error",
            Self::Overloaded => "send queue full",
        }
    }

    /// The reason for a close code, if it is one of ours.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1000 => Self::Done,
            1002 => Self::Protocol,
            1003 => Self::TextFrame,
            1008 => Self::Refused,
            1009 => Self::TooLarge,
            1011 => Self::Storage,
            1013 => Self::Overloaded,
            _ => return None,
        })
    }

    pub(crate) fn for_error<E: std::error::Error + 'static>(e: &crate::SyncError<E>) -> Self {
        use crate::{SyncError, WireError};
        match e {
            SyncError::Wire(WireError::TooLarge { .. }) => Self::TooLarge,
            SyncError::Wire(_) | SyncError::Unexpected { .. } => Self::Protocol,
            SyncError::RefusedPeer(_) => Self::Refused,
            SyncError::Store(_) => Self::Storage,
            _ => Self::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_names() {
        assert_eq!(
            "notes-2_b".parse::<DocName>().unwrap().to_string(),
            "notes-2_b"
        );
        assert_eq!("".parse::<DocName>(), Err(DocNameError::Length));
        assert_eq!(
            "x".repeat(129).parse::<DocName>(),
            Err(DocNameError::Length)
        );
        for bad in ["../etc", "a/b", "-x", "a.b", "é"] {
            assert_eq!(
                bad.parse::<DocName>(),
                Err(DocNameError::Character),
                "{bad}"
            );
        }
    }

    #[test]
    fn close_codes_round_trip() {
        for r in [
            CloseReason::Done,
            CloseReason::Protocol,
            CloseReason::TextFrame,
            CloseReason::Refused,
            CloseReason::TooLarge,
            CloseReason::Storage,
            CloseReason::Overloaded,
        ] {
            assert_eq!(CloseReason::from_code(r.code()), Some(r));
        }
        assert_eq!(CloseReason::from_code(4000), None);
    }
}
