//! The responder's side of partial sync: what a partial replica of subtree(X) needs to move from
//! the state at frontier `since` to the current state, filtered by a [`ReadFilter`].

use canopy_tree::{
    LogEntry, LogKey, NodeId, OpId, OpKind, Policy, Store, Tree, Undo, VersionVector,
};
use rustc_hash::FxHashSet;

use crate::filter::{Bound, ReadFilter};
use crate::wire::{gone_digest, NodeRecord, PathEntry, PayloadState};

/// A computed delta, in sending order.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    pub(crate) path: Vec<PathEntry>,
    pub(crate) gone: Vec<[u8; 16]>,
    /// Records of the scope root's children (cold sync only), sent first.
    pub(crate) first: Vec<NodeRecord>,
    pub(crate) records: Vec<NodeRecord>,
    pub(crate) frontier: VersionVector,
    pub(crate) max_lamport: u64,
    /// A full snapshot of the scope (cold sync, or `since` not covered by this replica).
    pub(crate) reset: bool,
}

pub(crate) enum DeltaError<E> {
    ScopeNotReadable,
    Store(E),
}

impl<E> From<E> for DeltaError<E> {
    fn from(e: E) -> Self {
        DeltaError::Store(e)
    }
}

/// Ancestors of `node` (parent first) if it exists, else `None`.
fn ancestors_of<S: Store, P: Policy>(
    tree: &Tree<S, P>,
    node: NodeId,
) -> Result<Option<Vec<NodeId>>, S::Error> {
    if node == NodeId::ROOT {
        return Ok(Some(Vec::new()));
    }
    if node.is_reserved() || !tree.exists(node)? {
        return Ok(None);
    }
    Ok(Some(tree.ancestors(node)?))
}

/// Checks that `scope` exists and the filter lets the requester read it and its path.
pub(crate) fn check_scope<S: Store, P: Policy, F: ReadFilter>(
    tree: &Tree<S, P>,
    filter: &Bound<'_, F>,
    scope: NodeId,
) -> Result<Vec<NodeId>, DeltaError<S::Error>> {
    let anc = ancestors_of(tree, scope)?.ok_or(DeltaError::ScopeNotReadable)?;
    if !filter.can_read_structure(scope, &anc) || !filter.can_read_path(scope, &anc) {
        return Err(DeltaError::ScopeNotReadable);
    }
    Ok(anc)
}

struct Emitter<'a, S: Store, P: Policy, F> {
    tree: &'a Tree<S, P>,
    filter: &'a Bound<'a, F>,
    scope: NodeId,
    emitted: FxHashSet<NodeId>,
}

impl<S: Store, P: Policy, F: ReadFilter> Emitter<'_, S, P, F> {
    fn record(&self, node: NodeId, ancestors: &[NodeId]) -> Result<Option<NodeRecord>, S::Error> {
        let (structure, payload) = self.filter.can_read_node(node, ancestors);
        if !structure {
            return Ok(None);
        }
        let Some(pl) = self.tree.store().placement(node)? else {
            return Ok(None);
        };
        let payload = if payload {
            match self.tree.store().payload(node)? {
                Some(p) => PayloadState::Present {
                    bytes: p.bytes,
                    set_by: p.set_by,
                },
                None => PayloadState::None,
            }
        } else {
            PayloadState::Withheld
        };
        Ok(Some(NodeRecord {
            node,
            parent: pl.parent,
            position: pl.position,
            placed_by: pl.placed_by,
            payload,
        }))
    }

    /// Emits `root` (unless it is the scope root) and its subtree in pre-order, skipping nodes
    /// already emitted and whole subtrees the filter hides. `skip_depth_one`: the scope root's
    /// children were sent already.
    fn subtree(
        &mut self,
        root: NodeId,
        root_ancestors: &[NodeId],
        skip_depth_one: bool,
        out: &mut Vec<NodeRecord>,
    ) -> Result<(), S::Error> {
        // ancestors of the node at depth d, parent first: stack[d-1], ..., stack[0], root, root_ancestors
        let mut stack: Vec<NodeId> = Vec::new();
        let mut hidden_below: Option<usize> = None;
        if root != self.scope && self.emitted.insert(root) {
            match self.record(root, root_ancestors)? {
                Some(r) => out.push(r),
                None => return Ok(()),
            }
        }
        let mut anc = Vec::new();
        for item in self.tree.subtree(root) {
            let (node, depth) = item?;
            stack.truncate(depth - 1);
            stack.push(node);
            if let Some(h) = hidden_below {
                if depth > h {
                    continue;
                }
                hidden_below = None;
            }
            if skip_depth_one && depth == 1 {
                continue;
            }
            if !self.emitted.insert(node) {
                continue;
            }
            anc.clear();
            anc.extend(stack[..depth - 1].iter().rev().copied());
            anc.push(root);
            anc.extend_from_slice(root_ancestors);
            match self.record(node, &anc)? {
                Some(r) => out.push(r),
                None => hidden_below = Some(depth),
            }
        }
        Ok(())
    }
}

