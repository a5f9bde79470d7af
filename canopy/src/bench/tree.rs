//! Tree workloads on the in-memory core:
//!
//! - `insert-last-then-move-first` (n = 10,000): n local creates under ROOT, each after the last,
//!   then each node moved to first; one call per op.
//! - `random-moves` (n = 100,000): n random local moves (cycle-making picks are re-drawn) in a
//!   10,000-node random tree built beforehand (not timed).
//! - `merge-2x50k`: two replicas share a 10,000-node tree, each makes 50,000 random moves
//!   concurrently (not timed), then each applies the other's 50,000 moves in one batch; the
//!   time is both merges, and the two trees are checked equal.
//! - `key-length`: 3,000 appends then 1,000 moves to first under one parent; mean and max
//!   position length in bytes.

use anyhow::{ensure, Context};
use canopy_tree::{LocalError, MemoryStore, NodeId, Op, Place, ReplicaId, Tree};
use clap::Args;

use super::{median, time_ms, Rng};

type T = Tree<MemoryStore>;

/// `canopy bench tree`.
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed runs per workload, after one untimed warm-up run (the median is reported; at
    /// least 5).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[derive(Debug)]
struct Figure {
    workload: &'static str,
    n: u64,
    median_ms: f64,
    runs: usize,
    extra: Vec<(&'static str, serde_json::Value)>,
}

pub fn run(args: TreeArgs) -> anyhow::Result<()> {
    ensure!(args.runs >= 5, "--runs must be at least 5");
    let figures = vec![
        repeat("insert-last-then-move-first", 10_000, args.runs, |_| {
            move_to_first(10_000)
        })?,
        repeat("random-moves", 100_000, args.runs, |seed| {
            random_moves(10_000, 100_000, seed)
        })?,
        repeat("merge-2x50k", 100_000, args.runs, |seed| {
            merge(10_000, 50_000, seed)
        })?,
        key_length()?,
    ];
    if args.json {
        let rows: Vec<serde_json::Value> = figures
            .iter()
            .map(|f| {
                let mut row = serde_json::json!({
                    "workload": f.workload,
                    "n": f.n,
                    "tier": "core",
                    "median_ms": (f.median_ms * 1000.0).round() / 1000.0,
                    "runs": f.runs,
                });
                for (k, v) in &f.extra {
                    row[*k] = v.clone();
                }
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<28} {:>7} {:>12}  notes", "workload", "n", "median ms");
        for f in &figures {
            let notes: Vec<String> = f.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:<28} {:>7} {:>12.3}  {}",
                f.workload,
                f.n,
                f.median_ms,
                notes.join(" ")
            );
        }
    }
    Ok(())
}

fn repeat(
    workload: &'static str,
    n: u64,
    runs: usize,
    mut f: impl FnMut(u64) -> anyhow::Result<f64>,
) -> anyhow::Result<Figure> {
    f(u64::MAX)?;
    let mut times = Vec::with_capacity(runs);
    for seed in 0..runs as u64 {
        times.push(f(seed)?);
    }
    Ok(Figure {
        workload,
        n,
        median_ms: median(&mut times),
        runs,
        extra: Vec::new(),
    })
}

fn replica(b: u8) -> ReplicaId {
    ReplicaId::from_bytes([b; 32])
}

fn move_to_first(n: usize) -> anyhow::Result<f64> {
    let mut tree = Tree::new(MemoryStore::new(), replica(1));
    let (ms, nodes) = time_ms(|| {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(tree.create(NodeId::ROOT, Place::Last, None)?.node());
        }
        for &node in &nodes {
            tree.move_node(node, NodeId::ROOT, Place::First)?;
        }
        Ok(nodes)
    })?;
    ensure!(tree.child_count(NodeId::ROOT)? == n as u64, "child count");
    let first = tree.children(NodeId::ROOT, None, 1)?;
    ensure!(
        first.first().map(|c| c.node) == nodes.last().copied(),
        "the last node moved to first is first"
    );
    Ok(ms)
}

