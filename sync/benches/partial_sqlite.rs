//! Partial replica storage: `cargo bench -p canopy-sync --features sqlite --bench partial_sqlite
//! -- [--json] [X_NODES [DOC_NODES]]` (default 10,000 nodes in X of a 100,000-node document).
//!
//! Builds a document in memory with a subtree X, then, for the in-memory partial replica and the
//! SQLite one (a file in the temp directory, WAL, `synchronous=NORMAL`): a cold partial sync of X
//! (in-memory transport, subtree read filter), a warm sync after 100 changes in X, and for the
//! SQLite file its size, a fresh open + the first page of 100 children of X, and a paged walk of
//! the whole subtree. Run by `cargo test` (no `--bench` argument) it does a small smoke run.

use std::path::Path;
use std::time::Instant;

use canopy_sync::memory::{self, FullPeer, PartialPeer};
use canopy_sync::{
    MemoryPartial, Options, PartialReplica, PartialSession, PartialStore, Session, SqlitePartial,
    SubtreeScope,
};
use canopy_tree::{MemoryStore, NodeId, Place, ReplicaId, Tree};

type T = Tree<MemoryStore>;

/// xorshift64*: reproducible picks without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

/// A document of `doc` nodes: X under ROOT with `x` nodes below it (random shape, payloads of 16
/// bytes), the rest elsewhere.
fn build(doc: usize, x: usize, rng: &mut Rng) -> (T, NodeId, Vec<NodeId>) {
    let mut t = Tree::new(MemoryStore::new(), ReplicaId::from_bytes([1; 32]));
    let root_x = t.create(NodeId::ROOT, Place::Last, None).unwrap().node();
    let mut inside = vec![root_x];
    for i in 0..x {
        let parent = inside[rng.below(inside.len().min(64 + inside.len() / 8))];
        let n = t
            .create(
                parent,
                Place::Last,
                Some(format!("node {i:>10}").into_bytes()),
            )
            .unwrap()
            .node();
        inside.push(n);
    }
    let mut outside = vec![NodeId::ROOT];
    for _ in x..doc.saturating_sub(1) {
        let parent = outside[rng.below(outside.len())];
        outside.push(t.create(parent, Place::Last, None).unwrap().node());
    }
    inside.remove(0);
    (t, root_x, inside)
}

fn sync<S: PartialStore>(t: &mut T, x: NodeId, p: &mut PartialReplica<S>) -> (f64, u64) {
    let start = Instant::now();
    let stats = {
        let mut pp = PartialPeer::new(p, PartialSession::new(Options::default()));
        let mut f = FullPeer::new(t, Session::new(SubtreeScope::new(x), Options::default()));
        memory::pump(&mut pp, &mut f, None).expect("sync")
    };
    (start.elapsed().as_secs_f64() * 1e3, stats.bytes())
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let benching = args.iter().any(|a| a == "--bench");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let x_nodes = nums
        .first()
        .copied()
        .unwrap_or(if benching { 10_000 } else { 500 });
    let doc_nodes = nums.get(1).copied().unwrap_or(x_nodes * 10);
    let print = |name: &str, ms: f64, extra: &[(&str, u64)]| {
        if json {
            let more: String = extra.iter().map(|(k, v)| format!(",\"{k}\":{v}")).collect();
            println!(
                "{{\"scenario\":\"{name}\",\"x_nodes\":{x_nodes},\"doc_nodes\":{doc_nodes},\"ms\":{ms:.2}{more}}}"
            );
        } else {
            let more: String = extra.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            println!("{name:>28} x={x_nodes} doc={doc_nodes} {ms:>9.2} ms{more}");
        }
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut t, x, mut inside) = build(doc_nodes, x_nodes, &mut rng);

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.partial");
    let mut m: PartialReplica<MemoryPartial> =
        PartialReplica::new(x, ReplicaId::from_bytes([3; 32]));
    let mut q = PartialReplica::init(
        SqlitePartial::open(&path).expect("open"),
        x,
        ReplicaId::from_bytes([3; 32]),
    )
    .expect("init");

    let (ms, bytes) = sync(&mut t, x, &mut m);
    print("cold_partial_memory", ms, &[("bytes", bytes)]);
    let (ms, bytes) = sync(&mut t, x, &mut q);
    assert_eq!(q.count().unwrap() as usize, x_nodes);
    print(
        "cold_partial_sqlite",
        ms,
        &[("bytes", bytes), ("file_bytes", file_bytes(&path))],
    );

    // 100 changes in X: moves within X, payload writes, creates
    for i in 0..100 {
        let a = inside[rng.below(inside.len())];
        match i % 3 {
            0 => {
                let b = inside[rng.below(inside.len())];
                let _ = t.move_node(a, b, Place::First);
            }
            1 => {
                let _ = t.set_payload(a, b"changed".to_vec());
            }
            _ => inside.push(t.create(a, Place::Last, None).unwrap().node()),
        }
    }
    let (ms, _) = sync(&mut t, x, &mut m);
    print("warm_partial_100_memory", ms, &[]);
    let (ms, _) = sync(&mut t, x, &mut q);
    print("warm_partial_100_sqlite", ms, &[]);
    assert_eq!(q.all_records().unwrap(), m.records());
    drop(q);

    let start = Instant::now();
    let q = PartialReplica::open(SqlitePartial::open(&path).expect("open"))
        .expect("read")
        .expect("a replica");
    let page = q.children_page(x, None, 100).expect("page");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(page.len(), m.children(x).len().min(100));
    print(
        "open_first_page_100_sqlite",
        ms,
        &[("file_bytes", file_bytes(&path))],
    );
    let start = Instant::now();
    let walked = q.subtree(x).count();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(walked, m.len());
    print("subtree_walk_sqlite", ms, &[("nodes", walked as u64)]);
}