/// Above this many gone notices, a warm delta is replaced by a snapshot if the scope is smaller.
const RESET_ABOVE: usize = 1024;

/// The whole scope: the scope root's children first (the first view), then the rest of the
/// subtree in pre-order (parents before children).
fn snapshot<S: Store, P: Policy, F: ReadFilter>(
    em: &mut Emitter<'_, S, P, F>,
    scope: NodeId,
    scope_anc: &[NodeId],
    delta: &mut Delta,
) -> Result<(), S::Error> {
    let tree = em.tree;
    let mut anc = vec![scope];
    anc.extend_from_slice(scope_anc);
    let mut cursor = None;
    loop {
        let page = tree.children(scope, cursor.as_ref(), 256)?;
        for c in &page {
            if em.emitted.insert(c.node) {
                if let Some(r) = em.record(c.node, &anc)? {
                    delta.first.push(r);
                }
            }
        }
        if page.len() < 256 {
            break;
        }
        cursor = page.last().cloned();
    }
    let mut records = Vec::new();
    // children hidden by the filter hide their subtrees too
    let hidden: FxHashSet<NodeId> = {
        let shown: FxHashSet<NodeId> = delta.first.iter().map(|r| r.node).collect();
        em.emitted
            .iter()
            .copied()
            .filter(|n| !shown.contains(n))
            .collect()
    };
    for item in tree.subtree(scope) {
        let (node, depth) = item?;
        if depth == 1 && !hidden.contains(&node) {
            em.subtree(node, &anc, false, &mut records)?;
        }
    }
    delta.records = records;
    Ok(())
}