/// A tree of `n` nodes, each under a random earlier node or ROOT.
fn random_tree(tree: &mut T, n: usize, rng: &mut Rng) -> anyhow::Result<Vec<NodeId>> {
    let mut nodes: Vec<NodeId> = Vec::with_capacity(n);
    for _ in 0..n {
        let parent = match rng.below(nodes.len() + 1) {
            0 => NodeId::ROOT,
            i => nodes[i - 1],
        };
        nodes.push(tree.create(parent, Place::Last, None)?.node());
    }
    Ok(nodes)
}

/// `moves` random local moves; picks that would make a cycle are re-drawn.
fn random_local_moves(
    tree: &mut T,
    nodes: &[NodeId],
    moves: usize,
    rng: &mut Rng,
) -> anyhow::Result<Vec<Op>> {
    let mut ops = Vec::with_capacity(moves);
    while ops.len() < moves {
        let node = nodes[rng.below(nodes.len())];
        let parent = match rng.below(nodes.len() + 1) {
            0 => NodeId::ROOT,
            i => nodes[i - 1],
        };
        let place = if rng.below(2) == 0 {
            Place::First
        } else {
            Place::Last
        };
        match tree.move_node(node, parent, place) {
            Ok(local) => ops.push(local.op),
            Err(LocalError::Cycle { .. }) => continue,
            Err(e) => return Err(e).context("random move"),
        }
    }
    Ok(ops)
}

fn random_moves(n: usize, moves: usize, seed: u64) -> anyhow::Result<f64> {
    let mut rng = Rng(seed);
    let mut tree = Tree::new(MemoryStore::new(), replica(1));
    let nodes = random_tree(&mut tree, n, &mut rng)?;
    let (ms, ops) = time_ms(|| random_local_moves(&mut tree, &nodes, moves, &mut rng))?;
    ensure!(
        ops.len() == moves && tree.node_count()? == n as u64,
        "shape"
    );
    Ok(ms)
}

fn merge(n: usize, moves: usize, seed: u64) -> anyhow::Result<f64> {
    let mut rng = Rng(seed);
    let mut a = Tree::new(MemoryStore::new(), replica(1));
    let mut b = Tree::new(MemoryStore::new(), replica(2));
    let nodes = random_tree(&mut a, n, &mut rng)?;
    b.apply(all_ops(&a))?;
    let ops_a = random_local_moves(&mut a, &nodes, moves, &mut rng)?;
    let ops_b = random_local_moves(&mut b, &nodes, moves, &mut rng)?;
    let (ms, ()) = time_ms(|| {
        a.apply(ops_b)?;
        b.apply(ops_a)?;
        Ok(())
    })?;
    for &node in &nodes {
        ensure!(
            a.placement(node)? == b.placement(node)?,
            "replicas differ at {node}"
        );
    }
    a.check_invariants()?;
    Ok(ms)
}

fn all_ops(t: &T) -> Vec<Op> {
    use canopy_tree::{Lamport, LogKey, Store};
    let min = LogKey::new(Lamport::new(0), ReplicaId::from_bytes([0; 32]));
    t.store()
        .log_after(min)
        .map(|entries| entries.into_iter().map(|e| e.op).collect())
        .unwrap_or_default()
}

fn key_length() -> anyhow::Result<Figure> {
    let mut tree = Tree::new(MemoryStore::new(), replica(1));
    let parent = tree.create(NodeId::ROOT, Place::Last, None)?.node();
    let (ms, ()) = time_ms(|| {
        let mut nodes = Vec::with_capacity(3000);
        for _ in 0..3000 {
            nodes.push(tree.create(parent, Place::Last, None)?.node());
        }
        for &node in nodes.iter().take(1000) {
            tree.move_node(node, parent, Place::First)?;
        }
        Ok(())
    })?;
    let kids = tree.children(parent, None, usize::MAX)?;
    ensure!(kids.len() == 3000, "3000 children");
    let lens: Vec<usize> = kids.iter().map(|c| c.position.len()).collect();
    let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
    let max = lens.iter().copied().max().unwrap_or(0);
    Ok(Figure {
        workload: "key-length",
        n: 4000,
        median_ms: ms,
        runs: 1,
        extra: vec![
            (
                "mean_key_bytes",
                serde_json::json!((mean * 100.0).round() / 100.0),
            ),
            ("max_key_bytes", serde_json::json!(max)),
        ],
    })
}
