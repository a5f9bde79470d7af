//! What an applied batch did: per-op outcomes, typed rejections and change events.

use crate::id::{Lamport, NodeId, OpId};
use crate::op::Payload;
use crate::position::{Position, PositionError};

/// Why an op was rejected: it is invalid and is not logged (the rest of its batch still applies).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Sequence numbers start at 1.
    #[error("sequence number 0")]
    SeqZero,
    /// Lamport timestamps start at 1.
    #[error("lamport timestamp 0")]
    LamportZero,
    /// ROOT and TRASH cannot be created, moved, deleted or given a payload.
    #[error("op targets the reserved node {node:?}")]
    ReservedNode { node: NodeId },
    /// Creates and moves cannot target TRASH (deletes do that).
    #[error("create or move with parent TRASH")]
    ParentTrash,
    /// The position is not canonical.
    #[error("invalid position: {0}")]
    InvalidPosition(PositionError),
    /// A payload over the codec's limit.
    #[error("payload of {len} bytes exceeds the limit")]
    PayloadTooLarge { len: usize },
    /// A `seen` vector over the codec's limit.
    #[error("seen vector of {len} entries exceeds the limit")]
    SeenTooLarge { len: usize },
    /// The op's Lamport timestamp is not above its replica's previous op's.
    #[error("lamport {got} is not above the replica's previous {previous}")]
    LamportNotIncreasing { previous: Lamport, got: Lamport },
    /// A delete claims to have seen its own replica's ops after its own sequence number.
    #[error("delete claims to have seen its own future op {seen}")]
    SeenOwnFuture { seen: u64 },
    /// A delete's Lamport timestamp is not above an op it claims to have seen.
    #[error("delete lamport is not above seen op {seen}")]
    LamportNotAboveSeen { seen: OpId },
    /// Another op with the same id is already logged or pending (the first one is kept).
    #[error("equivocation: a different op with this id is already known")]
    Equivocation,
}

/// What became of one op in a batch.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Outcome<R> {
    /// Logged, and it changed the tree.
    Applied,
    /// Logged as a no-op: the move would have made a cycle.
    SkippedCycle,
    /// Logged as a no-op: a delete that had not seen everything in the subtree.
    SkippedUnseen,
    /// Logged as a no-op: the policy denied it.
    Denied { reason: R },
    /// Parked until the op `awaits` is logged.
    Pending { awaits: OpId },
    /// Already logged or pending: ignored.
    Duplicate,
    /// Invalid: not logged.
    Rejected(Rejection),
}

/// One op's outcome.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpReport<R> {
    /// The op.
    pub id: OpId,
    /// What became of it.
    pub outcome: Outcome<R>,
}

/// A net change to one node over a batch (undo/redo churn never shows).
///
/// Applying a batch's events, in order, to a mirror of the tree (node → parent and position,
/// node → payload) reproduces the tree.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ChangeEvent {
    /// The node now exists.
    Created {
        node: NodeId,
        parent: NodeId,
        position: Position,
    },
    /// The node moved (neither into nor out of TRASH).
    Moved {
        node: NodeId,
        parent: NodeId,
        position: Position,
    },
    /// The node moved into TRASH.
    Deleted { node: NodeId, position: Position },
    /// The node moved out of TRASH.
    Restored {
        node: NodeId,
        parent: NodeId,
        position: Position,
    },
    /// The node no longer exists (an op that placed it became a no-op, e.g. denied on redo).
    Removed { node: NodeId },
    /// The node's payload changed (`None`: it has none).
    PayloadChanged {
        node: NodeId,
        payload: Option<Payload>,
    },
}

impl ChangeEvent {
    /// The node the event is about.
    pub fn node(&self) -> NodeId {
        match self {
            ChangeEvent::Created { node, .. }
            | ChangeEvent::Moved { node, .. }
            | ChangeEvent::Deleted { node, .. }
            | ChangeEvent::Restored { node, .. }
            | ChangeEvent::Removed { node }
            | ChangeEvent::PayloadChanged { node, .. } => *node,
        }
    }
}

/// The result of [`crate::Tree::apply`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct ApplyReport<R> {
    /// One report per input op, in input order.
    pub ops: Vec<OpReport<R>>,
    /// Ops parked by earlier batches that this batch released (and what became of them).
    pub released: Vec<OpReport<R>>,
    /// The net changes, in the order the nodes were first touched.
    pub events: Vec<ChangeEvent>,
}

impl<R> ApplyReport<R> {
    /// Reports of the input ops and the released ones.
    pub fn all(&self) -> impl Iterator<Item = &OpReport<R>> {
        self.ops.iter().chain(&self.released)
    }
}

/// A store error during [`crate::Tree::apply`]; the batch was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[source] E),
}
