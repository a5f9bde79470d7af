//! The partial replica's session: asks a full replica for the delta of its scope since its last
//! checkpoint, pushes its own ops, and applies what comes back to a [`PartialReplica`].

use std::fmt;

use super::{kind_name, Event, Meter, Options, Outcome, Phase, Progress, SyncError};
use crate::partial::{PartialReplica, PartialStore};
use crate::wire::{
    frontier_count, frontier_digest, EntriesSummary, ErrorCode, Message, Mode, NodeRecord,
    PathEntry, RefusalCode,
};

/// A warm delta held back until its checkpoint, so that a cut never leaves the replica between
/// two states (a reset is applied as it arrives instead: the replica starts cold again if cut).
#[derive(Debug, Default)]
struct Held {
    path: Option<Vec<PathEntry>>,
    gone: Vec<[u8; 16]>,
    records: Vec<NodeRecord>,
}

/// The session of a [`PartialReplica`] with a full replica (see `spec/sync.md`).
pub struct PartialSession {
    options: Options,
    meter: Meter,
    phase: Phase,
    started: bool,
    peer_live: bool,
    total: Option<u64>,
    done: u64,
    first_view: bool,
    /// Highest own seq pushed in this session.
    pushed: u64,
    closed: bool,
    held: Option<Held>,
    /// A delta has started (Path received) and not yet ended (Checkpoint).
    in_delta: bool,
    /// Nodes of the records applied in the current reset stream (checked at its checkpoint).
    streamed: Vec<canopy_tree::NodeId>,
}

impl fmt::Debug for PartialSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialSession")
            .field("phase", &self.phase)
            .field("total", &self.total)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

type Out<S> = Outcome<<S as PartialStore>::Error>;

impl PartialSession {
    /// A new session.
    pub fn new(options: Options) -> Self {
        Self {
            options,
            meter: Meter::default(),
            phase: Phase::Connecting,
            started: false,
            peer_live: false,
            total: None,
            done: 0,
            first_view: false,
            pushed: 0,
            closed: false,
            held: None,
            in_delta: false,
            streamed: Vec::new(),
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

    fn push_msg<E: std::error::Error + 'static>(&mut self, out: &mut Outcome<E>, m: &Message) {
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

    /// Opens the session: Hello with the scope and the last checkpoint, then the replica's unacked
    /// ops, then End. A cold sync (no checkpoint yet) first clears what a cut cold sync left.
    pub fn start<S: PartialStore>(&mut self, replica: &mut PartialReplica<S>) -> Out<S> {
        let mut out = Out::<S>::default();
        if self.started {
            return out;
        }
        self.started = true;
        if replica.since().is_empty() {
            if let Err(e) = replica.start_cold() {
                self.fail(&mut out, SyncError::Store(e), None);
                return out;
            }
        }
        // a replica showing own ops its last responder did not apply asks for a full snapshot
        let since = if replica.needs_reset() {
            canopy_tree::VersionVector::new()
        } else {
            replica.since().clone()
        };
        self.push_msg(
            &mut out,
            &Message::Hello {
                digest: frontier_digest(&since),
                count: frontier_count(&since),
                mode: Mode::Partial {
                    scope: replica.scope(),
                    since,
                },
                live: self.options.live,
                entries: EntriesSummary::default(),
            },
        );
        self.push_ops(replica, &mut out);
        self.push_msg(&mut out, &Message::End);
        self.progress(&mut out);
        out
    }

    fn push_ops<S: PartialStore>(&mut self, replica: &PartialReplica<S>, out: &mut Out<S>) {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for op in replica.unacked() {
            if op.id().seq() <= self.pushed {
                continue;
            }
            self.pushed = op.id().seq();
            bytes += op.encode().len() + 3;
            batch.push(op.clone());
            if bytes >= self.options.batch_bytes {
                self.push_msg(out, &Message::Ops(std::mem::take(&mut batch)));
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.push_msg(out, &Message::Ops(batch));
        }
    }

    /// Live mode: pushes local ops made since the last push.
    pub fn poll<S: PartialStore>(&mut self, replica: &PartialReplica<S>) -> Out<S> {
        let mut out = Out::<S>::default();
        if self.closed {
            out.finished = true;
        } else if self.started {
            self.push_ops(replica, &mut out);
        }
        out
    }

    /// Ends the session politely.
    pub fn close<E: std::error::Error + 'static>(&mut self) -> Outcome<E> {
        let mut out = Outcome::default();
        if !self.closed {
            self.push_msg(&mut out, &Message::Close);
            self.closed = true;
            self.phase = Phase::Done;
        }
        out.finished = true;
        out
    }

    /// Ends the session if a delta batch failed: `Ok(false)` is a delta whose records do not
    /// reach the scope root (quarantined), `Err` a store failure. True if it ended.
    fn batch_failed<E: std::error::Error + 'static>(
        &mut self,
        out: &mut Outcome<E>,
        r: Result<bool, E>,
    ) -> bool {
        match r {
            Ok(true) => false,
            Ok(false) => {
                self.fail(
                    out,
                    SyncError::InconsistentDelta,
                    Some(ErrorCode::Unexpected),
                );
                true
            }
            Err(e) => {
                self.fail(out, SyncError::Store(e), None);
                true
            }
        }
    }

    fn fail<E: std::error::Error + 'static>(
        &mut self,
        out: &mut Outcome<E>,
        error: SyncError<E>,
        tell: Option<ErrorCode>,
    ) {
        if let Some(code) = tell {
            self.push_msg(out, &Message::Error(code));
        }
        self.closed = true;
        self.phase = Phase::Done;
        out.finished = true;
        out.error = Some(error);
    }

