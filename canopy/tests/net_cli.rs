//! `canopy serve` and `canopy sync` as processes: a replica pushes through the server to another
//! (full) replica and to a partial replica of one subtree; the server keeps one SQLite file per
//! document in its data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use canopy_sync::{PartialReplica, SqlitePartial};
use canopy_tree::{NodeId, Place, ReplicaId, SqliteStore, Store, Tree};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn canopy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
}

/// Starts `canopy serve` on a free port; returns it and its base URL.
fn serve(data: &Path) -> (Server, String) {
    let mut child = canopy()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("canopy serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("the listening URL is printed")
        .trim_end_matches("/DOC")
        .to_string();
    (Server(child), url)
}

fn sync(url: &str, args: &[&str], replica: &Path) -> String {
    let out = canopy()
        .arg("sync")
        .arg(url)
        .args(args)
        .arg("--replica")
        .arg(replica)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "canopy sync failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn serve_and_sync_full_and_partial_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&dir.path().join("server"));

    // replica A: X under ROOT with 30 children, and 20 nodes elsewhere
    let a_path = dir.path().join("a.canopy");
    let x = {
        let mut a = Tree::new(
            SqliteStore::open(&a_path).unwrap(),
            ReplicaId::from_bytes([1; 32]),
        );
        let x = a
            .create(NodeId::ROOT, Place::Last, Some(b"X".to_vec()))
            .unwrap()
            .node();
        for i in 0..30 {
            a.create(x, Place::Last, Some(format!("in {i}").into_bytes()))
                .unwrap();
        }
        for i in 0..20 {
            a.create(
                NodeId::ROOT,
                Place::Last,
                Some(format!("out {i}").into_bytes()),
            )
            .unwrap();
        }
        x
    };
    let out = sync(&url, &["--doc", "notes"], &a_path);
    assert!(out.contains("in sync"), "{out}");
    assert!(dir.path().join("server/docs/notes.canopy").exists());

    // replica B receives everything
    let b_path = dir.path().join("b.canopy");
    let out = sync(&url, &["--doc", "notes"], &b_path);
    assert!(out.contains("51 ops, 51 nodes"), "{out}");
    let b = Tree::new(
        SqliteStore::open(&b_path).unwrap(),
        ReplicaId::from_bytes([2; 32]),
    );
    assert_eq!(b.child_count(x).unwrap(), 30);
    assert_eq!(b.store().log_len().unwrap(), 51);

    // a partial replica of X holds X's 30 children (and resumes warm)
    let p_path = dir.path().join("x.partial");
    let xs = x.to_string();
    let out = sync(&url, &["--doc", "notes", "--subtree", &xs], &p_path);
    assert!(out.contains("30 nodes under"), "{out}");
    let p = PartialReplica::open(SqlitePartial::open(&p_path).unwrap())
        .unwrap()
        .expect("a partial replica");
    assert_eq!((p.scope(), p.count().unwrap()), (x, 30));
    drop(p);
    let out = sync(&url, &["--doc", "notes", "--subtree", &xs], &p_path);
    assert!(out.contains("30 nodes under"), "{out}");

    // another document is separate
    let c_path = dir.path().join("c.canopy");
    let out = sync(&url, &["--doc", "other"], &c_path);
    assert!(out.contains("0 ops, 0 nodes"), "{out}");
}
