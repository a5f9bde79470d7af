//! The apply loop: admission (validation, duplicates, causal readiness, pending), then
//! undo/do/redo of the ready ops in total order. Rules: `spec/ops.md`, `spec/delete.md`.

use rustc_hash::FxHashMap;

use crate::codec::{MAX_PAYLOAD_LEN, MAX_SEEN_ENTRIES};
use crate::id::{Lamport, LogKey, NodeId, OpId, ReplicaId};
use crate::op::{Op, OpKind, VersionVector};
use crate::policy::{Decision, Policy, ReplayView};
use crate::position::Position;
use crate::report::{ApplyReport, ChangeEvent, OpReport, Outcome, Rejection};
use crate::store::{Effect, LogEntry, PayloadRecord, Placement, Store, Undo};

use super::suffix::{Rewind, Suffix};

const PAGE: usize = 256;

#[derive(Clone, Copy)]
enum Origin {
    Input(usize),
    Released(usize),
}

enum Admit {
    Ready,
    Park(OpId),
    Duplicate,
    Reject(Rejection),
}

/// Applies one batch inside the caller's transaction.
/// Buffers reused across batches (a batch of one op should not allocate a dozen times).
#[derive(Default)]
pub(crate) struct Scratch {
    ready: Vec<(Op, Origin)>,
    admitted: Admitted,
    parked_inputs: FxHashMap<OpId, usize>,
    work: Vec<(Op, Origin)>,
    touched: Touched,
    suffix: Suffix,
}

impl Scratch {
    fn clear(&mut self) {
        self.ready.clear();
        self.admitted.clear();
        self.parked_inputs.clear();
        self.work.clear();
        self.touched.order.clear();
        self.touched.index.clear();
    }
}

