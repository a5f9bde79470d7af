//! The sans-IO state machines: [`Session`] for a full replica (peer-to-peer, server, or the
//! responder of a partial replica) and [`PartialSession`] for a partial replica.
//!
//! A transport feeds every received message to `receive` and sends what the returned [`Outcome`]
//! lists, in order; it calls `poll` when it can send more (backpressure: each call returns at most
//! [`Options::poll_budget`] bytes of messages) and after local ops in live mode.

use std::fmt;

use canopy_tree::{ApplyError, ChangeEvent, Op, OpId, Store, VersionVector};
use rustc_hash::FxHashSet;

use crate::delta::{self, DeltaError};
use crate::filter::{Bound, ReadFilter};
use crate::wire::{
    frontier_count, frontier_digest, EntriesSummary, EntryId, ErrorCode, Message, Mode,
    RefusalCode, WireError,
};

mod partial;
mod replica;

pub use partial::PartialSession;
pub use replica::{refusal_code, Ingested, RefusedItem, Replica, ReplicaError};

/// Tuning and behaviour of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Stay connected after reconciling and exchange new ops (if the peer asks for it too).
    pub live: bool,
    /// Target size of one op or node batch, in bytes.
    pub batch_bytes: usize,
    /// Most bytes of messages one `receive`/`poll` call returns while streaming.
    pub poll_budget: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            live: false,
            batch_bytes: 256 << 10,
            poll_budget: 4 << 20,
        }
    }
}

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Hello sent, waiting for the peer's.
    Connecting,
    /// Comparing digests and frontiers.
    Reconciling,
    /// Receiving ops (full) or node records (partial).
    Downloading,
    /// Applying a received batch.
    Applying,
    /// Reconciled; new ops flow both ways until closed.
    Live,
    /// Reconciled and finished (not live), or closed.
    Done,
}

/// A progress report. Full mode counts ops; partial mode counts delta items (node records and
/// gone notices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Exact number of items to receive in this reconciliation, once known.
    pub total: Option<u64>,
    /// Items received and applied so far.
    pub done: u64,
    /// Bytes of messages sent so far.
    pub bytes_sent: u64,
    /// Bytes of messages received so far.
    pub bytes_received: u64,
}

/// Something the application may want to know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Progress changed.
    Progress(Progress),
    /// The scope root's children are all present (full: reconciled; partial: first batch).
    FirstViewReady,
    /// Received ops changed the tree (full replica), in order.
    Changed(Vec<ChangeEvent>),
    /// The peer refused one of our pushed ops.
    Refused { op: OpId, code: RefusalCode },
    /// We refused one of the peer's ops (not logged, or logged as a denied no-op).
    RejectedFromPeer { op: OpId, code: RefusalCode },
    /// The peer refused one of the document entries we sent.
    RefusedEntry { entry: EntryId, code: RefusalCode },
    /// We refused one of the document entries the peer sent (nothing of it was kept).
    RejectedEntryFromPeer { entry: EntryId, code: RefusalCode },
}

/// Why a session ended in failure. The session is closed; the [`Outcome`] carrying the error
/// also carries the [`Message::Error`] to send to the peer, when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError<E: std::error::Error + 'static> {
    /// A received message did not decode.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    /// A message the protocol does not allow in the current state.
    #[error("unexpected {got} message")]
    Unexpected { got: &'static str },
    /// The peer ended the session with an error.
    #[error("peer error: {0}")]
    Peer(ErrorCode),
    /// We refused the peer's request (its grant does not cover it).
    #[error("refused the peer's request: {0}")]
    RefusedPeer(ErrorCode),
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[source] E),
    /// Applying received items failed other than in the store (the batch was rolled back).
    #[error("apply: {0}")]
    Apply(#[source] ApplyError<E>),
    /// A partial delta did not hang together (records whose parents are neither held nor sent):
    /// it was not adopted; what does not reach the scope root was dropped and the next sync asks
    /// for a full snapshot.
    #[error("inconsistent delta from the responder")]
    InconsistentDelta,
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

/// What one `start`/`receive`/`poll` call produced.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome<E: std::error::Error + 'static> {
    /// Encoded messages to send, in order.
    pub send: Vec<Vec<u8>>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// The session is over (done, closed, or failed): send `send`, then close the transport.
    pub finished: bool,
    /// Why the session failed, if it did.
    pub error: Option<SyncError<E>>,
}

