//! Read filtering: the responder decides, per node, what the requester may see.
//!
//! A [`ReadFilter`] is built by the responder from what the requester presented and
//! authenticated (for an authorized document: its DID and capability chain, [`CapsRead`]). The
//! session asks it before sending anything: the whole op log and document entries
//! ([`ReadFilter::can_read_log`]), the structure of a node (its id, parent and position) and its
//! payload. Nothing the filter does not cover is sent. Every question comes with a
//! [`ReadContext`]: the responder replica's state *at that moment* (its authorization state,
//! with every revocation received so far), so a decision never uses a snapshot taken at connect.

use std::fmt;
use std::sync::Arc;

use canopy_caps::{Ability, AuthzState, ChainRef, Did};
use canopy_tree::NodeId;

/// The responder's replica as a read filter sees it when it decides.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadContext<'a> {
    authz: Option<&'a AuthzState>,
}

impl<'a> ReadContext<'a> {
    /// A replica without authorization state (a plain tree: trusted or unsigned use).
    pub const fn plain() -> Self {
        Self { authz: None }
    }
    /// An authorized replica's current state.
    pub const fn authorized(state: &'a AuthzState) -> Self {
        Self { authz: Some(state) }
    }
    /// The authorization state, if the replica has one.
    pub fn authz(&self) -> Option<&'a AuthzState> {
        self.authz
    }
}

/// What a requester may read. `ancestors` lists a node's ancestors in the responder's current
/// tree, parent first, ending with ROOT or TRASH; `cx` is the responder's current state.
pub trait ReadFilter {
    /// May the requester receive the whole op log and the document entries (full sync)? Only a
    /// grant on ROOT with both read abilities implies it: ops name nodes anywhere in the tree.
    fn can_read_log(&self, cx: &ReadContext<'_>) -> bool;
    /// May the requester see `node`'s id, parent and position?
    fn can_read_structure(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool;
    /// May the requester read `node`'s payload? (Needs structure too; checked separately.)
    fn can_read_payload(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool;
    /// May a requester whose scope root is `scope` see the path from `scope` up to ROOT (the
    /// ancestors' ids and placements, never their payloads or siblings)? A partial replica needs
    /// the path to keep cycle checks exact; a filter that refuses it refuses partial sync.
    fn can_read_path(&self, cx: &ReadContext<'_>, scope: NodeId, ancestors: &[NodeId]) -> bool {
        self.can_read_structure(cx, scope, ancestors)
    }
    /// Both questions about one node at once — `(structure, payload)` — as a node record needs
    /// them. A filter may answer both with one decision ([`CapsRead`]: one `/tree/read` check
    /// covers both); the answer must equal asking them separately.
    fn can_read_node(
        &self,
        cx: &ReadContext<'_>,
        node: NodeId,
        ancestors: &[NodeId],
    ) -> (bool, bool) {
        (
            self.can_read_structure(cx, node, ancestors),
            self.can_read_payload(cx, node, ancestors),
        )
    }
}

impl<F: ReadFilter + ?Sized> ReadFilter for Box<F> {
    fn can_read_log(&self, cx: &ReadContext<'_>) -> bool {
        (**self).can_read_log(cx)
    }
    fn can_read_structure(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        (**self).can_read_structure(cx, node, ancestors)
    }
    fn can_read_payload(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        (**self).can_read_payload(cx, node, ancestors)
    }
    fn can_read_path(&self, cx: &ReadContext<'_>, scope: NodeId, ancestors: &[NodeId]) -> bool {
        (**self).can_read_path(cx, scope, ancestors)
    }
    fn can_read_node(
        &self,
        cx: &ReadContext<'_>,
        node: NodeId,
        ancestors: &[NodeId],
    ) -> (bool, bool) {
        (**self).can_read_node(cx, node, ancestors)
    }
}

/// A filter bound to the responder's state for one computation (the delta code asks many
/// questions against the same state).
pub(crate) struct Bound<'a, F: ?Sized> {
    pub(crate) filter: &'a F,
    pub(crate) cx: ReadContext<'a>,
}

impl<F: ReadFilter + ?Sized> Bound<'_, F> {
    pub(crate) fn can_read_structure(&self, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.filter.can_read_structure(&self.cx, node, ancestors)
    }
    pub(crate) fn can_read_node(&self, node: NodeId, ancestors: &[NodeId]) -> (bool, bool) {
        self.filter.can_read_node(&self.cx, node, ancestors)
    }
    pub(crate) fn can_read_path(&self, scope: NodeId, ancestors: &[NodeId]) -> bool {
        self.filter.can_read_path(&self.cx, scope, ancestors)
    }
}

/// No read restriction: the requester may read everything (trusted peers, tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowAll;

impl ReadFilter for AllowAll {
    fn can_read_log(&self, _: &ReadContext<'_>) -> bool {
        true
    }
    fn can_read_structure(&self, _: &ReadContext<'_>, _: NodeId, _: &[NodeId]) -> bool {
        true
    }
    fn can_read_payload(&self, _: &ReadContext<'_>, _: NodeId, _: &[NodeId]) -> bool {
        true
    }
}

/// Read access to the subtree under `root` (the root itself included), judged on the responder's
/// current tree: structure always, payloads only with `payloads`. The shape a capability with
/// `/tree/read` (and `/tree/read/payload`) on a subtree grants, without checking one: for
/// trusted set-ups and tests; an authorized responder uses [`CapsRead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubtreeScope {
    root: NodeId,
    payloads: bool,
}

