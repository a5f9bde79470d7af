//! The seed's workloads (`shared/DESIGN.md`, "Performance bars"), generic over the store.
//!
//! - `insert-chain`: N creates, `a_i` under `a_{i−1}` (the first under ROOT), one call and one
//!   committed transaction per op; then read the node count and check the depth is N.
//! - `bulk-insert-root-siblings`: N creates under ROOT in one call and one transaction; then read
//!   the node count and check ROOT has exactly N children.
//!
//! A tier is a store factory: to add one, add a [`Tier`] variant and its arm in [`run`].

use anyhow::{ensure, Context};
use canopy_tree::{
    Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Place, Position, ReplicaId, SqliteStore, Store,
    Tree,
};
use clap::{Args, ValueEnum};

use super::{median, time_ms};

const SIZES: [u64; 3] = [100, 1000, 10_000];

/// Where the tree is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// The Rust core with the in-memory store.
    Core,
    /// The SQLite store on an in-memory database.
    SqliteMemory,
    /// The SQLite store on a file (WAL, synchronous=NORMAL) in the temp directory.
    SqliteFile,
}

/// `canopy bench seed`.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Storage tier.
    #[arg(long, value_enum, default_value = "core")]
    tier: Tier,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed runs per workload and size, after one untimed warm-up run (the median is
    /// reported; at least 5).
    #[arg(long, default_value_t = 11)]
    runs: usize,
}

/// One workload's figure.
#[derive(Debug)]
struct Figure {
    workload: &'static str,
    n: u64,
    median_ms: f64,
    runs: usize,
}

pub fn run(args: SeedArgs) -> anyhow::Result<()> {
    ensure!(args.runs >= 5, "--runs must be at least 5");
    let (tier, figures) = match args.tier {
        Tier::Core => ("core", workloads(|| Ok(MemoryStore::new()), args.runs)?),
        Tier::SqliteMemory => (
            "sqlite-memory",
            workloads(|| Ok(SqliteStore::open_in_memory()?), args.runs)?,
        ),
        Tier::SqliteFile => {
            let dir = super::sqlite::TempDir::new("seed")?;
            let mut k = 0;
            let figures = workloads(
                || {
                    k += 1;
                    Ok(SqliteStore::open(dir.path().join(format!("{k}.canopy")))?)
                },
                args.runs,
            )?;
            ("sqlite-file", figures)
        }
    };
    if args.json {
        let rows: Vec<serde_json::Value> = figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "workload": f.workload,
                    "n": f.n,
                    "tier": tier,
                    "median_ms": (f.median_ms * 1000.0).round() / 1000.0,
                    "runs": f.runs,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<28} {:>7} {:>8} {:>12}",
            "workload", "n", "tier", "median ms"
        );
        for f in &figures {
            println!(
                "{:<28} {:>7} {:>8} {:>12.3}",
                f.workload, f.n, tier, f.median_ms
            );
        }
    }
    Ok(())
}

/// Runs every workload at every size on fresh stores from `factory` (one untimed warm-up run,
/// then `runs` timed ones).
fn workloads<S, F>(mut factory: F, runs: usize) -> anyhow::Result<Vec<Figure>>
where
    S: Store,
    F: FnMut() -> anyhow::Result<S>,
{
    let mut out = Vec::new();
    for n in SIZES {
        insert_chain(factory()?, n)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let store = factory()?;
            times.push(insert_chain(store, n)?);
        }
        out.push(Figure {
            workload: "insert-chain",
            n,
            median_ms: median(&mut times),
            runs,
        });
    }
    for n in SIZES {
        bulk_siblings(factory()?, n)?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let store = factory()?;
            times.push(bulk_siblings(store, n)?);
        }
        out.push(Figure {
            workload: "bulk-insert-root-siblings",
            n,
            median_ms: median(&mut times),
            runs,
        });
    }
    Ok(out)
}

fn me() -> ReplicaId {
    ReplicaId::from_bytes([0x42; 32])
}

/// `n` local creates, each under the previous node, one call (one transaction) each.
fn insert_chain<S: Store>(store: S, n: u64) -> anyhow::Result<f64> {
    let mut tree = Tree::new(store, me());
    let (ms, (count, last)) = time_ms(|| {
        let mut parent = NodeId::ROOT;
        for _ in 0..n {
            parent = tree
                .create(parent, Place::Last, None)
                .context("create")?
                .node();
        }
        Ok((tree.node_count()?, parent))
    })?;
    ensure!(count == n, "insert-chain: {count} nodes, expected {n}");
    let depth = tree.ancestors(last)?.len() as u64;
    ensure!(depth == n, "insert-chain: depth {depth}, expected {n}");
    Ok(ms)
}

/// `n` creates under ROOT in one call (one transaction).
fn bulk_siblings<S: Store>(store: S, n: u64) -> anyhow::Result<f64> {
    let mut tree = Tree::new(store, me());
    let (ms, (count, report)) = time_ms(|| {
        let mut ops = Vec::with_capacity(n as usize);
        let mut position = Position::first(&me());
        for seq in 1..=n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&me().as_bytes()[..8]);
            id[8..].copy_from_slice(&seq.to_be_bytes());
            ops.push(Op::new(
                OpId::new(me(), seq),
                Lamport::new(seq),
                OpKind::Create {
                    node: NodeId::from_bytes(id),
                    parent: NodeId::ROOT,
                    position: position.clone(),
                    payload: None,
                },
            ));
            position = Position::after(&position, &me())?;
        }
        let report = tree.apply(ops)?;
        Ok((tree.node_count()?, report))
    })?;
    ensure!(count == n, "siblings: {count} nodes, expected {n}");
    let children = tree.child_count(NodeId::ROOT)?;
    ensure!(
        children == n,
        "siblings: ROOT has {children} children, expected {n}"
    );
    ensure!(
        report.events.len() as u64 == n,
        "siblings: expected {n} events"
    );
    Ok(ms)
}
