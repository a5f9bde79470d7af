//! Exports over real [`Tree`]s: replicas with a [`MemoryStore`] (and, with the `sqlite` feature, an
//! in-memory [`SqliteStore`](canopy_tree::SqliteStore)), local ops, delivery of encoded ops between
//! replicas, and reads.
//!
//! Replicas are numbered by handle (0, 1, …). Nodes cross the ABI as `u32` references into one table
//! shared by all replicas: 0 is ROOT, 1 is TRASH, and every other node id gets the next number the first
//! time an export returns it. Values come back in the output buffer (little-endian `u32`s or text); the
//! return value is only a status ([`OK`], [`LIB_ERROR`] with the error's `Debug` form in the output, or
//! [`BAD_INPUT`]).

use std::cell::RefCell;
use std::fmt::Write as _;

use canopy_tree::{
    ApplyReport, ChangeEvent, LocalError, LocalOp, MemoryStore, NodeId, Op, Outcome, Place, Store,
    Tree,
};

use crate::io::{fail, input, replica, set_output, set_output_u32s, BAD_INPUT, OK};

/// Store kind for [`smoke_replica_new`]: [`MemoryStore`].
pub const STORE_MEMORY: u32 = 0;
/// Store kind for [`smoke_replica_new`]: `SqliteStore::open_in_memory()` (feature `sqlite`).
pub const STORE_SQLITE: u32 = 1;

pub(crate) enum AnyTree {
    Memory(Tree<MemoryStore>),
    #[cfg(feature = "sqlite")]
    Sqlite(Tree<canopy_tree::SqliteStore>),
}

/// Runs `$body` with `$t` bound to the concrete `&mut Tree<_>` of `$tree`.
macro_rules! with_tree {
    ($tree:expr, $t:ident => $body:expr) => {
        match $tree {
            AnyTree::Memory($t) => $body,
            #[cfg(feature = "sqlite")]
            AnyTree::Sqlite($t) => $body,
        }
    };
}

struct Replica {
    tree: AnyTree,
    /// Every op this replica made, encoded as on the wire, in the order it made them.
    sent: Vec<Vec<u8>>,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeId>,
    replicas: Vec<Replica>,
    /// Change events of the last local op or delivery.
    events: Vec<ChangeEvent>,
    /// The node of the last local op.
    last_node: Option<NodeId>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        nodes: vec![NodeId::ROOT, NodeId::TRASH],
        ..State::default()
    });
}

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Runs `f` on the tree of replica `h` (`None`: no such replica).
pub(crate) fn with_replica<T>(h: u32, f: impl FnOnce(&mut AnyTree) -> T) -> Option<T> {
    with_state(|s| s.replicas.get_mut(h as usize).map(|r| f(&mut r.tree)))
}

impl State {
    fn node(&self, r: u32) -> Option<NodeId> {
        self.nodes.get(r as usize).copied()
    }
    fn node_ref(&mut self, id: NodeId) -> u32 {
        match self.nodes.iter().position(|n| *n == id) {
            Some(i) => i as u32,
            None => {
                self.nodes.push(id);
                (self.nodes.len() - 1) as u32
            }
        }
    }
}

/// Bit mask of the store kinds this build has: bit 0 memory, bit 1 SQLite.
#[no_mangle]
pub extern "C" fn smoke_store_kinds() -> u32 {
    1 | if cfg!(feature = "sqlite") { 2 } else { 0 }
}

/// Forgets every replica and node reference (a fresh scenario).
#[no_mangle]
pub extern "C" fn smoke_reset() {
    with_state(|s| {
        *s = State {
            nodes: vec![NodeId::ROOT, NodeId::TRASH],
            ..State::default()
        }
    });
}

/// Creates a replica whose id is 32 bytes of `replica_byte`, on store kind `store`
/// ([`STORE_MEMORY`], [`STORE_SQLITE`]). Output: its handle (`u32`).
#[no_mangle]
pub extern "C" fn smoke_replica_new(store: u32, replica_byte: u32) -> i32 {
    let id = replica(replica_byte);
    let tree = match store {
        STORE_MEMORY => AnyTree::Memory(Tree::new(MemoryStore::new(), id)),
        #[cfg(feature = "sqlite")]
        STORE_SQLITE => match canopy_tree::SqliteStore::open_in_memory() {
            Ok(s) => AnyTree::Sqlite(Tree::new(s, id)),
            Err(e) => return fail(e),
        },
        _ => return BAD_INPUT,
    };
    with_state(|s| {
        s.replicas.push(Replica {
            tree,
            sent: Vec::new(),
        });
        set_output_u32s([(s.replicas.len() - 1) as u32]);
    });
    OK
}