pub(crate) fn run<S: Store, P: Policy>(
    store: &mut S,
    policy: &P,
    scratch: &mut Scratch,
    ops: impl IntoIterator<Item = Op>,
) -> Result<ApplyReport<P::Reason>, S::Error> {
    scratch.clear();
    let ops = ops.into_iter();
    let hint = ops.size_hint().0;
    // Every op's outcome is set below; `Duplicate` is only a placeholder.
    let mut outcomes: Vec<OpReport<P::Reason>> = Vec::with_capacity(hint);
    let mut released: Vec<OpReport<P::Reason>> = Vec::new();
    let placeholder = |id| OpReport {
        id,
        outcome: Outcome::Duplicate,
    };
    let Scratch {
        ready,
        admitted: batch,
        parked_inputs,
        work,
        touched,
        suffix,
    } = scratch;
    suffix.begin(|| store.log_len())?;
    ready.reserve(hint);

    for op in ops {
        outcomes.push(placeholder(op.id()));
        work.push((op, Origin::Input(outcomes.len() - 1)));
        while let Some((op, origin)) = work.pop() {
            let admitted = admit(store, batch, ready, &op)?;
            let slot = match origin {
                Origin::Input(i) => &mut outcomes[i].outcome,
                Origin::Released(i) => &mut released[i].outcome,
            };
            match admitted {
                Admit::Reject(r) => *slot = Outcome::Rejected(r),
                Admit::Duplicate => *slot = Outcome::Duplicate,
                Admit::Park(awaits) => {
                    *slot = Outcome::Pending { awaits };
                    store.pending_insert(awaits, &op)?;
                    if let Origin::Input(i) = origin {
                        parked_inputs.insert(op.id(), i);
                    }
                }
                Admit::Ready => {
                    let id = op.id();
                    batch.insert(id, op.lamport(), ready.len());
                    ready.push((op, origin));
                    for waiting in store.pending_take(id)? {
                        let o = match parked_inputs.remove(&waiting.id()) {
                            Some(i) => Origin::Input(i),
                            None => {
                                released.push(placeholder(waiting.id()));
                                Origin::Released(released.len() - 1)
                            }
                        };
                        work.push((waiting, o));
                    }
                }
            }
        }
    }

    touched.order.reserve(ready.len());
    touched.index.reserve(ready.len());
    let mut engine = Engine {
        store,
        policy,
        touched,
    };
    ready.sort_unstable_by_key(|(op, _)| op.key());
    let mut ready = ready.drain(..).peekable();
    // Late ops that commute with every logged op after them are spliced in without undo/redo,
    // in key order, until one does not (`spec/ops.md`, "Late ops that commute with the suffix").
    let last = engine.store.log_last()?;
    while let Some((op, _)) = ready.peek() {
        let key = op.key();
        if last.is_none_or(|last| last < key) || !spliceable(op) {
            break;
        }
        if !suffix.covers(key) {
            let entries = engine.store.log_after(key)?;
            suffix.extend(key, &entries);
        }
        let Some(done) = engine.splice(op, suffix.at(key))? else {
            break;
        };
        let Some((op, origin)) = ready.next() else {
            break;
        };
        let slot = match origin {
            Origin::Input(i) => &mut outcomes[i],
            Origin::Released(i) => &mut released[i],
        };
        log_done(engine.store, suffix, slot, op, done)?;
    }
    if let Some((op, _)) = ready.peek() {
        let first = op.key();
        // Spliced ops sorted before `last`, so it is still the log's last key.
        let redo = match last {
            Some(last) if last > first => engine.store.log_after(first)?,
            _ => Vec::new(),
        };
        if !redo.is_empty() {
            // Redone entries may get new undo records.
            suffix.reset();
        }
        for e in redo.iter().rev() {
            for u in e.undo.iter().rev() {
                engine.restore(u)?;
            }
        }
        let mut redo = redo.into_iter().peekable();
        for (op, origin) in ready {
            while let Some(e) = redo.next_if(|e| e.op.key() < op.key()) {
                engine.redo(e)?;
            }
            let done = engine.do_op(&op)?;
            let slot = match origin {
                Origin::Input(i) => &mut outcomes[i],
                Origin::Released(i) => &mut released[i],
            };
            log_done(engine.store, suffix, slot, op, done)?;
        }
        for e in redo {
            engine.redo(e)?;
        }
    }
    let events = engine.events()?;
    suffix.finish(|| engine.store.log_len())?;
    Ok(ApplyReport {
        ops: outcomes,
        released,
        events,
    })
}

/// Re-decides every logged op from the Lamport timestamp `from` on (undo back to it, redo all),
/// for a policy whose inputs changed (e.g. a revocation arrived). Reports the ops whose effect
/// changed, with their new outcome, and the net tree changes.
pub(crate) fn redecide<S: Store, P: Policy>(
    store: &mut S,
    policy: &P,
    scratch: &mut Scratch,
    from: Lamport,
) -> Result<ApplyReport<P::Reason>, S::Error> {
    scratch.clear();
    // Re-decided entries may get new undo records.
    scratch.suffix.reset();
    let mut engine = Engine {
        store,
        policy,
        touched: &mut scratch.touched,
    };
    let below = LogKey::new(
        Lamport::new(from.get().saturating_sub(1)),
        ReplicaId::from_bytes([0xff; 32]),
    );
    let redo = engine.store.log_after(below)?;
    for e in redo.iter().rev() {
        for u in e.undo.iter().rev() {
            engine.restore(u)?;
        }
    }
    let mut changed = Vec::new();
    for e in redo {
        let done = engine.do_op(&e.op)?;
        if done.effect != e.effect || done.undo != e.undo {
            engine
                .store
                .log_update(e.op.id(), done.effect, &done.undo)?;
        }
        if done.effect != e.effect {
            changed.push(OpReport {
                id: e.op.id(),
                outcome: outcome_of(done.effect, done.reason),
            });
        }
    }
    let events = engine.events()?;
    Ok(ApplyReport {
        ops: changed,
        released: Vec::new(),
        events,
    })
}

