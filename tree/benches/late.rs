//! Concurrent writers' late ops, in process: the tree work of issue 6's push figure
//! (`canopy bench sync --clients C --ops N`) without the network.
//!
//! `C` client replicas (`MemoryStore`) and one server replica (`SqliteStore`, a WAL file) start
//! empty. In each round every client makes `--chunk` creates under ROOT with an 8-byte payload
//! (all at the same Lamport times, so they interleave with the other clients' by replica id) and
//! pushes them to the server as one batch; then the server fans the round out: each client
//! receives the other clients' ops of the round as one batch. Most of a client's received ops
//! sort before its own, and most of a push sorts before ops the server applied earlier in the
//! round: late ops. Rounds repeat until every client made `--ops` ops.
//!
//! Each configuration runs twice, in the same process: `splice` (`AllowAll`: late creates that
//! commute with the log suffix are spliced in, `spec/ops.md`) and `undo_redo` (a policy that does
//! not declare `reads_paths_only`, so every late create undoes and redoes the suffix — the
//! engine's only path before splicing). The result is checked: every replica holds every op, and
//! ROOT's children are in the same order on every client as on the server.
//!
//! `cargo bench -p canopy-tree --features sqlite --bench late -- [--clients C] [--ops N]
//! [--chunk K] [--mode splice|undo_redo|both]` prints one JSON object per run.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use canopy_tree::{
    AllowAll, Decision, MemoryStore, NodeId, Op, Place, Policy, ReplayView, ReplicaId, SqliteStore,
    Store, Tree,
};

/// Allows everything but does not declare `reads_paths_only`: late creates undo and redo.
#[derive(Clone, Copy, Debug)]
struct NoSplice;

impl Policy for NoSplice {
    type Reason = Infallible;
    fn decide<S: Store>(
        &self,
        _op: &Op,
        _view: &ReplayView<'_, S>,
    ) -> Result<Decision<Infallible>, S::Error> {
        Ok(Decision::Allow)
    }
}

fn rep(i: u64) -> ReplicaId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_be_bytes());
    // Spread the replicas over the key space (the tie-break orders them).
    b[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    ReplicaId::from_bytes(b)
}

struct Figures {
    client_apply: Duration,
    server_apply: Duration,
    local: Duration,
    total: Duration,
}

fn run<P: Policy + Copy>(policy: P, clients: usize, ops: usize, chunk: usize) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let server_store = SqliteStore::open(dir.path().join("server.canopy")).expect("server file");
    let mut server = Tree::with_policy(server_store, rep(3), policy);
    let mut reps: Vec<Tree<MemoryStore, P>> = (0..clients)
        .map(|c| Tree::with_policy(MemoryStore::new(), rep(100 + c as u64), policy))
        .collect();
    let (mut client_apply, mut server_apply, mut local) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    let mut made = 0;
    while made < ops {
        let n = chunk.min(ops - made);
        let mut round: Vec<Vec<Op>> = Vec::with_capacity(clients);
        for t in reps.iter_mut() {
            let t0 = Instant::now();
            let mut mine = Vec::with_capacity(n);
            for _ in 0..n {
                let op = t
                    .create(NodeId::ROOT, Place::Last, Some(vec![7; 8]))
                    .expect("local create")
                    .op;
                mine.push(op);
            }
            local += t0.elapsed();
            let t0 = Instant::now();
            server.apply(mine.iter().cloned()).expect("server apply");
            server_apply += t0.elapsed();
            round.push(mine);
        }
        for (c, t) in reps.iter_mut().enumerate() {
            let batch: Vec<Op> = round
                .iter()
                .enumerate()
                .filter(|(o, _)| *o != c)
                .flat_map(|(_, ops)| ops.iter().cloned())
                .collect();
            let t0 = Instant::now();
            t.apply(batch).expect("client apply");
            client_apply += t0.elapsed();
        }
        made += n;
    }
    let total = start.elapsed();
    let all = (clients * ops) as u64;
    assert_eq!(server.store().log_len().expect("log"), all);
    let order = |children: Vec<canopy_tree::Child>| -> Vec<NodeId> {
        children.into_iter().map(|c| c.node).collect()
    };
    let expected = order(
        server
            .children(NodeId::ROOT, None, usize::MAX)
            .expect("children"),
    );
    assert_eq!(expected.len() as u64, all);
    for t in &reps {
        assert_eq!(t.store().log_len().expect("log"), all);
        assert_eq!(
            order(
                t.children(NodeId::ROOT, None, usize::MAX)
                    .expect("children")
            ),
            expected
        );
    }
    Figures {
        client_apply,
        server_apply,
        local,
        total,
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients = arg(&args, "--clients", 100);
    let ops = arg(&args, "--ops", 100);
    let chunk = arg(&args, "--chunk", 10).max(1);
    let mode = args
        .iter()
        .position(|a| a == "--mode")
        .and_then(|i| args.get(i + 1))
        .map_or("both", String::as_str)
        .to_owned();
    let mut modes = Vec::new();
    if mode == "both" || mode == "splice" {
        modes.push("splice");
    }
    if mode == "both" || mode == "undo_redo" {
        modes.push("undo_redo");
    }
    for m in modes {
        let f = match m {
            "splice" => run(AllowAll, clients, ops, chunk),
            _ => run(NoSplice, clients, ops, chunk),
        };
        let total_ops = (clients * ops) as f64;
        println!(
            "{}",
            serde_json::json!({
                "scenario": "late_pushes_in_process",
                "mode": m,
                "clients": clients,
                "ops_per_client": ops,
                "chunk": chunk,
                "seconds": f.total.as_secs_f64(),
                "client_apply_s": f.client_apply.as_secs_f64(),
                "server_apply_s": f.server_apply.as_secs_f64(),
                "local_ops_s": f.local.as_secs_f64(),
                "client_apply_us_per_op_delivery":
                    f.client_apply.as_secs_f64() * 1e6 / (total_ops * (clients as f64 - 1.0)).max(1.0),
                "server_apply_us_per_op": f.server_apply.as_secs_f64() * 1e6 / total_ops,
                "checked": "every replica holds every op; ROOT's children in the server's order",
            })
        );
    }
}