/// Decodes a placement: 0 First, 1 Last, 2 After(sibling), 3 Before(sibling).
fn place(s: &State, code: u32, sibling: u32) -> Option<Place> {
    match code {
        0 => Some(Place::First),
        1 => Some(Place::Last),
        2 => s.node(sibling).map(Place::After),
        3 => s.node(sibling).map(Place::Before),
        _ => None,
    }
}

/// A local op to make on a replica.
enum Local {
    Create {
        parent: NodeId,
        place: Place,
        payload: Option<Vec<u8>>,
    },
    Move {
        node: NodeId,
        parent: NodeId,
        place: Place,
    },
    Delete {
        node: NodeId,
    },
    Restore {
        node: NodeId,
        parent: NodeId,
        place: Place,
    },
    SetPayload {
        node: NodeId,
        payload: Vec<u8>,
    },
}

fn run_local<S: Store>(
    t: &mut Tree<S>,
    call: Local,
) -> Result<LocalOp<std::convert::Infallible>, LocalError<S::Error>> {
    match call {
        Local::Create {
            parent,
            place,
            payload,
        } => t.create(parent, place, payload),
        Local::Move {
            node,
            parent,
            place,
        } => t.move_node(node, parent, place),
        Local::Delete { node } => t.delete(node),
        Local::Restore {
            node,
            parent,
            place,
        } => t.restore(node, parent, place),
        Local::SetPayload { node, payload } => t.set_payload(node, payload),
    }
}

/// Makes a local op on replica `h`; on success records the encoded op for delivery, the events and
/// the node, and outputs the node reference.
fn local(h: u32, build: impl FnOnce(&State) -> Option<Local>) -> i32 {
    with_state(|s| {
        let Some(call) = build(s) else {
            return BAD_INPUT;
        };
        let Some(rep) = s.replicas.get_mut(h as usize) else {
            return BAD_INPUT;
        };
        let result =
            with_tree!(&mut rep.tree, t => run_local(t, call).map_err(|e| format!("{e:?}")));
        match result {
            Ok(done) => {
                rep.sent.push(done.op.encode());
                let node = done.node();
                s.events = done.events;
                s.last_node = Some(node);
                let r = s.node_ref(node);
                set_output_u32s([r]);
                OK
            }
            Err(e) => {
                set_output(e.as_bytes());
                crate::io::LIB_ERROR
            }
        }
    })
}

/// Creates a node under `parent` at placement (`place`, `sibling`); with `has_payload` != 0 the input
/// bytes are its payload. Output: the new node's reference.
#[no_mangle]
pub extern "C" fn smoke_create(
    h: u32,
    parent: u32,
    place_code: u32,
    sibling: u32,
    has_payload: u32,
) -> i32 {
    let payload = (has_payload != 0).then(input);
    local(h, |s| {
        Some(Local::Create {
            parent: s.node(parent)?,
            place: place(s, place_code, sibling)?,
            payload,
        })
    })
}

/// Moves `node` under `parent` at placement (`place`, `sibling`).
#[no_mangle]
pub extern "C" fn smoke_move(h: u32, node: u32, parent: u32, place_code: u32, sibling: u32) -> i32 {
    local(h, |s| {
        Some(Local::Move {
            node: s.node(node)?,
            parent: s.node(parent)?,
            place: place(s, place_code, sibling)?,
        })
    })
}

/// Deletes `node` (moves it to TRASH, carrying what this replica has seen).
#[no_mangle]
pub extern "C" fn smoke_delete(h: u32, node: u32) -> i32 {
    local(h, |s| {
        Some(Local::Delete {
            node: s.node(node)?,
        })
    })
}

/// Restores the deleted `node` under `parent` at placement (`place`, `sibling`).
#[no_mangle]
pub extern "C" fn smoke_restore(
    h: u32,
    node: u32,
    parent: u32,
    place_code: u32,
    sibling: u32,
) -> i32 {
    local(h, |s| {
        Some(Local::Restore {
            node: s.node(node)?,
            parent: s.node(parent)?,
            place: place(s, place_code, sibling)?,
        })
    })
}