/// The reported outcome of a logged op.
/// Records an op that was just done (spliced or applied in order): its outcome in its report
/// slot, its log entry in the suffix index and the store.
fn log_done<S: Store, R>(
    store: &mut S,
    suffix: &mut Suffix,
    slot: &mut OpReport<R>,
    op: Op,
    done: Done<R>,
) -> Result<(), S::Error> {
    slot.outcome = outcome_of(done.effect, done.reason);
    let entry = LogEntry {
        op,
        effect: done.effect,
        undo: done.undo,
    };
    suffix.add(&entry);
    store.log_push(entry)
}

fn outcome_of<R>(effect: Effect, reason: Option<R>) -> Outcome<R> {
    match (effect, reason) {
        (Effect::SkippedCycle, _) => Outcome::SkippedCycle,
        (Effect::SkippedUnseen, _) => Outcome::SkippedUnseen,
        (Effect::Denied, Some(reason)) => Outcome::Denied { reason },
        _ => Outcome::Applied,
    }
}

/// Kinds of op that may be spliced into the log before ops already applied (creates, payload
/// writes); whether one is depends on the suffix (`Engine::splice`).
fn spliceable(op: &Op) -> bool {
    matches!(op.kind(), OpKind::Create { .. } | OpKind::SetPayload { .. })
}

/// Checks that need no tree state.
pub(crate) fn validate(op: &Op) -> Result<(), Rejection> {
    if op.id().seq() == 0 {
        return Err(Rejection::SeqZero);
    }
    if op.lamport().get() == 0 {
        return Err(Rejection::LamportZero);
    }
    let node = op.node();
    if node.is_reserved() {
        return Err(Rejection::ReservedNode { node });
    }
    match op.kind() {
        OpKind::Create {
            parent,
            position,
            payload,
            ..
        } => {
            check_target(*parent, position)?;
            if let Some(p) = payload {
                check_payload(p)?;
            }
        }
        OpKind::Move {
            parent, position, ..
        } => check_target(*parent, position)?,
        OpKind::Delete { seen, .. } => {
            if seen.len() > MAX_SEEN_ENTRIES {
                return Err(Rejection::SeenTooLarge { len: seen.len() });
            }
        }
        OpKind::SetPayload { payload, .. } => check_payload(payload)?,
    }
    Ok(())
}

fn check_target(parent: NodeId, position: &Position) -> Result<(), Rejection> {
    if parent == NodeId::TRASH {
        return Err(Rejection::ParentTrash);
    }
    position.validate().map_err(Rejection::InvalidPosition)
}

fn check_payload(p: &[u8]) -> Result<(), Rejection> {
    if p.len() > MAX_PAYLOAD_LEN {
        return Err(Rejection::PayloadTooLarge { len: p.len() });
    }
    Ok(())
}

/// Ops admitted in this batch: id → (lamport, index in `ready`). A replica's admitted ops have
/// consecutive seqs (each needs its predecessor), so they are kept per replica in a vector.
#[derive(Default)]
struct Admitted {
    replicas: FxHashMap<ReplicaId, (u64, Vec<(Lamport, usize)>)>,
}

impl Admitted {
    /// Empties the index, keeping the per-replica buffers of a modest number of replicas.
    fn clear(&mut self) {
        if self.replicas.len() > 64 {
            self.replicas.clear();
        } else {
            self.replicas.values_mut().for_each(|(_, v)| v.clear());
        }
    }

    fn get(&self, id: &OpId) -> Option<(Lamport, usize)> {
        let (base, v) = self.replicas.get(&id.replica())?;
        let i = usize::try_from(id.seq().checked_sub(*base)?).ok()?;
        v.get(i).copied()
    }

    fn insert(&mut self, id: OpId, lamport: Lamport, index: usize) {
        let (base, v) = self
            .replicas
            .entry(id.replica())
            .or_insert_with(|| (id.seq(), Vec::new()));
        if v.is_empty() {
            *base = id.seq();
        }
        debug_assert_eq!(id.seq(), *base + v.len() as u64, "admitted out of order");
        v.push((lamport, index));
    }
}

