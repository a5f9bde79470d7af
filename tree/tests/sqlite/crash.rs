//! Crash safety: a child process ingests batches into a file database and is SIGKILLed at random
//! points; after each kill the parent reopens the file and checks that every batch the child
//! reported committed is there, that no batch is partly there, and the engine's invariants.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canopy_tree::{
    Lamport, NodeId, Op, OpId, OpKind, Position, ReplicaId, SqliteStore, Store, Tree, VersionVector,
};

const CHILD_ENV: &str = "CANOPY_CRASH_CHILD_DB";
/// Ops per batch.
const K: u64 = 150;
const WRITER: ReplicaId = ReplicaId::from_bytes([0x5a; 32]);

fn node(i: u64) -> NodeId {
    let mut b = [0u8; 16];
    b[0] = 0x10;
    b[8..].copy_from_slice(&i.to_be_bytes());
    NodeId::from_bytes(b)
}

/// Batch `b`: op `seq` with `(seq - 1) % 5` = 0 or 1 creates `node(seq)` (under ROOT or an older
/// node), 2 moves an older node under another (some would make cycles: skipped), 3 sets the
/// payload of, and 4 deletes, the node made three ops before. Pure function of `b`, so the parent
/// knows what each batch holds.
fn batch(b: u64) -> Vec<Op> {
    let mut x = b.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    let pos = Position::first(&WRITER);
    (0..K)
        .map(|j| {
            let seq = b * K + j + 1;
            let groups = (seq - 1) / 5; // complete groups of 5 before this op's group
            let mut older = || {
                if groups == 0 {
                    NodeId::ROOT
                } else {
                    node(rnd(groups) * 5 + 1 + rnd(2))
                }
            };
            let kind = match (seq - 1) % 5 {
                0 | 1 => OpKind::Create {
                    node: node(seq),
                    parent: if seq % 3 == 0 { NodeId::ROOT } else { older() },
                    position: pos.clone(),
                    payload: Some(seq.to_le_bytes().to_vec()),
                },
                2 if groups > 0 => OpKind::Move {
                    node: older(),
                    parent: older(),
                    position: pos.clone(),
                },
                3 => OpKind::SetPayload {
                    node: node(seq - 3),
                    payload: vec![j as u8; 3],
                },
                // delete the node this group created second (never deleted before; later
                // creates under it and moves of it revive or restore it)
                4 => OpKind::Delete {
                    node: node(seq - 3),
                    seen: VersionVector::from_iter([(WRITER, seq - 1)]),
                },
                _ => OpKind::SetPayload {
                    node: node(seq - 2),
                    payload: vec![1],
                },
            };
            Op::new(OpId::new(WRITER, seq), Lamport::new(seq), kind)
        })
        .collect()
}

/// The child: ingests batches from where the file left off, printing each commit, until killed.
#[test]
#[ignore = "child process of crash_kill_reopen (runs only with CANOPY_CRASH_CHILD_DB set)"]
fn crash_child() {
    let path = std::env::var(CHILD_ENV).expect("run by crash_kill_reopen");
    let store = SqliteStore::open(&path).unwrap();
    let start = store.max_seq(WRITER).unwrap() / K;
    let mut tree = Tree::new(store, ReplicaId::from_bytes([1; 32]));
    for b in start.. {
        tree.apply(batch(b)).unwrap();
        println!("committed {b}");
    }
}

#[test]
fn crash_kill_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.canopy");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
    let mut committed: Option<u64> = None;
    let rounds = 6;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // wait for a random number of commits (1..=8), then a random delay (0..=25 ms) so the
        // kill lands anywhere: inside a batch, during commit, between batches
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let want = 1 + seed % 8;
        let delay = Duration::from_micros((seed >> 8) % 25_000);
        let mut seen_now = 0;
        let t = Instant::now();
        while seen_now < want {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(b) = line.strip_prefix("committed ") {
                committed = Some(b.parse().unwrap());
                seen_now += 1;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "child too slow");
        }
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // lines the child printed before it died are commits too
        for line in lines.map_while(Result::ok) {
            if let Some(b) = line.strip_prefix("committed ") {
                committed = Some(b.parse().unwrap());
            }
        }

        let store = SqliteStore::open(&path).unwrap();
        let last = committed.unwrap();
        let max = store.max_seq(WRITER).unwrap();
        assert_eq!(
            max % K,
            0,
            "round {round}: a partial batch is in the log ({max} ops)"
        );
        // every reported batch is there; at most one more (committed, killed before printing)
        assert!(max / K > last, "round {round}: committed batch {last} lost");
        assert!(
            max / K <= last + 2,
            "round {round}: batches appeared from nowhere"
        );
        assert_eq!(store.log_len().unwrap(), max);
        assert_eq!(store.pending_len().unwrap(), 0);
        for b in [0, last] {
            for op in batch(b) {
                assert_eq!(store.entry(op.id()).unwrap().unwrap().op, op);
            }
        }
        let tree = Tree::new(store, ReplicaId::from_bytes([1; 32]));
        tree.check_invariants().unwrap();
        // a fresh replay of the same batches gives the same tree
        let mut fresh = Tree::new(
            SqliteStore::open_in_memory().unwrap(),
            ReplicaId::from_bytes([1; 32]),
        );
        for b in 0..max / K {
            fresh.apply(batch(b)).unwrap();
        }
        assert_eq!(fresh.node_count().unwrap(), tree.node_count().unwrap());
        let walk = |t: &Tree<SqliteStore>| {
            t.subtree(NodeId::ROOT)
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(walk(&fresh), walk(&tree), "round {round}");
    }
}
