//! Read filtering: the responder decides, per node, what the requester may see.
//!
//! A [`ReadFilter`] is built by the responder from what the requester presented (issue 5: its
//! capability chain, checked by `caps::authorize` with read abilities). The session asks it before
//! sending anything: the whole op log ([`ReadFilter::can_read_log`]), the structure of a node (its
//! id, parent and position) and its payload. Nothing the filter does not cover is sent.

use canopy_tree::NodeId;

/// What a requester may read. `ancestors` lists a node's ancestors in the responder's current
/// tree, parent first, ending with ROOT or TRASH.
pub trait ReadFilter {
    /// May the requester receive the whole op log (full sync)? Only a grant on ROOT with both
    /// read abilities implies it: ops name nodes anywhere in the tree.
    fn can_read_log(&self) -> bool;
    /// May the requester see `node`'s id, parent and position?
    fn can_read_structure(&self, node: NodeId, ancestors: &[NodeId]) -> bool;
    /// May the requester read `node`'s payload? (Needs structure too; checked separately.)
    fn can_read_payload(&self, node: NodeId, ancestors: &[NodeId]) -> bool;
    /// May a requester whose scope root is `scope` see the path from `scope` up to ROOT (the
    /// ancestors' ids and placements, never their payloads or siblings)? A partial replica needs
    /// the path to keep cycle checks exact; a filter that refuses it refuses partial sync.
    fn can_read_path(&self, scope: NodeId, ancestors: &[NodeId]) -> bool {
        self.can_read_structure(scope, ancestors)
    }
}

/// No read restriction: the requester may read everything (trusted peers, tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowAll;

impl ReadFilter for AllowAll {
    fn can_read_log(&self) -> bool {
        true
    }
    fn can_read_structure(&self, _: NodeId, _: &[NodeId]) -> bool {
        true
    }
    fn can_read_payload(&self, _: NodeId, _: &[NodeId]) -> bool {
        true
    }
}

/// Read access to the subtree under `root` (the root itself included), judged on the responder's
/// current tree: structure always, payloads only with `payloads`. The shape a capability with
/// `/tree/read` (and `/tree/read/payload`) on a subtree grants.
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
    fn can_read_log(&self) -> bool {
        false
    }
    fn can_read_structure(&self, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.covers(node, ancestors)
    }
    fn can_read_payload(&self, node: NodeId, ancestors: &[NodeId]) -> bool {
        self.payloads && self.covers(node, ancestors)
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
        assert!(s.can_read_structure(x, &[NodeId::ROOT]));
        assert!(s.can_read_structure(y, &[x, NodeId::ROOT]));
        assert!(!s.can_read_structure(y, &[NodeId::ROOT]));
        assert!(!s.can_read_payload(y, &[x, NodeId::ROOT]));
        assert!(!s.can_read_log());
        assert!(SubtreeScope::new(x).can_read_payload(y, &[x]));
    }
}