/// Replaces the payload of `node` with the input bytes.
#[no_mangle]
pub extern "C" fn smoke_set_payload(h: u32, node: u32) -> i32 {
    let payload = input();
    local(h, |s| {
        Some(Local::SetPayload {
            node: s.node(node)?,
            payload,
        })
    })
}

/// Counts of the outcomes in a report, as text `applied=… skipped_cycle=… …` (stable key order).
fn summarize<R>(r: &ApplyReport<R>) -> String {
    let mut counts = [0usize; 7];
    for op in r.all() {
        let i = match op.outcome {
            Outcome::Applied => 0,
            Outcome::SkippedCycle => 1,
            Outcome::SkippedUnseen => 2,
            Outcome::Denied { .. } => 3,
            Outcome::Pending { .. } => 4,
            Outcome::Duplicate => 5,
            _ => 6,
        };
        counts[i] += 1;
    }
    let names = [
        "applied",
        "skipped_cycle",
        "skipped_unseen",
        "denied",
        "pending",
        "duplicate",
        "rejected",
    ];
    let mut out = String::new();
    for (n, c) in names.iter().zip(counts) {
        let _ = write!(out, "{n}={c} ");
    }
    let _ = write!(out, "events={}", r.events.len());
    out
}

/// Delivers ops made by replica `from` to replica `to` as one batch, through the wire encoding
/// (`Op::encode` → `Op::decode`): `count` ops starting at index `start` of what `from` made, in that
/// order or, with `reversed` != 0, in reverse. Output: the outcome counts (see the source of
/// `summarize`), e.g. `applied=2 skipped_cycle=1 … events=3`.
#[no_mangle]
pub extern "C" fn smoke_deliver(from: u32, to: u32, start: u32, count: u32, reversed: u32) -> i32 {
    with_state(|s| {
        let Some(src) = s.replicas.get(from as usize) else {
            return BAD_INPUT;
        };
        let (start, end) = (start as usize, start as usize + count as usize);
        let Some(wire) = src.sent.get(start..end) else {
            return BAD_INPUT;
        };
        let mut ops = Vec::with_capacity(wire.len());
        for bytes in wire {
            match Op::decode(bytes) {
                Ok(op) => ops.push(op),
                Err(e) => return fail(e),
            }
        }
        if reversed != 0 {
            ops.reverse();
        }
        let Some(dst) = s.replicas.get_mut(to as usize) else {
            return BAD_INPUT;
        };
        let result = with_tree!(&mut dst.tree, t => t
            .apply(ops)
            .map(|r| (summarize(&r), r.events))
            .map_err(|e| format!("{e:?}")));
        match result {
            Ok((summary, events)) => {
                s.events = events;
                set_output(summary.as_bytes());
                OK
            }
            Err(e) => {
                set_output(e.as_bytes());
                crate::io::LIB_ERROR
            }
        }
    })
}

/// Output: the number of ops replica `h` has made (`u32`).
#[no_mangle]
pub extern "C" fn smoke_sent_count(h: u32) -> i32 {
    with_state(|s| match s.replicas.get(h as usize) {
        Some(r) => {
            set_output_u32s([r.sent.len() as u32]);
            OK
        }
        None => BAD_INPUT,
    })
}

/// Output: the wire bytes of op number `index` (0-based) that replica `h` made.
#[no_mangle]
pub extern "C" fn smoke_sent_op(h: u32, index: u32) -> i32 {
    with_state(|s| {
        match s
            .replicas
            .get(h as usize)
            .and_then(|r| r.sent.get(index as usize))
        {
            Some(bytes) => {
                set_output(bytes);
                OK
            }
            None => BAD_INPUT,
        }
    })
}

/// Decodes the input as an op (`Op::decode`, untrusted bytes). Output: the op encoded again, or the
/// typed decode error.
#[no_mangle]
pub extern "C" fn smoke_op_decode() -> i32 {
    match Op::decode(&input()) {
        Ok(op) => {
            set_output(&op.encode());
            OK
        }
        Err(e) => fail(e),
    }
}