impl SubtreeScope {
    /// Structure and payloads of the subtree under `root`.
    pub fn new(root: NodeId) -> Self {
        Self {
            root,
            payloads: true,
        }
    }
    /// Structure only: payloads are withheld.
    pub fn structure_only(root: NodeId) -> Self {
        Self {
            root,
            payloads: false,
        }
    }
    /// The granted subtree's root.
    pub fn root(&self) -> NodeId {
        self.root
    }
    fn covers(&self, node: NodeId, ancestors: &[NodeId]) -> bool {
        node == self.root || ancestors.contains(&self.root)
    }
}

impl ReadFilter for SubtreeScope {
    fn can_read_log(&self, _: &ReadContext<'_>) -> bool {
        false
    }
    fn can_read_structure(&self, _: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.covers(node, ancestors)
    }
    fn can_read_payload(&self, _: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.payloads && self.covers(node, ancestors)
    }
}

/// A clock for [`CapsRead`]: unix seconds now (the crate does no IO; the transport reads the
/// clock).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Read filtering by capability (`spec/sync.md` §Read filtering): an authenticated reader (its
/// DID, proven by the transport) holding the chain `chain` (whose delegations are registered in
/// the responder's replica) may read what
/// [`AuthzState::authorize`] allows it, with ancestors from the responder's current tree, at the
/// clock's time, and `op = None` (any revocation of a delegation of the chain denies):
///
/// * structure (ids, parents, positions) with `/tree/read/structure` on the node,
/// * payloads with `/tree/read/payload` on the node,
/// * the path above a partial scope with `/tree/read/structure` on the scope root,
/// * the whole log and the document entries (full sync) only with both on ROOT.
///
/// Every question is decided against the replica's current [`AuthzState`] (a revocation
/// ingested mid-session applies to the next message). On a replica without authorization
/// state (a plain tree) it allows nothing.
pub struct CapsRead {
    reader: Did,
    chain: ChainRef,
    clock: Clock,
}

impl fmt::Debug for CapsRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapsRead")
            .field("reader", &self.reader)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl CapsRead {
    /// The filter of `reader` presenting `chain`, deciding at the times `clock` gives.
    pub fn new(reader: Did, chain: ChainRef, clock: Clock) -> Self {
        Self {
            reader,
            chain,
            clock,
        }
    }
    /// The reader.
    pub fn reader(&self) -> &Did {
        &self.reader
    }
    /// The chain it presented.
    pub fn chain(&self) -> &ChainRef {
        &self.chain
    }
    fn allows(
        &self,
        cx: &ReadContext<'_>,
        ability: Ability,
        node: NodeId,
        ancestors: &[NodeId],
    ) -> bool {
        let Some(state) = cx.authz() else {
            return false;
        };
        state
            .authorize(
                &self.reader,
                &self.chain,
                ability,
                node,
                ancestors,
                (self.clock)(),
                None,
            )
            .is_allowed()
    }
}

impl ReadFilter for CapsRead {
    fn can_read_log(&self, cx: &ReadContext<'_>) -> bool {
        self.allows(cx, Ability::ReadStructure, NodeId::ROOT, &[])
            && self.allows(cx, Ability::ReadPayload, NodeId::ROOT, &[])
    }
    fn can_read_structure(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.allows(cx, Ability::ReadStructure, node, ancestors)
    }
    fn can_read_payload(&self, cx: &ReadContext<'_>, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.allows(cx, Ability::ReadPayload, node, ancestors)
    }
    /// One `/tree/read` decision when it allows: a chain that proves `/tree/read` proves both
    /// sub-commands (command proof is by prefix) and the policies see the same arguments (the
    /// node and its ancestors), so the answer is the same as asking each ability — in one
    /// authorization instead of two for the common grant. Otherwise each ability on its own.
    fn can_read_node(
        &self,
        cx: &ReadContext<'_>,
        node: NodeId,
        ancestors: &[NodeId],
    ) -> (bool, bool) {
        if self.allows(cx, Ability::Read, node, ancestors) {
            return (true, true);
        }
        (
            self.can_read_structure(cx, node, ancestors),
            self.can_read_payload(cx, node, ancestors),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_scope_covers_root_and_descendants_only() {
        let x = NodeId::from_bytes([1; 16]);
        let y = NodeId::from_bytes([2; 16]);
        let s = SubtreeScope::structure_only(x);
        let cx = ReadContext::plain();
        assert!(s.can_read_structure(&cx, x, &[NodeId::ROOT]));
        assert!(s.can_read_structure(&cx, y, &[x, NodeId::ROOT]));
        assert!(!s.can_read_structure(&cx, y, &[NodeId::ROOT]));
        assert!(!s.can_read_payload(&cx, y, &[x, NodeId::ROOT]));
        assert!(!s.can_read_log(&cx));
        assert!(SubtreeScope::new(x).can_read_payload(&cx, y, &[x]));
    }
}
