//! Local ops: what this replica's user does. Each builds an op (next seq, Lamport above
//! everything logged), applies it, and returns it for sending to peers.

use crate::codec::MAX_PAYLOAD_LEN;
use crate::id::{Lamport, NodeId, OpId};
use crate::op::{Op, OpKind, Payload};
use crate::policy::Policy;
use crate::position::{Position, PositionError};
use crate::report::{ApplyError, ChangeEvent, Outcome, Rejection};
use crate::store::Store;

use super::Tree;

/// Where among a parent's children a local op puts a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Before every child.
    First,
    /// After every child.
    Last,
    /// Right after this sibling.
    After(NodeId),
    /// Right before this sibling.
    Before(NodeId),
}

/// A local op that was made and applied.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct LocalOp<R> {
    /// The op to send to peers.
    pub op: Op,
    /// How it took effect here (`Applied` unless the policy denied it).
    pub outcome: Outcome<R>,
    /// The changes it made.
    pub events: Vec<ChangeEvent>,
}

impl<R> LocalOp<R> {
    /// The node the op acts on (the new node's id for a create).
    pub fn node(&self) -> NodeId {
        self.op.node()
    }
}

/// Why a local op could not be made. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[source] E),
    /// The node does not exist.
    #[error("unknown node {node:?}")]
    UnknownNode { node: NodeId },
    /// ROOT and TRASH cannot be created, moved, deleted or given a payload.
    #[error("{node:?} is reserved")]
    Reserved { node: NodeId },
    /// The node (or target parent) is in TRASH; restore it first.
    #[error("{node:?} is in the trash")]
    InTrash { node: NodeId },
    /// Restore needs a node in TRASH.
    #[error("{node:?} is not in the trash")]
    NotInTrash { node: NodeId },
    /// A create with an id that already exists.
    #[error("{node:?} already exists")]
    NodeExists { node: NodeId },
    /// The sibling named by `Place::After`/`Place::Before` is not a child of the parent.
    #[error("{sibling:?} is not a child of {parent:?}")]
    SiblingNotUnder { sibling: NodeId, parent: NodeId },
    /// `Place::After(n)`/`Place::Before(n)` for the node being placed.
    #[error("a node cannot be placed next to itself")]
    SiblingIsNode,
    /// The move would put the node inside its own subtree.
    #[error("moving {node:?} under {parent:?} would make a cycle")]
    Cycle { node: NodeId, parent: NodeId },
    /// No position could be generated there.
    #[error("position: {0}")]
    Position(#[from] PositionError),
    /// A payload over the codec's limit.
    #[error("payload of {len} bytes exceeds the limit")]
    PayloadTooLarge { len: usize },
    /// This replica's sequence numbers are exhausted.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
    /// The op was rejected by validation (not logged).
    #[error("rejected: {0}")]
    Rejected(Rejection),
}

impl<E: std::error::Error + 'static> From<ApplyError<E>> for LocalError<E> {
    fn from(e: ApplyError<E>) -> Self {
        match e {
            ApplyError::Store(e) => LocalError::Store(e),
        }
    }
}

type LocalResult<S, P> = Result<LocalOp<<P as Policy>::Reason>, LocalError<<S as Store>::Error>>;