    /// Handles one received message, applying delta items to `replica` as they arrive. The
    /// replica's checkpoint advances only when the whole delta has arrived.
    pub fn receive<S: PartialStore>(
        &mut self,
        replica: &mut PartialReplica<S>,
        bytes: &[u8],
    ) -> Out<S> {
        let mut out = Out::<S>::default();
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
        let in_session = matches!(
            self.phase,
            Phase::Reconciling | Phase::Downloading | Phase::Live
        );
        let in_delta = in_session && self.in_delta;
        match msg {
            Message::Hello {
                mode: Mode::Full,
                live,
                ..
            } if self.started && self.phase == Phase::Connecting => {
                self.peer_live = live;
                self.phase = Phase::Reconciling;
                self.progress(&mut out);
            }
            Message::Path {
                entries,
                total,
                reset,
            } if in_session => {
                self.in_delta = true;
                self.streamed.clear();
                if reset {
                    // one batch: a crash leaves either the old checkpoint or a cold replica
                    let r = replica.batch(|r| {
                        r.start_cold()?;
                        r.set_path(entries)
                    });
                    if let Err(e) = r {
                        self.fail(&mut out, SyncError::Store(e), None);
                        return out;
                    }
                    self.held = None;
                } else {
                    self.held = Some(Held {
                        path: Some(entries),
                        ..Held::default()
                    });
                }
                self.total = Some(total);
                self.done = 0;
                self.phase = Phase::Downloading;
                self.progress(&mut out);
            }
            Message::Gone(ds) if in_delta => {
                self.done += ds.len() as u64;
                match self.held.as_mut() {
                    Some(h) => h.gone.extend(ds),
                    None => {
                        let r = replica.batch(|r| ds.iter().try_for_each(|d| r.apply_gone(d)));
                        if let Err(e) = r {
                            self.fail(&mut out, SyncError::Store(e), None);
                            return out;
                        }
                    }
                }
                self.progress(&mut out);
            }
            Message::Nodes {
                records,
                first_view,
            } if in_delta => {
                self.done += records.len() as u64;
                match self.held.as_mut() {
                    Some(h) => h.records.extend(records),
                    None => {
                        // a reset stream sends parents before children: anything else is a
                        // faulty responder, and nothing of it is kept. One batch per message.
                        let streamed = &mut self.streamed;
                        let r = replica.batch(|replica| {
                            for r in records {
                                if !replica.holds_parent(r.parent)? {
                                    replica.quarantine()?;
                                    return Ok(false);
                                }
                                streamed.push(r.node);
                                replica.apply_record(r)?;
                            }
                            Ok(true)
                        });
                        if self.batch_failed(&mut out, r) {
                            return out;
                        }
                    }
                }
                if first_view && !self.first_view {
                    self.first_view = true;
                    out.events.push(Event::FirstViewReady);
                }
                self.progress(&mut out);
            }
            Message::Checkpoint {
                frontier,
                max_lamport,
            } if in_session => {
                self.in_delta = false;
                let mut touched = std::mem::take(&mut self.streamed);
                let held = self.held.take();
                if held.is_some() {
                    self.phase = Phase::Applying;
                    self.progress(&mut out);
                }
                // a warm delta and its checkpoint are one batch: a crash leaves the last one
                let r = replica.batch(|replica| {
                    if let Some(h) = held {
                        if let Some(p) = h.path {
                            replica.set_path(p)?;
                        }
                        for d in &h.gone {
                            replica.apply_gone(d)?;
                        }
                        touched.extend(h.records.iter().map(|r| r.node));
                        for r in h.records {
                            replica.apply_record(r)?;
                        }
                    }
                    // own ops the responder had not applied when it computed the delta may have
                    // removed parents of its records: the checkpoint re-applies them and prunes
                    if !replica.reaches_scope(&touched)? && !replica.has_unacked_beyond(&frontier) {
                        replica.quarantine()?;
                        return Ok(false);
                    }
                    replica.checkpoint(frontier, max_lamport)?;
                    Ok(true)
                });
                if self.batch_failed(&mut out, r) {
                    return out;
                }
                if self.total.is_none() {
                    self.total = Some(0);
                }
                if !self.first_view {
                    self.first_view = true;
                    out.events.push(Event::FirstViewReady);
                }
                if self.options.live && self.peer_live {
                    self.phase = Phase::Live;
                } else {
                    self.phase = Phase::Done;
                    self.closed = true;
                    out.finished = true;
                }
                self.progress(&mut out);
            }
            Message::Refused { op, code } => {
                if matches!(code, RefusalCode::Invalid | RefusalCode::Equivocation) {
                    if let Err(e) = replica.drop_refused(op) {
                        self.fail(&mut out, SyncError::Store(e), None);
                        return out;
                    }
                }
                out.events.push(Event::Refused { op, code });
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
            m => {
                let got = kind_name(&m);
                self.fail(
                    &mut out,
                    SyncError::Unexpected { got },
                    Some(ErrorCode::Unexpected),
                );
            }
        }
        out
    }
}