fn lamport_of<S: Store>(
    store: &S,
    batch: &Admitted,
    id: OpId,
) -> Result<Option<Lamport>, S::Error> {
    match batch.get(&id) {
        Some((l, _)) => Ok(Some(l)),
        None => store.entry_lamport(id),
    }
}

fn admit<S: Store>(
    store: &S,
    batch: &Admitted,
    ready: &[(Op, Origin)],
    op: &Op,
) -> Result<Admit, S::Error> {
    if let Err(r) = validate(op) {
        return Ok(Admit::Reject(r));
    }
    let id = op.id();
    let same = |known: &Op| {
        if known == op {
            Admit::Duplicate
        } else {
            Admit::Reject(Rejection::Equivocation)
        }
    };
    if let Some((_, i)) = batch.get(&id) {
        return Ok(same(&ready[i].0));
    }
    if store.entry_lamport(id)?.is_some() {
        if let Some(e) = store.entry(id)? {
            return Ok(same(&e.op));
        }
    }
    if let Some(p) = store.pending_get(id)? {
        return Ok(same(&p));
    }
    let replica = id.replica();
    if id.seq() > 1 {
        let pred = OpId::new(replica, id.seq() - 1);
        match lamport_of(store, batch, pred)? {
            None => return Ok(Admit::Park(pred)),
            Some(previous) if op.lamport() <= previous => {
                return Ok(Admit::Reject(Rejection::LamportNotIncreasing {
                    previous,
                    got: op.lamport(),
                }))
            }
            Some(_) => {}
        }
    }
    if let OpKind::Delete { seen, .. } = op.kind() {
        let own = seen.get(&replica);
        if own > id.seq() - 1 {
            return Ok(Admit::Reject(Rejection::SeenOwnFuture { seen: own }));
        }
        for (r, s) in seen.iter() {
            if r == replica {
                continue;
            }
            let seen_id = OpId::new(r, s);
            match lamport_of(store, batch, seen_id)? {
                None => return Ok(Admit::Park(seen_id)),
                Some(l) if op.lamport() <= l => {
                    return Ok(Admit::Reject(Rejection::LamportNotAboveSeen {
                        seen: seen_id,
                    }))
                }
                Some(_) => {}
            }
        }
    }
    Ok(Admit::Ready)
}

struct Done<R> {
    effect: Effect,
    undo: Vec<Undo>,
    reason: Option<R>,
}

impl<R> Done<R> {
    fn noop(effect: Effect) -> Self {
        Self {
            effect,
            undo: Vec::new(),
            reason: None,
        }
    }
}

/// A node's state before the batch first touched it.
#[derive(Default)]
struct Before {
    /// `None`: placement not touched; `Some(None)`: the node did not exist.
    place: Option<Option<Box<Placement>>>,
    /// `None`: payload not touched; `Some(None)`: no payload.
    payload: Option<Option<Box<OpId>>>,
}

/// Nodes the batch touched, in first-touch order, with their state before the batch.
#[derive(Default)]
struct Touched {
    order: Vec<(NodeId, Before)>,
    index: FxHashMap<NodeId, u32>,
}

impl Touched {
    fn slot(&mut self, node: NodeId) -> &mut Before {
        let order = &mut self.order;
        let i = *self.index.entry(node).or_insert_with(|| {
            order.push((node, Before::default()));
            (order.len() - 1) as u32
        });
        &mut self.order[i as usize].1
    }
    fn place(&mut self, node: NodeId, prior: &Option<Placement>) {
        let b = self.slot(node);
        if b.place.is_none() {
            b.place = Some(prior.as_ref().map(|p| Box::new(p.clone())));
        }
    }
    fn payload(&mut self, node: NodeId, prior: Option<OpId>) {
        let b = self.slot(node);
        if b.payload.is_none() {
            b.payload = Some(prior.map(Box::new));
        }
    }
}

