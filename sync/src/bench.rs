//! Sync benchmarks as code (feature `bench`): builds replicas, syncs them through the in-memory
//! transport and reports bytes, messages, round trips and time. `cargo bench -p canopy-sync`
//! prints the figures; the `canopy` binary can call [`run`] for `canopy bench sync --json`.

use std::time::Instant;

use canopy_tree::{MemoryStore, NodeId, OpId, Place, ReplicaId, SqliteStore, Store, Tree};

use crate::filter::{AllowAll, SubtreeScope};
use crate::memory::{self, FullPeer, PartialPeer};
use crate::partial::PartialReplica;
use crate::session::{Options, PartialSession, Session};

/// One measured scenario.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Figure {
    /// What was measured (`cold_full`, `in_sync`, `diff_1000`, `diff_1pct`, `cold_partial`,
    /// `warm_partial_100`).
    pub scenario: &'static str,
    /// Ops in the document before the scenario.
    pub doc_ops: u64,
    /// Ops that differ between the two sides (ops the sync had to carry).
    pub diff_ops: u64,
    /// Bytes of the differing ops in their `spec/ops.md` encoding.
    pub diff_op_bytes: u64,
    /// Nodes the partial replica held afterwards (partial scenarios).
    pub nodes: u64,
    /// Message bytes, both directions.
    pub bytes: u64,
    /// Messages, both directions.
    pub messages: u64,
    /// Round trips.
    pub round_trips: u64,
    /// Wall time of the sync, in milliseconds.
    pub ms: f64,
}

impl Figure {
    /// One JSON object (no dependencies: the fields are numbers and a fixed name).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"scenario\":\"{}\",\"doc_ops\":{},\"diff_ops\":{},\"diff_op_bytes\":{},\"nodes\":{},\"bytes\":{},\"messages\":{},\"round_trips\":{},\"ms\":{:.2}}}",
            self.scenario,
            self.doc_ops,
            self.diff_ops,
            self.diff_op_bytes,
            self.nodes,
            self.bytes,
            self.messages,
            self.round_trips,
            self.ms
        )
    }
}