impl<E: std::error::Error + 'static> Default for Outcome<E> {
    fn default() -> Self {
        Self {
            send: Vec::new(),
            events: Vec::new(),
            finished: false,
            error: None,
        }
    }
}

/// Counters shared by both session kinds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Meter {
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

pub(crate) fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Frontier(_) => "frontier",
        Message::Ops(_) => "ops",
        Message::End => "end",
        Message::Path { .. } => "path",
        Message::Nodes { .. } => "nodes",
        Message::Gone(_) => "gone",
        Message::Checkpoint { .. } => "checkpoint",
        Message::Refused { .. } => "refused",
        Message::EntryIds { .. } => "entry ids",
        Message::Entries(_) => "entries",
        Message::RefusedEntry { .. } => "refused entry",
        Message::Error(_) => "error",
        Message::Close => "close",
        #[allow(unreachable_patterns)]
        _ => "unknown",
    }
}

struct PartialPeer {
    since: VersionVector,
    scope: canopy_tree::NodeId,
    /// The first delta was sent.
    served: bool,
}

/// The session of a full replica (any [`Replica`]: a plain [`canopy_tree::Tree`] or an
/// authorized `canopy_caps::Authz`): reconciles ops and document entries with another full
/// replica (symmetric), or serves a [`PartialSession`] the subtree it asks for, filtered by `F`.
/// Everything the peer pushes enters through [`Replica::ingest_ops`] /
/// [`Replica::ingest_entries`]; what they refuse goes back as typed refusals.
pub struct Session<F: ReadFilter> {
    filter: F,
    options: Options,
    meter: Meter,
    phase: Phase,
    /// Our Hello's digest and count, and the frontier they describe.
    hello: Option<([u8; 32], u64, VersionVector)>,
    /// Our Hello's entries summary and the sorted ids it covers.
    hello_entries: (EntriesSummary, Vec<EntryId>),
    /// Entry ids the peer is known to hold (from its EntryIds, and what was sent either way).
    peer_entries: FxHashSet<EntryId>,
    /// `peer_entries` is complete (we have the peer's whole list, or its summary equalled ours).
    peer_entries_known: bool,
    /// We sent EntryIds and wait for the peer's: how many more ids its Hello announced (a peer
    /// cannot make us hold more).
    awaiting_entry_ids: Option<u64>,
    peer_hello: bool,
    peer_live: bool,
    frontier_sent: Option<VersionVector>,
    /// Full mode: what the peer has (its frontier plus everything sent or received since).
    peer_has: Option<VersionVector>,
    streaming: bool,
    end_sent: bool,
    end_received: bool,
    total: Option<u64>,
    done: u64,
    partial: Option<PartialPeer>,
    closed: bool,
}

