//! `canopy serve` and `canopy sync` as processes: a replica pushes through the server to another
//! (full) replica and to a partial replica of one subtree; the server keeps one SQLite file per
//! document in its data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use canopy_sync::{PartialReplica, SqlitePartial};
use canopy_tree::{NodeId, ReplicaId, SqliteStore, Store, Tree};

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
        .trim_end_matches("/DOC_ID")
        .to_string();
    (Server(child), url)
}

/// Runs `canopy ARGS`; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = canopy().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `canopy ARGS`, which must succeed; returns its stdout, trimmed.
fn ok(args: &[&str]) -> String {
    let (success, stdout, stderr) = run(args);
    assert!(success, "canopy {args:?} failed: {stdout}{stderr}");
    stdout.trim().to_owned()
}

#[test]
fn serve_and_sync_with_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (_server, url) = serve(&dir.path().join("server"));
    let (owner_key, reader_key, full_key, stranger_key) = (
        d("owner.key"),
        d("reader.key"),
        d("full.key"),
        d("stranger.key"),
    );
    for k in [&owner_key, &reader_key, &full_key, &stranger_key] {
        ok(&["key", "new", "--out", k]);
    }
    let owner_data = d("owner");

    // the owner's document: X under ROOT with 30 children, and 20 nodes elsewhere
    let doc = ok(&["doc", "create", "--key", &owner_key, "--data", &owner_data]);
    let add = |parent: &str, text: &str| {
        ok(&[
            "doc",
            "add",
            "--doc",
            &doc,
            "--key",
            &owner_key,
            "--data",
            &owner_data,
            "--parent",
            parent,
            "--text",
            text,
        ])
    };
    let x = add("root", "X");
    for i in 0..30 {
        add(&x, &format!("in {i}"));
    }
    for i in 0..20 {
        add("root", &format!("out {i}"));
    }
    let out = ok(&[
        "sync",
        &url,
        "--doc",
        &doc,
        "--key",
        &owner_key,
        "--data",
        &owner_data,
    ]);
    assert!(out.contains("51 ops, 51 nodes"), "{out}");
    assert!(dir
        .path()
        .join(format!("server/docs/{doc}.canopy"))
        .exists());

    // a reader of the whole document receives everything
    let full_did = ok(&["key", "show", &full_key]);
    let full_chain = d("full.chain");
    ok(&[
        "token",
        "delegate",
        "--key",
        &owner_key,
        "--to",
        &full_did,
        "--cmd",
        "/tree/read",
        "--out",
        &full_chain,
    ]);
    let b = d("b.canopy");
    let out = ok(&[
        "sync",
        &url,
        "--doc",
        &doc,
        "--key",
        &full_key,
        "--token",
        &full_chain,
        "--replica",
        &b,
    ]);
    assert!(out.contains("51 ops, 51 nodes"), "{out}");
    let b = Tree::new(
        SqliteStore::open(&b).unwrap(),
        ReplicaId::from_bytes([2; 32]),
    );
    let xn: NodeId = x.parse().unwrap();
    assert_eq!(b.child_count(xn).unwrap(), 30);
    assert_eq!(b.store().log_len().unwrap(), 51);

    // a reader of X holds X's 30 children (and resumes warm), and may not read more
    let reader_did = ok(&["key", "show", &reader_key]);
    let reader_chain = d("reader.chain");
    ok(&[
        "token",
        "delegate",
        "--key",
        &owner_key,
        "--to",
        &reader_did,
        "--cmd",
        "/tree/read",
        "--subtree",
        &x,
        "--out",
        &reader_chain,
    ]);
    let p_path = d("x.partial");
    let partial = [
        "sync",
        &url,
        "--doc",
        &doc,
        "--key",
        &reader_key,
        "--token",
        &reader_chain,
        "--subtree",
        &x,
        "--replica",
        &p_path,
    ];
    let out = ok(&partial);
    assert!(out.contains("30 nodes under"), "{out}");
    let p = PartialReplica::open(SqlitePartial::open(Path::new(&p_path)).unwrap())
        .unwrap()
        .expect("a partial replica");
    assert_eq!((p.scope(), p.count().unwrap()), (xn, 30));
    drop(p);
    let out = ok(&partial);
    assert!(out.contains("30 nodes under"), "{out}");
    let (success, _, err) = run(&[
        "sync",
        &url,
        "--doc",
        &doc,
        "--key",
        &reader_key,
        "--token",
        &reader_chain,
        "--replica",
        &d("r.canopy"),
    ]);
    assert!(!success && err.contains("full sync not allowed"), "{err}");

    // a key with no grant is refused at the handshake
    let (success, _, err) = run(&[
        "sync",
        &url,
        "--doc",
        &doc,
        "--key",
        &stranger_key,
        "--replica",
        &d("s.canopy"),
    ]);
    assert!(!success && err.contains("403"), "{err}");
}