impl<S: Store, P: Policy> Tree<S, P> {
    /// Creates a node under `parent` at `place`, with an optional payload. The node id is
    /// derived from the op id: the replica's first 8 bytes and the big-endian seq.
    pub fn create(
        &mut self,
        parent: NodeId,
        place: Place,
        payload: Option<Payload>,
    ) -> LocalResult<S, P> {
        let seq = self
            .store
            .max_seq(self.replica)
            .map_err(LocalError::Store)?;
        let seq = seq.checked_add(1).ok_or(LocalError::SeqExhausted)?;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.replica.as_bytes()[..8]);
        bytes[8..].copy_from_slice(&seq.to_be_bytes());
        self.create_with_id(NodeId::from_bytes(bytes), parent, place, payload)
    }

    /// Creates the node `node` (which must not exist) under `parent` at `place`.
    pub fn create_with_id(
        &mut self,
        node: NodeId,
        parent: NodeId,
        place: Place,
        payload: Option<Payload>,
    ) -> LocalResult<S, P> {
        not_reserved(node)?;
        if self
            .store
            .parent(node)
            .map_err(LocalError::Store)?
            .is_some()
        {
            return Err(LocalError::NodeExists { node });
        }
        self.live_parent(parent)?;
        if let Some(p) = &payload {
            check_len(p)?;
        }
        let position = self.position(parent, place, node)?;
        self.commit(OpKind::Create {
            node,
            parent,
            position,
            payload,
        })
    }

    /// Moves the live node `node` under the live `parent` at `place`.
    pub fn move_node(&mut self, node: NodeId, parent: NodeId, place: Place) -> LocalResult<S, P> {
        self.live_node(node)?;
        self.place_checked(node, parent, place)
    }

    /// Moves `node` and its subtree to TRASH. The op carries this replica's frontier as `seen`
    /// (`spec/delete.md`).
    pub fn delete(&mut self, node: NodeId) -> LocalResult<S, P> {
        self.live_node(node)?;
        let seen = self.store.frontier().map_err(LocalError::Store)?;
        self.commit(OpKind::Delete { node, seen })
    }

    /// Moves a node that is in TRASH (directly or inside a deleted subtree) back under the live
    /// `parent` at `place`.
    pub fn restore(&mut self, node: NodeId, parent: NodeId, place: Place) -> LocalResult<S, P> {
        not_reserved(node)?;
        if !self.exists(node).map_err(LocalError::Store)? {
            return Err(LocalError::UnknownNode { node });
        }
        if !self.is_deleted(node).map_err(LocalError::Store)? {
            return Err(LocalError::NotInTrash { node });
        }
        self.place_checked(node, parent, place)
    }

    /// Replaces the payload of the live node `node`.
    pub fn set_payload(&mut self, node: NodeId, payload: Payload) -> LocalResult<S, P> {
        self.live_node(node)?;
        check_len(&payload)?;
        self.commit(OpKind::SetPayload { node, payload })
    }

    fn place_checked(&mut self, node: NodeId, parent: NodeId, place: Place) -> LocalResult<S, P> {
        self.live_parent(parent)?;
        if self
            .store
            .is_within(parent, node)
            .map_err(LocalError::Store)?
        {
            return Err(LocalError::Cycle { node, parent });
        }
        let position = self.position(parent, place, node)?;
        self.commit(OpKind::Move {
            node,
            parent,
            position,
        })
    }

    fn next_id(&self) -> Result<(OpId, Lamport), LocalError<S::Error>> {
        let seq = self
            .store
            .max_seq(self.replica)
            .map_err(LocalError::Store)?;
        let lamport = self.store.max_lamport().map_err(LocalError::Store)?;
        let seq = seq.checked_add(1).ok_or(LocalError::SeqExhausted)?;
        let lamport = lamport
            .get()
            .checked_add(1)
            .ok_or(LocalError::SeqExhausted)?;
        Ok((OpId::new(self.replica, seq), Lamport::new(lamport)))
    }

    fn commit(&mut self, kind: OpKind) -> LocalResult<S, P> {
        let (id, lamport) = self.next_id()?;
        let mut op = Op::new(id, lamport, kind);
        if let Some(a) = self.policy.attest(&op) {
            op = op.with_attestation(a);
        }
        let mut report = self.apply([op.clone()])?;
        let outcome = match report.ops.pop() {
            Some(r) => r.outcome,
            None => Outcome::Duplicate,
        };
        if let Outcome::Rejected(r) = outcome {
            return Err(LocalError::Rejected(r));
        }
        Ok(LocalOp {
            op,
            outcome,
            events: report.events,
        })
    }

    fn live_node(&self, node: NodeId) -> Result<(), LocalError<S::Error>> {
        not_reserved(node)?;
        if !self.exists(node).map_err(LocalError::Store)? {
            return Err(LocalError::UnknownNode { node });
        }
        if self.is_deleted(node).map_err(LocalError::Store)? {
            return Err(LocalError::InTrash { node });
        }
        Ok(())
    }

    fn live_parent(&self, parent: NodeId) -> Result<(), LocalError<S::Error>> {
        match parent {
            NodeId::ROOT => Ok(()),
            NodeId::TRASH => Err(LocalError::Reserved { node: parent }),
            _ => self.live_node(parent),
        }
    }

    /// The position for `place` under `parent`, for the node `moving`.
    fn position(
        &self,
        parent: NodeId,
        place: Place,
        moving: NodeId,
    ) -> Result<Position, LocalError<S::Error>> {
        let me = self.replica;
        let st = &self.store;
        let sibling = |s: NodeId| -> Result<Position, LocalError<S::Error>> {
            if s == moving {
                return Err(LocalError::SiblingIsNode);
            }
            match st.placement(s).map_err(LocalError::Store)? {
                Some(p) if p.parent == parent => Ok(p.position),
                _ => Err(LocalError::SiblingNotUnder { sibling: s, parent }),
            }
        };
        Ok(match place {
            Place::First => match st
                .children(parent, None, 1)
                .map_err(LocalError::Store)?
                .first()
            {
                Some(c) => Position::before(&c.position, &me)?,
                None => Position::first(&me),
            },
            Place::Last => match st.child_before(parent, None).map_err(LocalError::Store)? {
                Some(c) => Position::after(&c.position, &me)?,
                None => Position::first(&me),
            },
            Place::After(s) => {
                let pos = sibling(s)?;
                match st
                    .children(parent, Some((&pos, s)), 1)
                    .map_err(LocalError::Store)?
                    .first()
                {
                    Some(next) => Position::between(&pos, &next.position, &me)?,
                    None => Position::after(&pos, &me)?,
                }
            }
            Place::Before(s) => {
                let pos = sibling(s)?;
                match st
                    .child_before(parent, Some((&pos, s)))
                    .map_err(LocalError::Store)?
                {
                    Some(prev) => Position::between(&prev.position, &pos, &me)?,
                    None => Position::before(&pos, &me)?,
                }
            }
        })
    }
}

fn not_reserved<E: std::error::Error + 'static>(node: NodeId) -> Result<(), LocalError<E>> {
    if node.is_reserved() {
        return Err(LocalError::Reserved { node });
    }
    Ok(())
}

fn check_len<E: std::error::Error + 'static>(p: &[u8]) -> Result<(), LocalError<E>> {
    if p.len() > MAX_PAYLOAD_LEN {
        return Err(LocalError::PayloadTooLarge { len: p.len() });
    }
    Ok(())
}
