//! The authorization hook inside apply: a [`Policy`] decides every op against the replay-time tree.

use std::convert::Infallible;
use std::fmt;

use crate::id::NodeId;
use crate::op::{Attestation, Op};
use crate::store::Store;
use crate::tree::Rewind;

/// A policy's verdict on one op at its place in the total order.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Decision<R> {
    /// The op takes effect.
    Allow,
    /// The op is a no-op that stays in the log ([`crate::Effect::Denied`]); re-decided on redo.
    Deny {
        /// Why.
        reason: R,
    },
}

/// Decides whether an op takes effect, against the tree state immediately before it in the total
/// order (never "current" state). Called for every op on do and on every redo, so it must be a
/// pure function of the op and the view.
pub trait Policy {
    /// Why an op was denied.
    type Reason: Clone + fmt::Debug + PartialEq;

    /// Decides `op` given the replay-time `view`.
    fn decide<S: Store>(
        &self,
        op: &Op,
        view: &ReplayView<'_, S>,
    ) -> Result<Decision<Self::Reason>, S::Error>;

    /// The attestation to attach to an op this replica makes locally ([`crate::Tree::create`]
    /// and friends), before it is applied. Provided: `None` (local ops are unsigned).
    fn attest(&self, op: &Op) -> Option<Attestation> {
        let _ = op;
        None
    }

    /// True if every decision reads the tree only through ancestor walks from the op's node,
    /// its old parent and its new parent (the view's `parent`, `ancestors`, `is_within` on
    /// those nodes and the nodes the walks reach), plus state outside the tree that the op's
    /// place in the log does not change. Then adding a new leaf elsewhere in the tree cannot
    /// change a decision, and the engine may splice a late create of a fresh node into the log
    /// without undoing and redoing the ops after it (`spec/ops.md`, "Late ops that commute with
    /// the suffix"). Provided: `false`, which always undoes and redoes (a late payload write
    /// may still be spliced: the view shows no payloads).
    fn reads_paths_only(&self) -> bool {
        false
    }
}

/// The policy that allows everything (no access control).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowAll;

impl Policy for AllowAll {
    type Reason = Infallible;

    fn decide<S: Store>(
        &self,
        _op: &Op,
        _view: &ReplayView<'_, S>,
    ) -> Result<Decision<Infallible>, S::Error> {
        Ok(Decision::Allow)
    }

    fn reads_paths_only(&self) -> bool {
        true
    }
}

/// The tree as it is immediately before an op in the total order, as shown to a [`Policy`].
pub struct ReplayView<'a, S> {
    pub(crate) store: &'a S,
    /// Set when the op is decided at a time before ops already applied (a late op spliced into
    /// the log): parents are read as they were then.
    pub(crate) rewind: Option<Rewind<'a>>,
    pub(crate) node: NodeId,
    pub(crate) old_parent: Option<NodeId>,
    pub(crate) new_parent: Option<NodeId>,
}

impl<S> fmt::Debug for ReplayView<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayView")
            .field("node", &self.node)
            .field("old_parent", &self.old_parent)
            .field("new_parent", &self.new_parent)
            .finish()
    }
}

impl<'a, S: Store> ReplayView<'a, S> {
    /// The node the op acts on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The node's parent before the op (`None`: the node does not exist yet).
    pub fn old_parent(&self) -> Option<NodeId> {
        self.old_parent
    }

    /// The parent the op puts the node under: the target of a create or move, TRASH for a
    /// delete, `None` for a payload write (the node stays where it is).
    pub fn new_parent(&self) -> Option<NodeId> {
        self.new_parent
    }

    /// The parent of any node in the replay-time tree.
    pub fn parent(&self, node: NodeId) -> Result<Option<NodeId>, S::Error> {
        if node.is_reserved() {
            return Ok(None);
        }
        match self.rewind {
            Some(r) => r.parent(self.store, node),
            None => self.store.parent(node),
        }
    }

    /// Ancestors of `node` from its parent upwards, ending at ROOT or TRASH (or at a node whose
    /// parent is not known yet).
    pub fn ancestors(&self, node: NodeId) -> Ancestors<'a, S> {
        Ancestors {
            store: self.store,
            rewind: self.rewind,
            next: Some(node),
        }
    }

    /// True if `node` is `root` or a descendant of it in the replay-time tree.
    pub fn is_within(&self, node: NodeId, root: NodeId) -> Result<bool, S::Error> {
        if node == root {
            return Ok(true);
        }
        for a in self.ancestors(node) {
            if a? == root {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Iterator over a node's ancestors (see [`ReplayView::ancestors`]).
pub struct Ancestors<'a, S> {
    pub(crate) store: &'a S,
    pub(crate) rewind: Option<Rewind<'a>>,
    pub(crate) next: Option<NodeId>,
}

impl<S> fmt::Debug for Ancestors<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ancestors")
            .field("next", &self.next)
            .finish()
    }
}

impl<S: Store> Iterator for Ancestors<'_, S> {
    type Item = Result<NodeId, S::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.next.take()?;
        if n.is_reserved() {
            return None;
        }
        let parent = match self.rewind {
            Some(r) => r.parent(self.store, n),
            None => self.store.parent(n),
        };
        match parent {
            Ok(Some(p)) => {
                self.next = Some(p);
                Some(Ok(p))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
