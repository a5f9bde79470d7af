//! The in-memory transport: pumps messages between two sessions until both are quiet.
//!
//! Used by the tests and benchmarks; it measures messages, bytes and round trips (the longest
//! chain of messages each sent in reaction to the previous one, halved and rounded up), and can cut
//! the connection after a given number of deliveries to test resumption.

use std::collections::VecDeque;

use crate::filter::ReadFilter;
use crate::partial::{MemoryPartial, PartialReplica, PartialStore};
use crate::session::{Event, Outcome, PartialSession, Replica, ReplicaError, Session, SyncError};

/// One side of an in-memory link: a session and the replica it drives.
pub trait Endpoint {
    /// The replica's store error.
    type Error: std::error::Error + 'static;
    /// Opens the session.
    fn start(&mut self) -> Outcome<Self::Error>;
    /// Delivers one message.
    fn receive(&mut self, bytes: &[u8]) -> Outcome<Self::Error>;
    /// Lets the session send what is ready.
    fn poll(&mut self) -> Outcome<Self::Error>;
    /// Ends the session politely (sends `Close`).
    fn close(&mut self) -> Outcome<Self::Error>;
}

/// A full replica's side: a plain `Tree` or an authorized `canopy_caps::Authz` replica.
#[derive(Debug)]
pub struct FullPeer<'a, R: Replica, F: ReadFilter> {
    replica: &'a mut R,
    session: Session<F>,
}

impl<'a, R: Replica, F: ReadFilter> FullPeer<'a, R, F> {
    /// Pairs a replica with its session.
    pub fn new(replica: &'a mut R, session: Session<F>) -> Self {
        Self { replica, session }
    }
    /// The replica (for local ops between pumps in live mode).
    pub fn replica(&mut self) -> &mut R {
        self.replica
    }
    /// The session.
    pub fn session(&self) -> &Session<F> {
        &self.session
    }
    /// Gives the session back (to pair it with the tree again later, e.g. in live mode).
    pub fn into_session(self) -> Session<F> {
        self.session
    }
}

impl<R: Replica, F: ReadFilter> Endpoint for FullPeer<'_, R, F> {
    type Error = ReplicaError<R>;
    fn start(&mut self) -> Outcome<ReplicaError<R>> {
        self.session.start(self.replica)
    }
    fn receive(&mut self, bytes: &[u8]) -> Outcome<ReplicaError<R>> {
        self.session.receive(self.replica, bytes)
    }
    fn poll(&mut self) -> Outcome<ReplicaError<R>> {
        self.session.poll(self.replica)
    }
    fn close(&mut self) -> Outcome<ReplicaError<R>> {
        self.session.close()
    }
}

/// A partial replica's side (in memory by default, or any [`PartialStore`]).
#[derive(Debug)]
pub struct PartialPeer<'a, S: PartialStore = MemoryPartial> {
    replica: &'a mut PartialReplica<S>,
    session: PartialSession,
}

impl<'a, S: PartialStore> PartialPeer<'a, S> {
    /// Pairs a partial replica with its session.
    pub fn new(replica: &'a mut PartialReplica<S>, session: PartialSession) -> Self {
        Self { replica, session }
    }
    /// The replica (for local ops between pumps in live mode).
    pub fn replica(&mut self) -> &mut PartialReplica<S> {
        self.replica
    }
    /// The session.
    pub fn session(&self) -> &PartialSession {
        &self.session
    }
    /// Gives the session back.
    pub fn into_session(self) -> PartialSession {
        self.session
    }
}

impl<S: PartialStore> Endpoint for PartialPeer<'_, S> {
    type Error = S::Error;
    fn start(&mut self) -> Outcome<S::Error> {
        self.session.start(self.replica)
    }
    fn receive(&mut self, bytes: &[u8]) -> Outcome<S::Error> {
        self.session.receive(self.replica, bytes)
    }
    fn poll(&mut self) -> Outcome<S::Error> {
        self.session.poll(self.replica)
    }
    fn close(&mut self) -> Outcome<S::Error> {
        self.session.close()
    }
}

/// What a pump did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PumpStats {
    /// Messages delivered.
    pub messages: u64,
    /// Bytes delivered from A to B.
    pub bytes_a_to_b: u64,
    /// Bytes delivered from B to A.
    pub bytes_b_to_a: u64,
    /// Round trips: the longest causal chain of messages, halved, rounded up.
    pub round_trips: u64,
    /// True if the link was cut (see [`pump`]).
    pub cut: bool,
    /// A's events, in order.
    pub events_a: Vec<Event>,
    /// B's events, in order.
    pub events_b: Vec<Event>,
}

impl PumpStats {
    /// Bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes_a_to_b + self.bytes_b_to_a
    }
}