impl<F: ReadFilter> fmt::Debug for Session<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("phase", &self.phase)
            .field("total", &self.total)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<F: ReadFilter> Session<F> {
    /// A session of a full replica whose peer may read what `filter` allows.
    pub fn new(filter: F, options: Options) -> Self {
        Self {
            filter,
            options,
            meter: Meter::default(),
            phase: Phase::Connecting,
            hello: None,
            hello_entries: (EntriesSummary::default(), Vec::new()),
            peer_entries: FxHashSet::default(),
            peer_entries_known: false,
            awaiting_entry_ids: None,
            peer_hello: false,
            peer_live: false,
            frontier_sent: None,
            peer_has: None,
            streaming: false,
            end_sent: false,
            end_received: false,
            total: None,
            done: 0,
            partial: None,
            closed: false,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The filter deciding what the peer may read.
    pub fn filter(&self) -> &F {
        &self.filter
    }

    /// Opens the session: sends Hello. (A server may skip it; the first `receive` answers Hello.)
    pub fn start<R: Replica>(&mut self, replica: &R) -> Outcome<ReplicaError<R>> {
        let mut out = Outcome::default();
        if let Err(e) = self.send_hello(replica, true, &mut out) {
            self.fail(&mut out, SyncError::Store(e), Some(ErrorCode::Storage));
        }
        out
    }

    /// Ends the session politely.
    pub fn close<E: std::error::Error + 'static>(&mut self) -> Outcome<E> {
        let mut out = Outcome::default();
        if !self.closed {
            self.push(&mut out, &Message::Close);
            self.closed = true;
            self.phase = Phase::Done;
        }
        out.finished = true;
        out
    }

    fn push<E: std::error::Error + 'static>(&mut self, out: &mut Outcome<E>, m: &Message) {
        let b = m.encode();
        self.meter.sent += b.len() as u64;
        out.send.push(b);
    }

    fn progress<E: std::error::Error + 'static>(&self, out: &mut Outcome<E>) {
        out.events.push(Event::Progress(Progress {
            phase: self.phase,
            total: self.total,
            done: self.done,
            bytes_sent: self.meter.sent,
            bytes_received: self.meter.received,
        }));
    }

    fn fail<E: std::error::Error + 'static>(
        &mut self,
        out: &mut Outcome<E>,
        error: SyncError<E>,
        tell: Option<ErrorCode>,
    ) {
        if let Some(code) = tell {
            self.push(out, &Message::Error(code));
        }
        self.closed = true;
        self.phase = Phase::Done;
        out.finished = true;
        out.error = Some(error);
    }

    /// Sends our Hello once; `with_entries`: with our entries summary (not to a partial peer).
    fn send_hello<R: Replica>(
        &mut self,
        replica: &R,
        with_entries: bool,
        out: &mut Outcome<ReplicaError<R>>,
    ) -> Result<(), ReplicaError<R>> {
        if self.hello.is_some() {
            return Ok(());
        }
        let frontier = replica.tree().store().frontier()?;
        let digest = frontier_digest(&frontier);
        let count = frontier_count(&frontier);
        self.hello = Some((digest, count, frontier));
        let mut ids: Vec<EntryId> = if with_entries {
            replica.entries()?.iter().map(|e| EntryId::of(e)).collect()
        } else {
            Vec::new()
        };
        ids.sort_unstable();
        ids.dedup();
        let entries = EntriesSummary::of(&ids);
        self.hello_entries = (entries, ids);
        self.push(
            out,
            &Message::Hello {
                mode: Mode::Full,
                digest,
                count,
                live: self.options.live,
                entries,
            },
        );
        self.progress(out);
        Ok(())
    }

    /// Handles one received message.
    pub fn receive<R: Replica>(
        &mut self,
        replica: &mut R,
        bytes: &[u8],
    ) -> Outcome<ReplicaError<R>> {
        let mut out = Outcome::default();
        if self.closed {
            out.finished = true;
            out.error = Some(SyncError::Closed);
            return out;
        }
        self.meter.received += bytes.len() as u64;
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.fail(&mut out, SyncError::Wire(e), Some(ErrorCode::Malformed));
                return out;
            }
        };
        if let Err(e) = self.handle(replica, msg, &mut out) {
            let code = match &e {
                SyncError::Store(_) | SyncError::Apply(_) => Some(ErrorCode::Storage),
                SyncError::Unexpected { .. } => Some(ErrorCode::Unexpected),
                SyncError::RefusedPeer(c) => Some(*c),
                _ => None,
            };
            self.fail(&mut out, e, code);
        }
        out
    }

    /// Sends what is ready: the next op batches of a stream, new ops in live mode, or a new
    /// delta for a live partial peer. Call when the transport can take more, and after local ops.
    pub fn poll<R: Replica>(&mut self, replica: &R) -> Outcome<ReplicaError<R>> {
        let mut out = Outcome::default();
        if self.closed {
            out.finished = true;
            return out;
        }
        if let Err(e) = self.pump(replica, &mut out) {
            self.fail(&mut out, SyncError::Store(e), Some(ErrorCode::Storage));
        }
        out
    }

    fn pump<R: Replica>(
        &mut self,
        replica: &R,
        out: &mut Outcome<ReplicaError<R>>,
    ) -> Result<(), ReplicaError<R>> {
        if self.partial.as_ref().is_some_and(|p| p.served) && self.phase == Phase::Live {
            return self.serve_delta(replica, out).or_else(|e| match e {
                DeltaError::Store(e) => Err(e),
                // the scope became unreadable (moved out of the grant): end the session
                DeltaError::ScopeNotReadable => {
                    self.fail(
                        out,
                        SyncError::RefusedPeer(ErrorCode::ScopeNotReadable),
                        Some(ErrorCode::ScopeNotReadable),
                    );
                    Ok(())
                }
            });
        }
        if self.streaming || (self.phase == Phase::Live && self.peer_has.is_some()) {
            // the grant may have been revoked since the last batch: decide again
            if !self.filter.can_read_log(&replica.read_context()) {
                self.fail(
                    out,
                    SyncError::RefusedPeer(ErrorCode::FullSyncNotAllowed),
                    Some(ErrorCode::FullSyncNotAllowed),
                );
                return Ok(());
            }
            if self.phase == Phase::Live && self.peer_entries_known {
                self.relay_entries(replica, out)?;
            }
            self.fill(replica, out)?;
        }
        Ok(())
    }

    /// Sends the document entries the peer is not known to hold, in the replica's order.
    fn relay_entries<R: Replica>(
        &mut self,
        replica: &R,
        out: &mut Outcome<ReplicaError<R>>,
    ) -> Result<(), ReplicaError<R>> {
        let missing: Vec<Vec<u8>> = replica
            .entries()?
            .into_iter()
            .filter(|e| self.peer_entries.insert(EntryId::of(e)))
            .collect();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for e in missing {
            bytes += e.len() + 4;
            batch.push(e);
            if bytes >= self.options.batch_bytes || batch.len() >= crate::wire::MAX_ITEMS {
                self.push(out, &Message::Entries(std::mem::take(&mut batch)));
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.push(out, &Message::Entries(batch));
        }
        Ok(())
    }

    fn handle<R: Replica>(
        &mut self,
        replica: &mut R,
        msg: Message,
        out: &mut Outcome<ReplicaError<R>>,
    ) -> Result<(), SyncError<ReplicaError<R>>> {
        let unexpected = |m: &Message| SyncError::Unexpected { got: kind_name(m) };
        match msg {
            Message::Hello {
                mode,
                digest,
                count,
                live,
                entries,
            } if !self.peer_hello => {
                self.peer_hello = true;
                self.peer_live = live;
                // a partial peer never receives entries: it is not told about them either
                let full = matches!(mode, Mode::Full);
                self.send_hello(replica, full, out)
                    .map_err(SyncError::Store)?;
                match mode {
                    Mode::Full => {
                        if !self.filter.can_read_log(&replica.read_context()) {
                            return Err(SyncError::RefusedPeer(ErrorCode::FullSyncNotAllowed));
                        }
                        let (our_digest, our_count, our_frontier) =
                            self.hello.clone().expect("hello sent above");
                        self.phase = Phase::Reconciling;
                        let same_entries = self.hello_entries.0 == entries;
                        if same_entries {
                            // the peer holds what our Hello described
                            self.peer_entries
                                .extend(self.hello_entries.1.iter().copied());
                            self.peer_entries_known = true;
                        }
                        if (our_digest, our_count) == (digest, count) && same_entries {
                            // the peer has what our Hello described (not ops made since)
                            self.peer_has = Some(our_frontier);
                            self.total = Some(0);
                            self.end_sent = true;
                            self.end_received = true;
                            self.reconciled(out, false);
                        } else {
                            if !same_entries {
                                // both sides see the summaries differ: both list their ids,
                                // before the frontier, so each answers with the missing
                                // entries before it streams ops
                                self.send_entry_ids(out);
                                self.awaiting_entry_ids = Some(entries.count);
                            }
                            let f = replica
                                .tree()
                                .store()
                                .frontier()
                                .map_err(SyncError::Store)?;
                            self.push(out, &Message::Frontier(f.clone()));
                            self.frontier_sent = Some(f);
                            self.progress(out);
                        }
                    }
                    Mode::Partial { scope, since } => {
                        let bound = Bound {
                            filter: &self.filter,
                            cx: replica.read_context(),
                        };
                        match delta::check_scope(replica.tree(), &bound, scope) {
                            Ok(_) => {}
                            Err(DeltaError::Store(e)) => return Err(SyncError::Store(e)),
                            Err(DeltaError::ScopeNotReadable) => {
                                return Err(SyncError::RefusedPeer(ErrorCode::ScopeNotReadable))
                            }
                        }
                        self.partial = Some(PartialPeer {
                            since,
                            scope,
                            served: false,
                        });
                        self.phase = Phase::Reconciling;
                        self.progress(out);
                    }
                    #[allow(unreachable_patterns)]
                    _ => return Err(SyncError::Unexpected { got: "hello" }),
                }
            }
            Message::Frontier(vv) if self.frontier_sent.is_some() && self.peer_has.is_none() => {
                let ours = self.frontier_sent.as_ref().expect("checked");
                let total = vv
                    .iter()
                    .map(|(r, s)| s.saturating_sub(ours.get(&r)))
                    .fold(0u64, u64::saturating_add);
                self.total = Some(total);
                self.peer_has = Some(vv);
                self.streaming = true;
                self.phase = Phase::Downloading;
                self.progress(out);
                self.fill(replica, out).map_err(SyncError::Store)?;
            }
            Message::EntryIds { ids, more } if self.awaiting_entry_ids.is_some() => {
                let left = self.awaiting_entry_ids.unwrap_or(0);
                if ids.len() as u64 > left {
                    // more ids than its Hello announced
                    return Err(SyncError::Unexpected { got: "entry ids" });
                }
                self.awaiting_entry_ids = Some(left - ids.len() as u64);
                self.peer_entries.extend(ids);
                if !more {
                    self.awaiting_entry_ids = None;
                    self.peer_entries_known = true;
                    self.relay_entries(replica, out).map_err(SyncError::Store)?;
                }
            }
            Message::Entries(entries) if self.peer_hello => {
                for e in &entries {
                    self.peer_entries.insert(EntryId::of(e));
                }
                let prev = self.phase;
                self.phase = Phase::Applying;
                self.progress(out);
                let ingested = replica.ingest_entries(entries).map_err(apply_error)?;
                self.report(ingested, out);
                self.phase = prev;
                self.progress(out);
                if self.phase == Phase::Live && self.partial.is_some() {
                    self.pump(replica, out).map_err(SyncError::Store)?;
                }
            }
            Message::Ops(ops)
                if self.peer_hello && (self.partial.is_some() || self.peer_has.is_some()) =>
            {
                let ids: Vec<OpId> = ops.iter().map(Op::id).collect();
                let n = ops.len() as u64;
                let prev = self.phase;
                self.phase = Phase::Applying;
                self.progress(out);
                let ingested = replica.ingest_ops(ops).map_err(apply_error)?;
                self.report(ingested, out);
                if let Some(has) = self.peer_has.as_mut() {
                    for id in ids {
                        if id.seq() > has.get(&id.replica()) {
                            has.set(id.replica(), id.seq());
                        }
                    }
                }
                self.done += n;
                self.phase = prev;
                self.progress(out);
                if self.phase == Phase::Live {
                    // relay: live partial peers get their delta, live full peers nothing (they sent it)
                    if self.partial.is_some() {
                        self.pump(replica, out).map_err(SyncError::Store)?;
                    }
                }
            }
            Message::End if self.partial.as_ref().is_some_and(|p| !p.served) => {
                self.serve_delta(replica, out).map_err(|e| match e {
                    DeltaError::Store(e) => SyncError::Store(e),
                    DeltaError::ScopeNotReadable => {
                        SyncError::RefusedPeer(ErrorCode::ScopeNotReadable)
                    }
                })?;
                if self.options.live && self.peer_live {
                    self.phase = Phase::Live;
                    self.progress(out);
                } else {
                    self.phase = Phase::Done;
                    self.closed = true;
                    out.finished = true;
                    self.progress(out);
                }
            }
            Message::End if self.peer_has.is_some() && !self.end_received => {
                self.end_received = true;
                if self.end_sent {
                    self.reconciled(out, true);
                }
            }
            Message::Refused { op, code } => out.events.push(Event::Refused { op, code }),
            Message::RefusedEntry { entry, code } => {
                out.events.push(Event::RefusedEntry { entry, code })
            }
            Message::Error(code) => {
                self.closed = true;
                self.phase = Phase::Done;
                out.finished = true;
                out.error = Some(SyncError::Peer(code));
            }
            Message::Close => {
                self.closed = true;
                self.phase = Phase::Done;
                out.finished = true;
            }
            m => return Err(unexpected(&m)),
        }
        Ok(())
    }

    /// Sends our Hello's entry ids, in messages of at most [`crate::MAX_ITEMS`].
    fn send_entry_ids<E: std::error::Error + 'static>(&mut self, out: &mut Outcome<E>) {
        let ids = std::mem::take(&mut self.hello_entries.1);
        let mut chunks = ids.chunks(crate::wire::MAX_ITEMS).peekable();
        if chunks.peek().is_none() {
            self.push(
                out,
                &Message::EntryIds {
                    ids: Vec::new(),
                    more: false,
                },
            );
        }
        while let Some(c) = chunks.next() {
            let more = chunks.peek().is_some();
            self.push(
                out,
                &Message::EntryIds {
                    ids: c.to_vec(),
                    more,
                },
            );
        }
        self.hello_entries.1 = ids;
    }

    /// Sends a refusal for every item the replica refused, and reports the changes.
    fn report<E: std::error::Error + 'static>(&mut self, ingested: Ingested, out: &mut Outcome<E>) {
        for (item, code) in ingested.refused {
            match item {
                RefusedItem::Op(op) => {
                    self.push(out, &Message::Refused { op, code });
                    out.events.push(Event::RejectedFromPeer { op, code });
                }
                RefusedItem::Entry(entry) => {
                    self.push(out, &Message::RefusedEntry { entry, code });
                    out.events
                        .push(Event::RejectedEntryFromPeer { entry, code });
                }
            }
        }
        if !ingested.events.is_empty() {
            out.events.push(Event::Changed(ingested.events));
        }
    }

    /// Both streams ended. `pushed`: items were exchanged, so the peer may still be sending
    /// refusals of ours: we send Close and finish on the peer's Close, which it sends only after
    /// it processed our End, hence after every refusal (in sync, nothing was pushed).
    fn reconciled<E: std::error::Error + 'static>(&mut self, out: &mut Outcome<E>, pushed: bool) {
        out.events.push(Event::FirstViewReady);
        if self.options.live && self.peer_live {
            self.phase = Phase::Live;
        } else if pushed {
            self.phase = Phase::Done;
            self.push(out, &Message::Close);
        } else {
            self.phase = Phase::Done;
            self.closed = true;
            out.finished = true;
        }
        self.progress(out);
    }

    /// Streams ops the peer lacks (above `peer_has`) up to the poll budget; ends the initial
    /// stream with End.
    fn fill<R: Replica>(
        &mut self,
        replica: &R,
        out: &mut Outcome<ReplicaError<R>>,
    ) -> Result<(), ReplicaError<R>> {
        let store = replica.tree().store();
        let frontier = store.frontier()?;
        let has = self
            .peer_has
            .as_mut()
            .expect("fill needs the peer frontier");
        let mut budget = self.options.poll_budget;
        let mut batch: Vec<Op> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut msgs: Vec<Message> = Vec::new();
        let mut exhausted = true;
        'outer: for (r, cur) in frontier.iter() {
            let from = has.get(&r);
            for seq in from + 1..=cur {
                let Some(e) = store.entry(OpId::new(r, seq))? else {
                    break;
                };
                let len = e.op.encode().len() + 3;
                batch_bytes += len;
                batch.push(e.op);
                has.set(r, seq);
                if batch_bytes >= self.options.batch_bytes || batch.len() >= crate::wire::MAX_ITEMS
                {
                    budget = budget.saturating_sub(batch_bytes);
                    msgs.push(Message::Ops(std::mem::take(&mut batch)));
                    batch_bytes = 0;
                    if budget == 0 {
                        exhausted = false;
                        break 'outer;
                    }
                }
            }
        }
        if !batch.is_empty() {
            msgs.push(Message::Ops(batch));
        }
        for m in &msgs {
            self.push(out, m);
        }
        if exhausted && self.streaming {
            self.streaming = false;
            self.end_sent = true;
            self.push(out, &Message::End);
            if self.end_received {
                self.reconciled(out, true);
            }
        }
        Ok(())
    }

    fn serve_delta<R: Replica>(
        &mut self,
        replica: &R,
        out: &mut Outcome<ReplicaError<R>>,
    ) -> Result<(), DeltaError<ReplicaError<R>>> {
        let peer = self.partial.as_ref().expect("partial peer");
        let frontier = replica.tree().store().frontier()?;
        if peer.served && frontier == peer.since {
            return Ok(());
        }
        let bound = Bound {
            filter: &self.filter,
            cx: replica.read_context(),
        };
        let d = delta::compute(replica.tree(), &bound, peer.scope, &peer.since)?;
        let mut msgs = Vec::new();
        let items = (d.first.len() + d.records.len() + d.gone.len()) as u64;
        let reset = d.reset;
        if !d.path.is_empty() || items > 0 || reset {
            msgs.push(Message::Path {
                entries: d.path,
                total: items,
                reset,
            });
        }
        for chunk in d.gone.chunks(crate::wire::MAX_ITEMS) {
            msgs.push(Message::Gone(chunk.to_vec()));
        }
        if reset {
            batch_records(&mut msgs, d.first, true, self.options.batch_bytes);
        }
        batch_records(&mut msgs, d.records, false, self.options.batch_bytes);
        msgs.push(Message::Checkpoint {
            frontier: d.frontier.clone(),
            max_lamport: d.max_lamport,
        });
        for m in &msgs {
            self.push(out, m);
        }
        self.total = Some(items);
        self.done = items;
        let peer = self.partial.as_mut().expect("partial peer");
        peer.since = d.frontier;
        peer.served = true;
        Ok(())
    }
}

fn apply_error<E: std::error::Error + 'static>(e: ApplyError<E>) -> SyncError<E> {
    match e {
        ApplyError::Store(e) => SyncError::Store(e),
        e => SyncError::Apply(e),
    }
}

fn batch_records(
    msgs: &mut Vec<Message>,
    records: Vec<crate::wire::NodeRecord>,
    first_view: bool,
    batch_bytes: usize,
) {
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    let count = records.len();
    for (i, r) in records.into_iter().enumerate() {
        bytes += 80
            + r.position.len()
            + match &r.payload {
                crate::wire::PayloadState::Present { bytes, .. } => bytes.len() + 40,
                _ => 0,
            };
        batch.push(r);
        if (bytes >= batch_bytes || batch.len() >= crate::wire::MAX_ITEMS) && i + 1 < count {
            msgs.push(Message::Nodes {
                records: std::mem::take(&mut batch),
                first_view: false,
            });
            bytes = 0;
        }
    }
    if !batch.is_empty() || first_view {
        msgs.push(Message::Nodes {
            records: batch,
            first_view,
        });
    }
}
