//! `canopy bench sqlite`: a large document in a SQLite file, and what a fresh process pays to open
//! it and read one page of children of a node deep in the tree.
//!
//! `build` writes the document through the engine (batches of 10k ops, one transaction each);
//! `open-page` (run by `bench sqlite` in a child process, so nothing is cached in memory) opens the
//! file, reads the first page of children and reports latency and the process's peak RSS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use canopy_tree::{
    Lamport, NodeId, Op, OpId, OpKind, Position, ReplicaId, SqliteStore, Store, Tree,
};
use clap::{Args, Subcommand};

use super::Rng;

/// `canopy bench sqlite`.
#[derive(Debug, Args)]
pub struct SqliteArgs {
    #[command(subcommand)]
    cmd: Option<SqliteCmd>,
    /// Nodes in the document.
    #[arg(long, default_value_t = 1_000_000)]
    nodes: u64,
    /// Database file (default: a temporary file, removed afterwards).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SqliteCmd {
    /// Opens `path`, reads the first page of children of `node`, prints latency and peak RSS.
    OpenPage {
        path: PathBuf,
        /// The node (32 hex digits).
        node: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        page: usize,
    },
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("canopy-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ME: ReplicaId = ReplicaId::from_bytes([0x17; 32]);
const BATCH: u64 = 10_000;
/// Depth of the spine that leads to the node whose children are read.
const SPINE: u64 = 200;
/// Children of that node.
const FANOUT: u64 = 5_000;

fn node(i: u64) -> NodeId {
    let mut b = [0u8; 16];
    b[0] = 0xc0;
    b[8..].copy_from_slice(&i.to_be_bytes());
    NodeId::from_bytes(b)
}

/// The document: a spine of `SPINE` nodes (node 1 under ROOT, each next under the previous), then
/// `FANOUT` children under the last spine node (the "deep" node), then the rest under uniformly
/// random earlier nodes. Returns the deep node.
fn build(path: &Path, nodes: u64) -> anyhow::Result<NodeId> {
    ensure!(
        nodes > SPINE + FANOUT,
        "--nodes must exceed {}",
        SPINE + FANOUT
    );
    let mut tree = Tree::new(SqliteStore::open(path)?, ME);
    let mut rng = Rng(7);
    let mut pos = Position::first(&ME);
    let deep = node(SPINE);
    let mut seq = 0u64;
    while seq < nodes {
        let mut ops = Vec::with_capacity(BATCH as usize);
        for _ in 0..BATCH.min(nodes - seq) {
            seq += 1;
            let parent = if seq == 1 {
                NodeId::ROOT
            } else if seq <= SPINE {
                node(seq - 1)
            } else if seq <= SPINE + FANOUT {
                deep
            } else {
                node(1 + rng.below((seq - 1) as usize) as u64)
            };
            if seq > SPINE && seq <= SPINE + FANOUT {
                pos = Position::after(&pos, &ME)?;
            }
            ops.push(Op::new(
                OpId::new(ME, seq),
                Lamport::new(seq),
                OpKind::Create {
                    node: node(seq),
                    parent,
                    position: if seq > SPINE && seq <= SPINE + FANOUT {
                        pos.clone()
                    } else {
                        Position::first(&ME)
                    },
                    payload: Some(seq.to_le_bytes().to_vec()),
                },
            ));
        }
        tree.apply(ops)?;
    }
    ensure!(tree.node_count()? == nodes, "node count");
    tree.store()
        .connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(deep)
}

/// Peak resident set size of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?)
}

fn open_page(path: &Path, node: &str, page: usize) -> anyhow::Result<()> {
    let node: NodeId = node.parse()?;
    let t = Instant::now();
    let store = SqliteStore::open(path)?;
    let kids = store.children(node, None, page)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(
        kids.len() == page,
        "expected a full page, got {}",
        kids.len()
    );
    let rss = peak_rss_kib()?;
    println!(
        "{}",
        serde_json::json!({ "open_first_page_ms": (ms * 1000.0).round() / 1000.0, "peak_rss_mib": rss as f64 / 1024.0, "children": kids.len() })
    );
    Ok(())
}

pub fn run(args: SqliteArgs) -> anyhow::Result<()> {
    if let Some(SqliteCmd::OpenPage { path, node, page }) = args.cmd {
        return open_page(&path, &node, page);
    }
    let tmp = TempDir::new("sqlite")?;
    let path = args.path.unwrap_or_else(|| tmp.path().join("doc.canopy"));
    ensure!(!path.exists(), "{} exists", path.display());
    let t = Instant::now();
    let deep = build(&path, args.nodes)?;
    let build_s = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path)?.len();
    // three fresh processes; the first pays the cold page cache of this file's pages
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = Command::new(std::env::current_exe()?)
            .args(["bench", "sqlite", "open-page"])
            .arg(&path)
            .arg(deep.to_string())
            .output()?;
        ensure!(
            out.status.success(),
            "open-page: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        runs.push(v);
    }
    let result = serde_json::json!({
        "nodes": args.nodes,
        "build_s": (build_s * 1000.0).round() / 1000.0,
        "file_mib": size as f64 / (1024.0 * 1024.0),
        "deep_node_depth": SPINE,
        "deep_node_children": FANOUT,
        "open_first_page": runs,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{result:#}");
    }
    Ok(())
}