/// Output: the change events of the last local op or delivery, one per line: `Kind node`, where node
/// is a reference (e.g. `Created 2`, `Deleted 3`, `PayloadChanged 2`).
#[no_mangle]
pub extern "C" fn smoke_events() -> i32 {
    with_state(|s| {
        let events = std::mem::take(&mut s.events);
        let mut out = String::new();
        for e in &events {
            let kind = match e {
                ChangeEvent::Created { .. } => "Created",
                ChangeEvent::Moved { .. } => "Moved",
                ChangeEvent::Deleted { .. } => "Deleted",
                ChangeEvent::Restored { .. } => "Restored",
                ChangeEvent::Removed { .. } => "Removed",
                ChangeEvent::PayloadChanged { .. } => "PayloadChanged",
                _ => "Other",
            };
            let _ = writeln!(out, "{kind} {}", s.node_ref(e.node()));
        }
        s.events = events;
        set_output(out.as_bytes());
        OK
    })
}

/// Runs a read on replica `h` with node reference `node` resolved; the closure writes the output.
fn read(h: u32, node: u32, f: impl FnOnce(&mut State, usize, NodeId) -> Result<(), String>) -> i32 {
    with_state(|s| {
        let Some(id) = s.node(node) else {
            return BAD_INPUT;
        };
        if h as usize >= s.replicas.len() {
            return BAD_INPUT;
        }
        match f(s, h as usize, id) {
            Ok(()) => OK,
            Err(e) => {
                set_output(e.as_bytes());
                crate::io::LIB_ERROR
            }
        }
    })
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Output: the references of all children of `parent`, in sibling order (`u32`s). Reads them in
/// pages of 2 to exercise the keyset cursor.
#[no_mangle]
pub extern "C" fn smoke_children(h: u32, parent: u32) -> i32 {
    read(h, parent, |s, h, parent| {
        let ids = with_tree!(&s.replicas[h].tree, t => {
            let mut ids = Vec::new();
            let mut after = None;
            loop {
                let page = t.children(parent, after.as_ref(), 2).map_err(err)?;
                ids.extend(page.iter().map(|c| c.node));
                match page.last() {
                    Some(last) if page.len() == 2 => after = Some(last.clone()),
                    _ => break,
                }
            }
            ids
        });
        let refs: Vec<u32> = ids.into_iter().map(|id| s.node_ref(id)).collect();
        set_output_u32s(refs);
        Ok(())
    })
}

/// Output: the parent's reference (`u32`), or nothing if `node` has none (ROOT, TRASH, unknown).
#[no_mangle]
pub extern "C" fn smoke_parent(h: u32, node: u32) -> i32 {
    read(h, node, |s, h, node| {
        let parent = with_tree!(&s.replicas[h].tree, t => t.parent(node).map_err(err)?);
        let refs: Vec<u32> = parent.into_iter().map(|p| s.node_ref(p)).collect();
        set_output_u32s(refs);
        Ok(())
    })
}

/// Output: nothing if `node` has no payload, else a 1 byte followed by the payload bytes.
#[no_mangle]
pub extern "C" fn smoke_payload(h: u32, node: u32) -> i32 {
    read(h, node, |s, h, node| {
        let payload = with_tree!(&s.replicas[h].tree, t => t.payload(node).map_err(err)?);
        match payload {
            Some(p) => set_output(&[&[1u8][..], &p].concat()),
            None => set_output(&[]),
        }
        Ok(())
    })
}

/// Output (`u32`s): is_deleted, exists, number of ancestors of `node`.
#[no_mangle]
pub extern "C" fn smoke_node_state(h: u32, node: u32) -> i32 {
    read(h, node, |s, h, node| {
        let (deleted, exists, depth) = with_tree!(&s.replicas[h].tree, t => (
            t.is_deleted(node).map_err(err)?,
            t.exists(node).map_err(err)?,
            t.ancestors(node).map_err(err)?.len(),
        ));
        set_output_u32s([u32::from(deleted), u32::from(exists), depth as u32]);
        Ok(())
    })
}

/// Output (`u32`s): node count, number of children of ROOT, number of children of TRASH.
#[no_mangle]
pub extern "C" fn smoke_counts(h: u32) -> i32 {
    read(h, 0, |s, h, _| {
        let counts = with_tree!(&s.replicas[h].tree, t => [
            t.node_count().map_err(err)?,
            t.child_count(NodeId::ROOT).map_err(err)?,
            t.child_count(NodeId::TRASH).map_err(err)?,
        ]);
        set_output_u32s(counts.map(|c| c as u32));
        Ok(())
    })
}

/// Runs `check_invariants()` on replica `h`: OK, or LIB_ERROR with the violation.
#[no_mangle]
pub extern "C" fn smoke_check(h: u32) -> i32 {
    read(
        h,
        0,
        |s, h, _| with_tree!(&s.replicas[h].tree, t => t.check_invariants().map_err(err)),
    )
}

/// Output: the whole visible state as text, one line per node of the walks under ROOT then TRASH:
/// `depth node-hex payload-hex-or-dash`. Equal texts = equal trees (structure, order, payloads).
#[no_mangle]
pub extern "C" fn smoke_dump(h: u32) -> i32 {
    read(h, 0, |s, h, _| {
        let text = with_tree!(&s.replicas[h].tree, t => {
            let mut out = String::new();
            for top in [NodeId::ROOT, NodeId::TRASH] {
                let _ = writeln!(out, "0 {top}");
                for item in t.subtree(top) {
                    let (node, depth) = item.map_err(err)?;
                    let payload = t.payload(node).map_err(err)?;
                    let p = match payload {
                        Some(p) => p.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                        None => "-".to_owned(),
                    };
                    let _ = writeln!(out, "{depth} {node} {p}");
                }
            }
            out
        });
        set_output(text.as_bytes());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{output, put, LIB_ERROR};

    fn u32s() -> Vec<u32> {
        output()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn scenario(store: u32) {
        smoke_reset();
        assert_eq!(smoke_replica_new(store, 1), OK);
        assert_eq!(smoke_replica_new(store, 2), OK);
        put(b"x");
        assert_eq!(smoke_create(0, 0, 1, 0, 1), OK);
        let a = u32s()[0];
        assert_eq!(smoke_create(0, 0, 1, 0, 0), OK);
        let b = u32s()[0];
        assert_eq!(smoke_deliver(0, 1, 0, 2, 1), OK);
        assert!(String::from_utf8(output())
            .unwrap()
            .starts_with("applied=2 "));
        // concurrent moves making a cycle: one is skipped on both replicas
        assert_eq!(smoke_move(0, a, b, 1, 0), OK);
        assert_eq!(smoke_move(1, b, a, 1, 0), OK);
        assert_eq!(smoke_deliver(0, 1, 2, 1, 0), OK);
        assert_eq!(smoke_deliver(1, 0, 0, 1, 0), OK);
        assert_eq!(smoke_dump(0), OK);
        let d0 = output();
        assert_eq!(smoke_dump(1), OK);
        assert_eq!(d0, output());
        assert_eq!(smoke_check(0), OK);
        assert_eq!(smoke_check(1), OK);
        // local cycle is refused with a typed error
        assert_eq!(smoke_children(0, 0), OK);
        let top = u32s()[0];
        let below = if top == a { b } else { a };
        assert_eq!(smoke_move(0, top, below, 1, 0), LIB_ERROR);
        assert!(String::from_utf8(output()).unwrap().starts_with("Cycle"));
        assert_eq!(smoke_payload(1, a), OK);
        assert_eq!(output(), b"\x01x");
    }

    #[test]
    fn memory_scenario() {
        scenario(STORE_MEMORY);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_scenario() {
        scenario(STORE_SQLITE);
    }

    #[test]
    fn bad_handles_and_refs() {
        smoke_reset();
        assert_eq!(smoke_create(9, 0, 1, 0, 0), BAD_INPUT);
        assert_eq!(smoke_replica_new(7, 1), BAD_INPUT);
        assert_eq!(smoke_replica_new(STORE_MEMORY, 1), OK);
        assert_eq!(smoke_create(0, 99, 1, 0, 0), BAD_INPUT);
        assert_eq!(smoke_create(0, 0, 9, 0, 0), BAD_INPUT);
        assert_eq!(smoke_deliver(0, 0, 0, 5, 0), BAD_INPUT);
        assert_eq!(smoke_move(0, 0, 0, 1, 0), LIB_ERROR);
        assert!(String::from_utf8(output()).unwrap().starts_with("Reserved"));
    }
}