struct Engine<'a, S, P> {
    store: &'a mut S,
    policy: &'a P,
    touched: &'a mut Touched,
}

impl<S: Store, P: Policy> Engine<'_, S, P> {
    fn set_place(
        &mut self,
        node: NodeId,
        prior: &Option<Placement>,
        new: Option<&Placement>,
    ) -> Result<(), S::Error> {
        self.touched.place(node, prior);
        self.store.set_placement(node, new)
    }

    fn restore(&mut self, u: &Undo) -> Result<(), S::Error> {
        match u {
            Undo::Placement { node, prior } => {
                let current = self.store.placement(*node)?;
                self.set_place(*node, &current, prior.as_ref())
            }
            Undo::Payload { node, prior } => {
                let current = self.store.payload_set_by(*node)?;
                self.touched.payload(*node, current);
                self.store.set_payload(*node, prior.as_ref())
            }
        }
    }

    fn redo(&mut self, e: LogEntry) -> Result<(), S::Error> {
        let done = self.do_op(&e.op)?;
        if done.effect != e.effect || done.undo != e.undo {
            self.store.log_update(e.op.id(), done.effect, &done.undo)?;
        }
        Ok(())
    }

    fn decide(
        &self,
        op: &Op,
        old_parent: Option<NodeId>,
        new_parent: Option<NodeId>,
    ) -> Result<Option<P::Reason>, S::Error> {
        self.decide_at(op, old_parent, new_parent, None)
    }

    /// [`Engine::decide`] at a time before the ops already applied (`rewind`).
    fn decide_at(
        &self,
        op: &Op,
        old_parent: Option<NodeId>,
        new_parent: Option<NodeId>,
        rewind: Option<Rewind<'_>>,
    ) -> Result<Option<P::Reason>, S::Error> {
        let view = ReplayView {
            store: &*self.store,
            rewind,
            node: op.node(),
            old_parent,
            new_parent,
        };
        Ok(match self.policy.decide(op, &view)? {
            Decision::Deny { reason } => Some(reason),
            _ => None,
        })
    }

    /// Decides and does one op on the current (replay-time) state.
    fn do_op(&mut self, op: &Op) -> Result<Done<P::Reason>, S::Error> {
        let node = op.node();
        match op.kind() {
            OpKind::Create {
                parent, position, ..
            }
            | OpKind::Move {
                parent, position, ..
            } => {
                let old = self.store.placement(node)?;
                if let Some(reason) =
                    self.decide(op, old.as_ref().map(|p| p.parent), Some(*parent))?
                {
                    return Ok(denied(reason));
                }
                // A brand-new node without (orphan) children cannot be an ancestor of anything.
                let may_cycle = *parent == node
                    || ((old.is_some() || self.store.child_count(node)? > 0)
                        && self.is_within(*parent, node)?);
                if may_cycle {
                    return Ok(Done::noop(Effect::SkippedCycle));
                }
                let mut undo = Vec::with_capacity(1);
                let placement = Placement {
                    parent: *parent,
                    position: position.clone(),
                    placed_by: op.id(),
                };
                self.set_place(node, &old, Some(&placement))?;
                undo.push(Undo::Placement { node, prior: old });
                if let OpKind::Create {
                    payload: Some(bytes),
                    ..
                } = op.kind()
                {
                    self.write_payload(op, node, bytes, &mut undo)?;
                }
                self.revive(op, *parent, &mut undo)?;
                Ok(Done {
                    effect: Effect::Applied,
                    undo,
                    reason: None,
                })
            }
            OpKind::Delete { seen, .. } => {
                let old = self.store.placement(node)?;
                let old_parent = old.as_ref().map(|p| p.parent);
                if let Some(reason) = self.decide(op, old_parent, Some(NodeId::TRASH))? {
                    return Ok(denied(reason));
                }
                let Some(old) = old else {
                    return Ok(Done::noop(Effect::SkippedUnseen));
                };
                if !self.subtree_seen(node, &old, seen)? {
                    return Ok(Done::noop(Effect::SkippedUnseen));
                }
                let placement = Placement {
                    parent: NodeId::TRASH,
                    position: Position::trash(op.lamport(), &op.id().replica()),
                    placed_by: op.id(),
                };
                let old = Some(old);
                self.set_place(node, &old, Some(&placement))?;
                Ok(Done {
                    effect: Effect::Applied,
                    undo: vec![Undo::Placement { node, prior: old }],
                    reason: None,
                })
            }
            OpKind::SetPayload { payload, .. } => {
                let parent = self.store.parent(node)?;
                if let Some(reason) = self.decide(op, parent, None)? {
                    return Ok(denied(reason));
                }
                let mut undo = Vec::with_capacity(1);
                self.write_payload(op, node, payload, &mut undo)?;
                self.revive(op, node, &mut undo)?;
                Ok(Done {
                    effect: Effect::Applied,
                    undo,
                    reason: None,
                })
            }
        }
    }

    /// Splices the late `op` in at its place in the log, `at` (the tree as it was just before
    /// it, read through the indexed suffix), without undoing the ops after it — if `op`
    /// commutes with all of them. Returns `None`, having changed nothing, when it may not; the
    /// caller then undoes and redoes.
    ///
    /// The result equals undo/do/redo: the op is decided and done on the state at its time,
    /// every later op keeps its effect and undo records (the one exception, a later payload
    /// write over the same node, gets the op's write as its prior), and the net changes are
    /// the op's own. Conditions (`spec/ops.md`, "Late ops that commute with the suffix"): no
    /// delete after it (a delete's subtree check could see the op's node or payload); the
    /// target's ancestors at its time do not reach TRASH (no revive); and for a create, a node
    /// that does not exist, has no children and is named by no later op, under a policy that
    /// reads only ancestor paths ([`Policy::reads_paths_only`]).
    fn splice(&mut self, op: &Op, at: Rewind<'_>) -> Result<Option<Done<P::Reason>>, S::Error> {
        let key = op.key();
        if at.suffix().deletes_after(key) {
            return Ok(None);
        }
        let node = op.node();
        match op.kind() {
            OpKind::Create {
                parent,
                position,
                payload,
                ..
            } => {
                if !self.policy.reads_paths_only()
                    || at.suffix().names(node, key)
                    || self.store.placement(node)?.is_some()
                    || self.store.child_count(node)? > 0
                    || self.trashed_at(*parent, at)?
                {
                    return Ok(None);
                }
                if let Some(reason) = self.decide_at(op, None, Some(*parent), Some(at))? {
                    return Ok(Some(denied(reason)));
                }
                // The node has no children, so only `parent == node` makes a cycle.
                if *parent == node {
                    return Ok(Some(Done::noop(Effect::SkippedCycle)));
                }
                let mut undo = Vec::with_capacity(1 + usize::from(payload.is_some()));
                let placement = Placement {
                    parent: *parent,
                    position: position.clone(),
                    placed_by: op.id(),
                };
                self.set_place(node, &None, Some(&placement))?;
                undo.push(Undo::Placement { node, prior: None });
                if let Some(bytes) = payload {
                    self.write_payload(op, node, bytes, &mut undo)?;
                }
                Ok(Some(Done {
                    effect: Effect::Applied,
                    undo,
                    reason: None,
                }))
            }
            OpKind::SetPayload { payload, .. } => {
                if self.trashed_at(node, at)? {
                    return Ok(None);
                }
                let parent = at.parent(&*self.store, node)?;
                if let Some(reason) = self.decide_at(op, parent, None, Some(at))? {
                    return Ok(Some(denied(reason)));
                }
                let written = PayloadRecord {
                    bytes: payload.clone(),
                    set_by: op.id(),
                };
                let Some(later) = at.suffix().payload_written_after(node, key) else {
                    // The last write: the payload now is the one at the op's time.
                    let mut undo = Vec::with_capacity(1);
                    self.write_payload(op, node, payload, &mut undo)?;
                    return Ok(Some(Done {
                        effect: Effect::Applied,
                        undo,
                        reason: None,
                    }));
                };
                // A later write overwrites this one: it now replaces the op's payload, and the
                // op replaces what that write's undo record held. The tree does not change.
                let Some(mut entry) = self.store.entry(later)? else {
                    return Ok(None);
                };
                let Some(prior) = entry.undo.iter_mut().find_map(|u| match u {
                    Undo::Payload { node: n, prior } if *n == node => Some(prior),
                    _ => None,
                }) else {
                    return Ok(None);
                };
                let was = prior.replace(written);
                self.store.log_update(later, entry.effect, &entry.undo)?;
                Ok(Some(Done {
                    effect: Effect::Applied,
                    undo: vec![Undo::Payload { node, prior: was }],
                    reason: None,
                }))
            }
            OpKind::Move { .. } | OpKind::Delete { .. } => Ok(None),
        }
    }

    /// True if `node`'s ancestors at time `at` reach TRASH (an op there may revive).
    fn trashed_at(&self, node: NodeId, at: Rewind<'_>) -> Result<bool, S::Error> {
        let mut n = node;
        loop {
            if n == NodeId::TRASH {
                return Ok(true);
            }
            if n.is_reserved() {
                return Ok(false);
            }
            match at.parent(&*self.store, n)? {
                Some(p) => n = p,
                None => return Ok(false),
            }
        }
    }

    fn write_payload(
        &mut self,
        op: &Op,
        node: NodeId,
        bytes: &[u8],
        undo: &mut Vec<Undo>,
    ) -> Result<(), S::Error> {
        let prior = self.store.payload(node)?;
        self.touched.payload(node, prior.as_ref().map(|p| p.set_by));
        self.store.set_payload(
            node,
            Some(&PayloadRecord {
                bytes: bytes.to_vec(),
                set_by: op.id(),
            }),
        )?;
        undo.push(Undo::Payload { node, prior });
        Ok(())
    }

    /// True if `node` is `root` or below it (no depth cap: the tree is acyclic).
    fn is_within(&self, node: NodeId, root: NodeId) -> Result<bool, S::Error> {
        self.store.is_within(node, root)
    }

    /// The defensive-delete check: every node of the subtree was placed, and its payload set, by
    /// ops the delete had seen.
    fn subtree_seen(
        &self,
        node: NodeId,
        placement: &Placement,
        seen: &VersionVector,
    ) -> Result<bool, S::Error> {
        if !seen.covers(&placement.placed_by) || !self.payload_seen(node, seen)? {
            return Ok(false);
        }
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let mut cursor: Option<(Position, NodeId)> = None;
            loop {
                let page = self
                    .store
                    .children(n, cursor.as_ref().map(|(p, c)| (p, *c)), PAGE)?;
                for c in &page {
                    let placed_by = self.store.placement(c.node)?.map(|p| p.placed_by);
                    if !placed_by.is_some_and(|by| seen.covers(&by))
                        || !self.payload_seen(c.node, seen)?
                    {
                        return Ok(false);
                    }
                    stack.push(c.node);
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => {
                        cursor = Some((last.position.clone(), last.node))
                    }
                    _ => break,
                }
            }
        }
        Ok(true)
    }

    fn payload_seen(&self, node: NodeId, seen: &VersionVector) -> Result<bool, S::Error> {
        Ok(self
            .store
            .payload_set_by(node)?
            .is_none_or(|by| seen.covers(&by)))
    }

    /// Revive (`spec/delete.md`): an op landing inside a trashed subtree whose delete had not
    /// seen it moves the trashed root back to where the delete took it from, repeating upwards.
    fn revive(&mut self, op: &Op, start: NodeId, undo: &mut Vec<Undo>) -> Result<(), S::Error> {
        if self.store.child_count(NodeId::TRASH)? == 0 {
            return Ok(());
        }
        let mut from = start;
        loop {
            let mut n = from;
            let trashed = loop {
                if n.is_reserved() {
                    return Ok(());
                }
                match self.store.parent(n)? {
                    None => return Ok(()),
                    Some(p) if p == NodeId::TRASH => break n,
                    Some(p) => n = p,
                }
            };
            let Some(current) = self.store.placement(trashed)? else {
                return Ok(());
            };
            let Some(delete) = self.store.entry(current.placed_by)? else {
                return Ok(());
            };
            let OpKind::Delete { seen, .. } = delete.op.kind() else {
                return Ok(());
            };
            if seen.covers(&op.id()) {
                return Ok(());
            }
            let prior = delete.undo.iter().find_map(|u| match u {
                Undo::Placement {
                    node,
                    prior: Some(p),
                } if *node == trashed => Some(p.clone()),
                _ => None,
            });
            let Some(prior) = prior else {
                return Ok(());
            };
            if self.is_within(prior.parent, trashed)? {
                return Ok(());
            }
            // A node deleted again while already in TRASH goes back to where the earlier delete
            // put it, still placed by that delete; the loop then asks whether that delete had
            // seen `op` (and revives further if not).
            let back = if prior.parent == NodeId::TRASH {
                prior
            } else {
                Placement {
                    parent: prior.parent,
                    position: prior.position,
                    placed_by: op.id(),
                }
            };
            let current = Some(current);
            self.set_place(trashed, &current, Some(&back))?;
            from = if back.parent == NodeId::TRASH {
                trashed
            } else {
                back.parent
            };
            undo.push(Undo::Placement {
                node: trashed,
                prior: current,
            });
        }
    }

    /// The batch's net changes: each touched node's state now against its state before.
    fn events(&self) -> Result<Vec<ChangeEvent>, S::Error> {
        let mut events = Vec::with_capacity(self.touched.order.len());
        for (node, before) in &self.touched.order {
            if let Some(was) = &before.place {
                let now = self.store.placement(*node)?;
                if let Some(e) = place_event(*node, was.as_deref(), now) {
                    events.push(e);
                }
            }
            if let Some(was) = &before.payload {
                let now = self.store.payload(*node)?;
                if now.as_ref().map(|p| p.set_by) != was.as_deref().copied() {
                    events.push(ChangeEvent::PayloadChanged {
                        node: *node,
                        payload: now.map(|p| p.bytes),
                    });
                }
            }
        }
        Ok(events)
    }
}

fn denied<R>(reason: R) -> Done<R> {
    Done {
        effect: Effect::Denied,
        undo: Vec::new(),
        reason: Some(reason),
    }
}

fn place_event(
    node: NodeId,
    was: Option<&Placement>,
    now: Option<Placement>,
) -> Option<ChangeEvent> {
    let trash = NodeId::TRASH;
    match (was, now) {
        (None, None) => None,
        (Some(_), None) => Some(ChangeEvent::Removed { node }),
        (None, Some(p)) => Some(ChangeEvent::Created {
            node,
            parent: p.parent,
            position: p.position,
        }),
        (Some(w), Some(p)) => {
            if w.parent == p.parent && w.position == p.position {
                None
            } else if p.parent == trash && w.parent != trash {
                Some(ChangeEvent::Deleted {
                    node,
                    position: p.position,
                })
            } else if w.parent == trash && p.parent != trash {
                Some(ChangeEvent::Restored {
                    node,
                    parent: p.parent,
                    position: p.position,
                })
            } else {
                Some(ChangeEvent::Moved {
                    node,
                    parent: p.parent,
                    position: p.position,
                })
            }
        }
    }
}