/// Computes the delta for a partial replica of `scope` that last synced at `since` (empty: cold).
pub(crate) fn compute<S: Store, P: Policy, F: ReadFilter>(
    tree: &Tree<S, P>,
    filter: &Bound<'_, F>,
    scope: NodeId,
    since: &VersionVector,
) -> Result<Delta, DeltaError<S::Error>> {
    let scope_anc = check_scope(tree, filter, scope)?;
    let store = tree.store();
    let frontier = store.frontier()?;
    let mut delta = Delta {
        frontier: frontier.clone(),
        max_lamport: store.max_lamport()?.get(),
        ..Delta::default()
    };
    // the path: the scope root, then each ancestor below ROOT/TRASH
    let mut at = scope;
    while !at.is_reserved() {
        let Some(pl) = store.placement(at)? else {
            break;
        };
        delta.path.push(PathEntry {
            node: at,
            parent: pl.parent,
            position: pl.position,
        });
        at = pl.parent;
    }
    let mut em = Emitter {
        tree,
        filter,
        scope,
        emitted: FxHashSet::default(),
    };
    // a checkpoint this replica does not cover (taken from a replica that had ops this one lacks,
    // or forged) cannot be diffed against: send the whole scope
    delta.reset = since.is_empty() || since.iter().any(|(r, s)| s > frontier.get(&r));
    if delta.reset {
        snapshot(&mut em, scope, &scope_anc, &mut delta)?;
        return Ok(delta);
    }
    // ops the requester has not seen, and the earliest of them in the total order
    let mut min_key: Option<LogKey> = None;
    let mut new_entries: Vec<LogEntry> = Vec::new();
    for (r, cur) in frontier.iter() {
        for seq in since.get(&r) + 1..=cur {
            if let Some(e) = store.entry(OpId::new(r, seq))? {
                let k = e.op.key();
                if min_key.is_none_or(|m| k < m) {
                    min_key = Some(k);
                }
                new_entries.push(e);
            }
        }
    }
    let Some(min_key) = min_key else {
        // nothing new: the path cannot have changed either; the reply is the checkpoint alone
        delta.path.clear();
        return Ok(delta);
    };
    // every op at or after the earliest new one may have been undone and redone with a new effect
    let mut range = store.log_after(min_key)?;
    range.extend(new_entries.into_iter().filter(|e| e.op.key() == min_key));
    let mut structural: FxHashSet<NodeId> = FxHashSet::default();
    let mut payload: FxHashSet<NodeId> = FxHashSet::default();
    for e in &range {
        match e.op.kind() {
            OpKind::Create {
                node, payload: p, ..
            } => {
                structural.insert(*node);
                if p.is_some() {
                    payload.insert(*node);
                }
            }
            OpKind::Move { node, .. } | OpKind::Delete { node, .. } => {
                structural.insert(*node);
            }
            OpKind::SetPayload { node, .. } => {
                payload.insert(*node);
            }
            _ => {}
        }
        for u in &e.undo {
            match u {
                Undo::Placement { node, .. } => structural.insert(*node),
                Undo::Payload { node, .. } => payload.insert(*node),
            };
        }
    }
    // A revive (`spec/delete.md`) places a trashed ancestor with `placed_by` = the reviving op;
    // when that op is redone without reviving, the ancestor falls back to TRASH while no op in
    // the range names it. Such nodes are trashed ancestors (now) of a range op's node, of the
    // parent it targets, or of a prior parent in its undo records: they become candidates.
    let mut starts: Vec<NodeId> = Vec::new();
    for e in &range {
        starts.push(e.op.node());
        match e.op.kind() {
            OpKind::Create { parent, .. } | OpKind::Move { parent, .. } => starts.push(*parent),
            _ => {}
        }
        for u in &e.undo {
            if let Undo::Placement { prior: Some(p), .. } = u {
                starts.push(p.parent);
            }
        }
    }
    let mut walked: FxHashSet<NodeId> = FxHashSet::default();
    for s in starts {
        if s.is_reserved() || !walked.insert(s) {
            continue;
        }
        let anc = tree.ancestors(s)?;
        if anc.last() == Some(&NodeId::TRASH) {
            structural.insert(s);
            for a in anc {
                if !a.is_reserved() {
                    walked.insert(a);
                    structural.insert(a);
                }
            }
        }
    }
    let on_path: FxHashSet<NodeId> = delta.path.iter().map(|p| p.node).collect();
    // structural candidates: in scope now ⇒ the node with its subtree; otherwise ⇒ gone
    let mut inside: Vec<(usize, NodeId, Vec<NodeId>)> = Vec::new();
    let mut gone: Vec<NodeId> = Vec::new();
    for n in structural {
        if n.is_reserved() || on_path.contains(&n) {
            continue;
        }
        match ancestors_of(tree, n)? {
            // in the scope but hidden by the filter (e.g. moved under an excluded subtree): the
            // requester may hold it from before, so it goes like a node leaving the scope
            Some(anc)
                if anc.contains(&scope)
                    && (hidden_above(filter, scope, &anc)
                        || !filter.can_read_structure(n, &anc)) =>
            {
                gone.push(n)
            }
            Some(anc) if anc.contains(&scope) => inside.push((anc.len(), n, anc)),
            _ => gone.push(n),
        }
    }
    // Many nodes left the scope (or were touched outside it) since the checkpoint: when the scope
    // itself is smaller, a snapshot costs less (and names fewer nodes outside it).
    if gone.len() > RESET_ABOVE {
        let mut count = 0usize;
        for item in tree.subtree(scope) {
            item?;
            count += 1;
            if count >= gone.len() {
                break;
            }
        }
        if count < gone.len() {
            delta.reset = true;
            em.emitted.clear();
            snapshot(&mut em, scope, &scope_anc, &mut delta)?;
            return Ok(delta);
        }
    }
    gone.sort();
    delta.gone = gone.into_iter().map(gone_digest).collect();
    // shallowest first, so that every record's parent is held or sent before it
    inside.sort_by_key(|a| (a.0, a.1));
    let mut records = Vec::new();
    for (_, n, anc) in &inside {
        em.subtree(*n, anc, false, &mut records)?;
    }
    let mut payload: Vec<NodeId> = payload.into_iter().collect();
    payload.sort();
    for n in payload {
        if n.is_reserved() || em.emitted.contains(&n) || on_path.contains(&n) {
            continue;
        }
        if let Some(anc) = ancestors_of(tree, n)? {
            if anc.contains(&scope) && !hidden_above(filter, scope, &anc) && em.emitted.insert(n) {
                if let Some(r) = em.record(n, &anc)? {
                    records.push(r);
                }
            }
        }
    }
    delta.records = records;
    Ok(delta)
}

/// True if the filter hides one of the nodes between a node (whose ancestors are `anc`, parent
/// first) and the scope root: a node under a hidden subtree stays hidden.
fn hidden_above<F: ReadFilter>(filter: &Bound<'_, F>, scope: NodeId, anc: &[NodeId]) -> bool {
    anc.iter()
        .take_while(|a| **a != scope)
        .enumerate()
        .any(|(i, a)| !filter.can_read_structure(*a, &anc[i + 1..]))
}