/// Why a benchmark could not run (a sync failed or a result was wrong).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A sync session failed.
    #[error("sync failed: {0}")]
    Sync(String),
    /// The SQLite store failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] canopy_tree::SqliteStoreError),
    /// The replicas did not converge, or a figure is inconsistent.
    #[error("check failed: {0}")]
    Check(&'static str),
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

type T = Tree<MemoryStore>;

fn rep(b: u8) -> ReplicaId {
    ReplicaId::from_bytes([b; 32])
}

/// `n` creates by replica 1: a subtree X of `x_size` nodes under ROOT, the rest elsewhere, each
/// with a 16-byte payload, random parents.
fn build(n: usize, x_size: usize, rng: &mut Rng) -> (T, NodeId, Vec<NodeId>) {
    let mut t = Tree::new(MemoryStore::new(), rep(1));
    let (x, all) = build_in(&mut t, n, x_size, rng);
    (t, x, all)
}

/// [`build`] in a given tree (any policy).
fn build_in<P: canopy_tree::Policy>(
    t: &mut Tree<MemoryStore, P>,
    n: usize,
    x_size: usize,
    rng: &mut Rng,
) -> (NodeId, Vec<NodeId>) {
    let x = t
        .create(NodeId::ROOT, Place::Last, Some(vec![1; 16]))
        .expect("create")
        .node();
    let mut inside = vec![x];
    let mut outside = vec![NodeId::ROOT];
    for i in 1..n {
        let in_x = i < x_size;
        let pool = if in_x { &inside } else { &outside };
        // mostly shallow-and-wide, some depth
        let parent = if rng.below(4) == 0 {
            pool[pool.len() - 1]
        } else {
            pool[rng.below(pool.len().min(64 + pool.len() / 8))]
        };
        let node = t
            .create(
                parent,
                Place::Last,
                Some((i as u64).to_le_bytes().repeat(2)),
            )
            .expect("create")
            .node();
        if in_x {
            inside.push(node);
        } else {
            outside.push(node);
        }
    }
    outside.remove(0);
    let mut all = inside;
    all.extend(outside);
    (x, all)
}

/// `k` random ops on `t` (moves, payload writes, creates), returning their encoded size.
fn mutate(t: &mut T, nodes: &mut Vec<NodeId>, k: usize, rng: &mut Rng) -> u64 {
    let before = t.store().max_seq(t.replica()).unwrap_or(0);
    let mut made = 0;
    while made < k {
        let a = nodes[rng.below(nodes.len())];
        let ok = match rng.below(3) {
            0 => {
                let b = nodes[rng.below(nodes.len())];
                t.move_node(a, b, Place::First).is_ok()
            }
            1 => t.set_payload(a, rng.next().to_le_bytes().to_vec()).is_ok(),
            _ => match t.create(a, Place::Last, Some(vec![7; 16])) {
                Ok(l) => {
                    nodes.push(l.node());
                    true
                }
                Err(_) => false,
            },
        };
        if ok {
            made += 1;
        }
    }
    let after = t.store().max_seq(t.replica()).unwrap_or(0);
    (before + 1..=after)
        .map(|s| {
            t.store()
                .entry(OpId::new(t.replica(), s))
                .ok()
                .flatten()
                .map_or(0, |e| e.op.encode().len() as u64)
        })
        .sum()
}

fn full_sync(a: &mut T, b: &mut T) -> Result<(memory::PumpStats, f64), BenchError> {
    let start = Instant::now();
    let mut pa = FullPeer::new(a, Session::new(AllowAll, Options::default()));
    let mut pb = FullPeer::new(b, Session::new(AllowAll, Options::default()));
    let stats =
        memory::pump(&mut pa, &mut pb, None).map_err(|e| BenchError::Sync(e.to_string()))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if a.store().frontier().ok() != b.store().frontier().ok() {
        return Err(BenchError::Check("frontiers differ after sync"));
    }
    Ok((stats, ms))
}

fn figure(
    scenario: &'static str,
    doc_ops: u64,
    diff: (u64, u64),
    nodes: u64,
    stats: &memory::PumpStats,
    ms: f64,
) -> Figure {
    Figure {
        scenario,
        doc_ops,
        diff_ops: diff.0,
        diff_op_bytes: diff.1,
        nodes,
        bytes: stats.bytes(),
        messages: stats.messages,
        round_trips: stats.round_trips,
        ms,
    }
}

/// Runs every scenario for a document of `n` ops whose scope X has `x_size` nodes, calling
/// `report` after each figure.
pub fn run(
    n: usize,
    x_size: usize,
    mut report: impl FnMut(&Figure),
) -> Result<Vec<Figure>, BenchError> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let (mut a, x, mut nodes) = build(n, x_size, &mut rng);
    let mut b = Tree::new(MemoryStore::new(), rep(2));
    let mut out = Vec::new();
    let mut push = |f: Figure, out: &mut Vec<Figure>| {
        report(&f);
        out.push(f);
    };
    let doc = |t: &T| t.store().log_len().unwrap_or(0);

    let a_bytes: u64 = (1..=n as u64)
        .map(|s| {
            a.store()
                .entry(OpId::new(rep(1), s))
                .ok()
                .flatten()
                .map_or(0, |e| e.op.encode().len() as u64)
        })
        .sum();
    let (stats, ms) = full_sync(&mut a, &mut b)?;
    push(
        figure("cold_full", 0, (n as u64, a_bytes), 0, &stats, ms),
        &mut out,
    );

    let (stats, ms) = full_sync(&mut a, &mut b)?;
    if stats.round_trips != 1 {
        return Err(BenchError::Check(
            "in-sync replicas took more than one round trip",
        ));
    }
    push(figure("in_sync", doc(&a), (0, 0), 0, &stats, ms), &mut out);

    for (scenario, k) in [("diff_1000", 1000usize), ("diff_1pct", n / 100)] {
        let before = doc(&a);
        let mut nodes_b = nodes.clone();
        let bytes_a = mutate(&mut a, &mut nodes, k / 2, &mut rng);
        let bytes_b = mutate(&mut b, &mut nodes_b, k - k / 2, &mut rng);
        let (stats, ms) = full_sync(&mut a, &mut b)?;
        push(
            figure(
                scenario,
                before,
                (k as u64, bytes_a + bytes_b),
                0,
                &stats,
                ms,
            ),
            &mut out,
        );
    }

    let filter = SubtreeScope::new(x);
    let mut p = PartialReplica::new(x, rep(3));
    let start = Instant::now();
    let stats = {
        let mut pp = PartialPeer::new(&mut p, PartialSession::new(Options::default()));
        let mut pa = FullPeer::new(&mut a, Session::new(filter, Options::default()));
        memory::pump(&mut pp, &mut pa, None).map_err(|e| BenchError::Sync(e.to_string()))?
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let held = p.len() as u64;
    if held + 1 < x_size as u64 {
        return Err(BenchError::Check(
            "partial replica holds fewer nodes than the scope",
        ));
    }
    push(
        figure("cold_partial", doc(&a), (0, 0), held, &stats, ms),
        &mut out,
    );

    // 100 changes inside the scope, then a warm partial sync
    let before = doc(&a);
    let mut scope_nodes: Vec<NodeId> = a
        .subtree(x)
        .filter_map(|r| r.ok().map(|(n, _)| n))
        .collect();
    scope_nodes.push(x);
    let bytes = mutate(&mut a, &mut scope_nodes, 100, &mut rng);
    let start = Instant::now();
    let stats = {
        let mut pp = PartialPeer::new(&mut p, PartialSession::new(Options::default()));
        let mut pa = FullPeer::new(&mut a, Session::new(filter, Options::default()));
        memory::pump(&mut pp, &mut pa, None).map_err(|e| BenchError::Sync(e.to_string()))?
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    push(
        figure(
            "warm_partial_100",
            before,
            (100, bytes),
            p.len() as u64,
            &stats,
            ms,
        ),
        &mut out,
    );
    Ok(out)
}

/// The server's case: a cold partial sync of X (`x_size` nodes) from a document of `n` ops in a
/// SQLite file (WAL) in the temp directory, with a subtree read filter. The document is built in
/// memory and copied into SQLite in batches first (not timed).
pub fn run_sqlite_partial(
    n: usize,
    x_size: usize,
    mut report: impl FnMut(&Figure),
) -> Result<Figure, BenchError> {
    let mut rng = Rng(0x5151_7a7a_0f0f_3c3c ^ n as u64);
    let (a, x, _) = build(n, x_size, &mut rng);
    let dir = std::env::temp_dir().join(format!("canopy-sync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|_| BenchError::Check("temp dir"))?;
    let path = dir.join(format!("doc-{n}.canopy"));
    let _ = std::fs::remove_file(&path);
    let result = (|| {
        let mut s = Tree::new(SqliteStore::open(&path)?, rep(4));
        let mut seq = 1u64;
        while seq <= n as u64 {
            let end = (seq + 50_000).min(n as u64 + 1);
            let ops: Vec<_> = (seq..end)
                .filter_map(|q| a.store().entry(OpId::new(rep(1), q)).ok().flatten())
                .map(|e| e.op)
                .collect();
            s.apply(ops).map_err(|e| match e {
                canopy_tree::ApplyError::Store(e) => BenchError::Sqlite(e),
                _ => BenchError::Check("apply"),
            })?;
            seq = end;
        }
        drop(a);
        let doc_ops = s.store().log_len()?;
        let mut p = PartialReplica::new(x, rep(3));
        let start = Instant::now();
        let stats = {
            let mut pp = PartialPeer::new(&mut p, PartialSession::new(Options::default()));
            let mut ps = FullPeer::new(
                &mut s,
                Session::new(SubtreeScope::new(x), Options::default()),
            );
            memory::pump(&mut pp, &mut ps, None).map_err(|e| BenchError::Sync(e.to_string()))?
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if p.len() != s.subtree(x).count() {
            return Err(BenchError::Check(
                "partial replica does not hold subtree(X)",
            ));
        }
        Ok(figure(
            "cold_partial_sqlite",
            doc_ops,
            (0, 0),
            p.len() as u64,
            &stats,
            ms,
        ))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let f = result?;
    report(&f);
    Ok(f)
}

/// A cold partial sync of X (`x_size` nodes) from an authorized replica (`canopy_caps::Authz`,
/// `MemoryStore`) of a document of `n` owner-signed ops, twice through [`CapsRead`] — a reader
/// holding a depth-2 chain (owner → Alice → reader, `/tree/read` on X), every node record
/// decided by `AuthzState::authorize` — first with an empty allow cache (`cold_partial_caps`),
/// then again (`cold_partial_caps_warm`); and once through `SubtreeScope(X)` on the same replica
/// (`cold_partial_scope_authz`) for the filter's share. Building and signing are not timed.
pub fn run_caps_partial(
    n: usize,
    x_size: usize,
    mut report: impl FnMut(&Figure),
) -> Result<Vec<Figure>, BenchError> {
    use canopy_caps::{
        chain_ref, subtree_policy, Ability, Authz, Delegation, DelegationFields, Document, Entry,
        SecretKey,
    };
    const NOW: u64 = 1_700_000_000;
    let owner = SecretKey::from_bytes(&[0x0a; 32]);
    let alice = SecretKey::from_bytes(&[0x0b; 32]);
    let reader = SecretKey::from_bytes(&[0x0c; 32]);
    let doc = Document::new(owner.did(), [0; 16]);
    let mut a = Authz::new(
        MemoryStore::new(),
        doc,
        ReplicaId::from_bytes(*owner.did().public_key()),
    )
    .map_err(|_| BenchError::Check("authz replica"))?;
    a.state_mut().set_signer(owner.clone(), chain_ref(&[]), NOW);
    let mut rng = Rng(0x0c0c_a5a5_1234_5678 ^ n as u64);
    let (x, _) = build_in(a.tree_mut(), n, x_size, &mut rng);
    let fields = |audience: &SecretKey| DelegationFields {
        audience: audience.did(),
        subject: Some(owner.did()),
        command: Ability::Read.command(),
        policy: subtree_policy(x.as_bytes(), &[]),
        expiration: None,
        not_before: None,
        meta: None,
    };
    let d1 = Delegation::issue_with_nonce(&owner, fields(&alice), vec![1; 12]);
    let d2 = Delegation::issue_with_nonce(&alice, fields(&reader), vec![2; 12]);
    let chain = vec![d1.cid(), d2.cid()];
    let report_ = a
        .ingest([
            Entry::Delegation(d1).encode(),
            Entry::Delegation(d2).encode(),
            Entry::Chain(chain.clone()).encode(),
        ])
        .map_err(|_| BenchError::Check("ingest"))?;
    if report_.items.iter().any(Result::is_err) {
        return Err(BenchError::Check("read grant refused"));
    }
    let doc_ops = a
        .tree()
        .store()
        .log_len()
        .map_err(|_| BenchError::Check("log"))?;
    let want = a.tree().subtree(x).count();
    let mut out = Vec::new();
    for scenario in [
        "cold_partial_caps",
        "cold_partial_caps_warm",
        "cold_partial_scope_authz",
    ] {
        let mut p = PartialReplica::new(x, rep(3));
        let start = Instant::now();
        let stats = {
            let mut pp = PartialPeer::new(&mut p, PartialSession::new(Options::default()));
            let r = if scenario == "cold_partial_scope_authz" {
                let mut pa = FullPeer::new(
                    &mut a,
                    Session::new(SubtreeScope::new(x), Options::default()),
                );
                memory::pump(&mut pp, &mut pa, None).map_err(|e| e.to_string())
            } else {
                let clock: crate::filter::Clock = std::sync::Arc::new(|| NOW);
                let f = crate::filter::CapsRead::new(reader.did(), chain_ref(&chain), clock);
                let mut pa = FullPeer::new(&mut a, Session::new(f, Options::default()));
                memory::pump(&mut pp, &mut pa, None).map_err(|e| e.to_string())
            };
            r.map_err(BenchError::Sync)?
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if p.len() != want {
            return Err(BenchError::Check(
                "partial replica does not hold subtree(X)",
            ));
        }
        let f = figure(scenario, doc_ops, (0, 0), p.len() as u64, &stats, ms);
        report(&f);
        out.push(f);
    }
    Ok(out)
}