/// A session failed during a pump.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PumpError<EA: std::error::Error + 'static, EB: std::error::Error + 'static> {
    /// Side A failed.
    #[error("side A: {0}")]
    A(SyncError<EA>),
    /// Side B failed.
    #[error("side B: {0}")]
    B(SyncError<EB>),
}

struct Side {
    queue: VecDeque<(Vec<u8>, u64)>,
    finished: bool,
}

fn take<E: std::error::Error + 'static>(
    out: Outcome<E>,
    depth: u64,
    side: &mut Side,
    events: &mut Vec<Event>,
) -> Option<SyncError<E>> {
    side.queue.extend(out.send.into_iter().map(|m| (m, depth)));
    events.extend(out.events);
    side.finished |= out.finished;
    out.error
}

/// Starts both sessions and delivers messages (alternating directions, polling the receiver after
/// each delivery) until neither side has anything to send. With `cut_after = Some(n)` the link is
/// dropped after `n` deliveries (the rest is lost), as a disconnect would.
pub fn pump<A: Endpoint, B: Endpoint>(
    a: &mut A,
    b: &mut B,
    cut_after: Option<u64>,
) -> Result<PumpStats, PumpError<A::Error, B::Error>> {
    let (first_a, first_b) = (a.start(), b.start());
    exchange(a, b, first_a, first_b, cut_after)
}

/// Live mode: lets both sessions send what is ready (e.g. after local ops) and delivers until
/// quiet. Round trips are counted from this call.
pub fn settle<A: Endpoint, B: Endpoint>(
    a: &mut A,
    b: &mut B,
) -> Result<PumpStats, PumpError<A::Error, B::Error>> {
    let (first_a, first_b) = (a.poll(), b.poll());
    exchange(a, b, first_a, first_b, None)
}

/// Queues each side's first outcome, then delivers until quiet (or the cut).
fn exchange<A: Endpoint, B: Endpoint>(
    a: &mut A,
    b: &mut B,
    first_a: Outcome<A::Error>,
    first_b: Outcome<B::Error>,
    cut_after: Option<u64>,
) -> Result<PumpStats, PumpError<A::Error, B::Error>> {
    let mut stats = PumpStats::default();
    let mut sa = Side {
        queue: VecDeque::new(),
        finished: false,
    };
    let mut sb = Side {
        queue: VecDeque::new(),
        finished: false,
    };
    if let Some(e) = take(first_a, 1, &mut sa, &mut stats.events_a) {
        return Err(PumpError::A(e));
    }
    if let Some(e) = take(first_b, 1, &mut sb, &mut stats.events_b) {
        return Err(PumpError::B(e));
    }
    run(a, b, &mut sa, &mut sb, &mut stats, cut_after)?;
    Ok(stats)
}

fn run<A: Endpoint, B: Endpoint>(
    a: &mut A,
    b: &mut B,
    sa: &mut Side,
    sb: &mut Side,
    stats: &mut PumpStats,
    cut_after: Option<u64>,
) -> Result<(), PumpError<A::Error, B::Error>> {
    let mut max_depth = 0u64;
    let mut turn_a = true;
    while !sa.queue.is_empty() || !sb.queue.is_empty() {
        if cut_after.is_some_and(|n| stats.messages >= n) {
            stats.cut = true;
            break;
        }
        let from_a = if sa.queue.is_empty() {
            false
        } else if sb.queue.is_empty() {
            true
        } else {
            turn_a
        };
        turn_a = !turn_a;
        if from_a {
            let (m, d) = sa.queue.pop_front().expect("non-empty");
            max_depth = max_depth.max(d);
            stats.messages += 1;
            stats.bytes_a_to_b += m.len() as u64;
            if sb.finished {
                continue;
            }
            if let Some(e) = take(b.receive(&m), d + 1, sb, &mut stats.events_b) {
                return Err(PumpError::B(e));
            }
            while !sb.finished {
                let out = b.poll();
                if out.send.is_empty() && out.events.is_empty() && out.error.is_none() {
                    break;
                }
                if let Some(e) = take(out, d + 1, sb, &mut stats.events_b) {
                    return Err(PumpError::B(e));
                }
            }
        } else {
            let (m, d) = sb.queue.pop_front().expect("non-empty");
            max_depth = max_depth.max(d);
            stats.messages += 1;
            stats.bytes_b_to_a += m.len() as u64;
            if sa.finished {
                continue;
            }
            if let Some(e) = take(a.receive(&m), d + 1, sa, &mut stats.events_a) {
                return Err(PumpError::A(e));
            }
            while !sa.finished {
                let out = a.poll();
                if out.send.is_empty() && out.events.is_empty() && out.error.is_none() {
                    break;
                }
                if let Some(e) = take(out, d + 1, sa, &mut stats.events_a) {
                    return Err(PumpError::A(e));
                }
            }
        }
    }
    stats.round_trips = stats.round_trips.max(max_depth.div_ceil(2));
    Ok(())
}
