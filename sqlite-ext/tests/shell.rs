//! The extension through a real `sqlite3` shell (`.load`): local ops, table-valued reads,
//! replication between two documents with op blobs, late ops, and bad input that must fail with
//! a clear SQL error and write nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `sqlite3` shell to use (see `sqlite3-shell.sh`).
fn shell() -> PathBuf {
    if let Ok(p) = std::env::var("CANOPY_SQLITE3") {
        return p.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sqlite3-shell.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3-shell.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// `libcanopy` next to this test binary's `deps/` folder, without its file extension.
fn extension() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let lib = dir.join("libcanopy.so");
    assert!(lib.exists(), "{} not built", lib.display());
    dir.join("libcanopy")
}

struct Doc {
    path: PathBuf,
    shell: PathBuf,
    ext: PathBuf,
}

/// What one shell run printed.
#[derive(Debug)]
struct Out {
    stdout: String,
    stderr: String,
}

impl Doc {
    fn new(dir: &Path, name: &str) -> Doc {
        Doc {
            path: dir.join(name),
            shell: shell(),
            ext: extension(),
        }
    }

    /// Runs `sql` in a fresh shell process on this database, after `.load`.
    fn run(&self, sql: &str) -> Out {
        use std::io::Write;
        let mut child = Command::new(&self.shell)
            .arg("-cmd")
            .arg(format!(".load {}", self.ext.display()))
            .arg(&self.path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs `sql`, which must succeed, and returns its output lines.
    fn ok(&self, sql: &str) -> Vec<String> {
        let out = self.run(sql);
        assert!(out.stderr.is_empty(), "{sql}\n→ {}", out.stderr);
        out.stdout.lines().map(String::from).collect()
    }

    /// Runs `sql`, which must fail with an error containing `needle`.
    fn err(&self, sql: &str, needle: &str) {
        let out = self.run(sql);
        assert!(
            out.stderr.contains(needle),
            "{sql}\n expected an error containing {needle:?}, got stdout {:?} stderr {:?}",
            out.stdout,
            out.stderr
        );
    }

    /// The whole tree as text (pre-order, with payloads) and the node count.
    fn tree(&self) -> Vec<String> {
        self.ok(
            "SELECT hex(s.node), s.depth, hex(canopy_payload(s.node)) FROM canopy_subtree('root') s;
             SELECT 'trash', hex(node) FROM canopy_children('trash');
             SELECT 'count', canopy_node_count();",
        )
    }
}

const ALICE: &str = "x'0101010101010101010101010101010101010101010101010101010101010101'";
const BOB: &str = "x'0202020202020202020202020202020202020202020202020202020202020202'";

#[test]
fn version_and_local_ops_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let doc = Doc::new(dir.path(), "a.canopy");
    let v = doc.ok("SELECT canopy_version();");
    assert!(v[0].starts_with("canopy "), "{v:?}");
    // a list with three items; b is placed first, c after a
    let ids = doc.ok(&format!(
        "CREATE TEMP TABLE n(name TEXT PRIMARY KEY, id BLOB);
         SELECT length(canopy_create({ALICE}, 'root', 'last', NULL, CAST('groceries' AS BLOB)));
         INSERT INTO n SELECT 'list', node FROM canopy_children('root');
         SELECT length(canopy_create({ALICE}, (SELECT id FROM n WHERE name = 'list'), 'last'));
         INSERT INTO n SELECT 'a', node FROM canopy_children((SELECT id FROM n WHERE name = 'list'));
         SELECT length(canopy_create({ALICE}, (SELECT id FROM n WHERE name = 'list'), 'first'));
         INSERT INTO n SELECT 'b', node FROM canopy_children((SELECT id FROM n WHERE name = 'list')) LIMIT 1;
         SELECT length(canopy_create({ALICE}, (SELECT id FROM n WHERE name = 'list'), 'after', (SELECT id FROM n WHERE name = 'a')));
         INSERT INTO n SELECT 'c', node FROM canopy_children((SELECT id FROM n WHERE name = 'list')) WHERE node NOT IN (SELECT id FROM n);
         SELECT name, hex(id) FROM n ORDER BY name;"
    ));
    let id = |name: &str| -> String {
        ids.iter()
            .find_map(|l| l.strip_prefix(&format!("{name}|")))
            .unwrap()
            .to_string()
    };
    let (list, a, b, c) = (id("list"), id("a"), id("b"), id("c"));
    let kids = doc.ok(&format!(
        "SELECT hex(node) FROM canopy_children(x'{list}');"
    ));
    assert_eq!(kids, [b.clone(), a.clone(), c.clone()]);
    assert_eq!(
        doc.ok(&format!(
            "SELECT CAST(canopy_payload(x'{list}') AS TEXT), hex(canopy_parent(x'{a}'));"
        )),
        [format!("groceries|{list}")]
    );
    // move c first, delete b, set a payload, restore b after c
    doc.ok(&format!(
        "SELECT length(canopy_move({BOB}, x'{c}', x'{list}', 'first'));
         SELECT length(canopy_delete({BOB}, x'{b}'));
         SELECT length(canopy_set_payload({ALICE}, x'{a}', CAST('milk' AS BLOB)));"
    ));
    assert_eq!(
        doc.ok(&format!(
            "SELECT hex(node) FROM canopy_children(x'{list}');"
        )),
        [c.clone(), a.clone()]
    );
    assert_eq!(
        doc.ok("SELECT hex(node) FROM canopy_children('trash');"),
        std::slice::from_ref(&b)
    );
    doc.ok(&format!(
        "SELECT length(canopy_restore({BOB}, x'{b}', x'{list}', 'after', x'{c}'));"
    ));
    assert_eq!(
        doc.ok(&format!(
            "SELECT hex(node) FROM canopy_children(x'{list}');"
        )),
        [c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        doc.ok(&format!(
            "SELECT hex(node), depth FROM canopy_ancestors(x'{a}');"
        )),
        [format!("{list}|1"), format!("{}|2", "0".repeat(32))]
    );
    assert_eq!(
        doc.ok("SELECT count(*), sum(depth) FROM canopy_subtree('root');"),
        ["4|7"]
    );
    // ops since a frontier: all 8 ops, then only Bob's after Alice's are known
    assert_eq!(
        doc.ok("SELECT count(*) FROM canopy_ops_since(NULL);"),
        ["8"]
    );
    let alice_only = format!("{}0000000000000005'", &ALICE[..ALICE.len() - 1]);
    assert_eq!(
        doc.ok(&format!(
            "SELECT count(*), min(seq) FROM canopy_ops_since({alice_only});"
        )),
        ["3|1"]
    );
    assert_eq!(
        doc.ok("SELECT count(*) FROM canopy_ops_since(canopy_frontier());"),
        ["0"]
    );
    assert_eq!(doc.ok("SELECT canopy_check();"), ["ok"]);
}

/// Builds a document with `n` nodes by local ops and returns its ops as hex blobs in log order.
fn ops_hex(doc: &Doc, n: usize) -> Vec<String> {
    let mut sql = String::new();
    for i in 0..n {
        let parent = if i % 3 == 0 {
            "'root'".to_string()
        } else {
            "(SELECT node FROM canopy_subtree('root') ORDER BY node LIMIT 1)".to_string()
        };
        let who = if i % 2 == 0 { ALICE } else { BOB };
        sql += &format!(
            "SELECT length(canopy_create({who}, {parent}, 'first', NULL, CAST('p{i}' AS BLOB)));\n"
        );
    }
    sql += &format!("SELECT length(canopy_move({ALICE}, (SELECT node FROM canopy_children('root') LIMIT 1), (SELECT node FROM canopy_children('root') ORDER BY position DESC LIMIT 1), 'last'));\n");
    doc.ok(&sql);
    doc.ok("SELECT hex(op) FROM canopy_ops_since(NULL) ORDER BY lamport, replica;")
}

#[test]
fn replicate_with_op_blobs_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = Doc::new(dir.path(), "a.canopy");
    let ops = ops_hex(&a, 12);
    assert_eq!(ops.len(), 13);
    // in order, one op per call
    let b = Doc::new(dir.path(), "b.canopy");
    let calls: String = ops
        .iter()
        .map(|o| format!("SELECT canopy_apply(x'{o}');\n"))
        .collect();
    let outcomes = b.ok(&calls);
    assert!(outcomes.iter().all(|o| o == "applied"), "{outcomes:?}");
    assert_eq!(b.tree(), a.tree());
    // reversed, one batch: late ops and parked ops resolve to the same tree
    let c = Doc::new(dir.path(), "c.canopy");
    let rows: Vec<String> = ops.iter().rev().map(|o| format!("(x'{o}')")).collect();
    assert_eq!(
        c.ok(&format!(
            "SELECT canopy_apply_batch(column1) FROM (VALUES {});",
            rows.join(",")
        )),
        ["13"]
    );
    assert_eq!(c.tree(), a.tree());
    // reversed, one call each (every op but the first is late or parked)
    let d = Doc::new(dir.path(), "d.canopy");
    let calls: String = ops
        .iter()
        .rev()
        .map(|o| format!("SELECT canopy_apply(x'{o}');\n"))
        .collect();
    let outcomes = d.ok(&calls);
    assert!(outcomes.contains(&"pending".to_string()), "{outcomes:?}");
    assert_eq!(d.tree(), a.tree());
    assert_eq!(
        d.ok(&format!("SELECT canopy_apply(x'{}');", ops[0])),
        ["duplicate"]
    );
    assert_eq!(d.ok("SELECT canopy_check();"), ["ok"]);
}

#[test]
fn bad_input_is_an_sql_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = Doc::new(dir.path(), "a.canopy");
    let ops = ops_hex(&a, 4);
    let b = Doc::new(dir.path(), "b.canopy");
    b.ok(&format!("SELECT canopy_apply(x'{}');", ops[0]));
    // corrupt op blobs
    b.err(
        "SELECT canopy_apply(x'01');",
        "canopy_apply: op blob 0 is not a valid op: truncated op",
    );
    let truncated = &ops[1][..ops[1].len() - 4];
    b.err(
        &format!("SELECT canopy_apply(x'{truncated}');"),
        "is not a valid op",
    );
    b.err(
        &format!("SELECT canopy_apply(x'{}00');", ops[1]),
        "trailing bytes",
    );
    b.err(
        &format!("SELECT canopy_apply(x'09{}');", &ops[1][2..]),
        "unsupported encoding version 9",
    );
    // a batch with one corrupt op applies none of it
    b.err(
        &format!(
            "SELECT canopy_apply_batch(column1) FROM (VALUES (x'{}'), (x'{}'), (x'ffff'));",
            ops[1], ops[2]
        ),
        "canopy_apply_batch: op blob 2 is not a valid op",
    );
    // an op the engine rejects (create of ROOT) rolls back the valid op before it in the batch
    let mut root_create = ops[2].clone();
    let node_at = 2 * (2 + 32 + 2); // version, kind, replica, seq and lamport varints (< 128)
    root_create.replace_range(node_at..node_at + 32, &"0".repeat(32));
    b.err(
        &format!(
            "SELECT canopy_apply_batch(column1) FROM (VALUES (x'{}'), (x'{root_create}'));",
            ops[1]
        ),
        "rejected: op targets the reserved node",
    );
    // inside INSERT/UPDATE no savepoint is possible: writing functions refuse, writing nothing
    b.err(
        &format!(
            "CREATE TABLE IF NOT EXISTS t(x);
             INSERT INTO t SELECT canopy_apply_batch(column1) FROM (VALUES (x'{}'), (x'{}'));",
            ops[1], ops[2]
        ),
        "canopy_apply_batch writes the document and cannot run inside INSERT, UPDATE or DELETE",
    );
    b.err(
        &format!("INSERT INTO t VALUES (canopy_create({ALICE}, 'root'));"),
        "canopy_create writes the document and cannot run inside INSERT",
    );
    b.ok("INSERT INTO t VALUES (1);");
    b.err(
        &format!("UPDATE t SET x = length(canopy_create({ALICE}, 'root'));"),
        "canopy_create writes the document and cannot run inside INSERT, UPDATE or DELETE",
    );
    assert_eq!(b.ok("SELECT count(*), max(x) FROM t;"), ["1|1"]);
    // the SELECT form works
    b.ok(&format!("SELECT length(canopy_create({ALICE}, 'root'));"));
    assert_eq!(b.ok("SELECT count(*) FROM canopy_children('root');"), ["2"]);
    let before = b.tree();
    let logged = b.ok("SELECT count(*) FROM canopy_ops_since(NULL);");
    // wrong argument types
    b.err(
        "SELECT canopy_apply(42);",
        "canopy_apply: argument 1 (op) must be a BLOB, got INTEGER",
    );
    b.err("SELECT canopy_apply('text');", "must be a BLOB, got TEXT");
    b.err(
        &format!("SELECT canopy_create({ALICE}, 3.5);"),
        "canopy_create: argument 2 (parent) must be a node id",
    );
    b.err(
        "SELECT canopy_create(x'01', 'root');",
        "argument 1 (replica) must be a replica key",
    );
    b.err(
        &format!("SELECT canopy_create({ALICE}, 'root', 'sideways');"),
        "argument 3 (place) must be 'first', 'last', 'after' or 'before'",
    );
    b.err(
        &format!("SELECT canopy_create({ALICE});"),
        "canopy_create: expected",
    );
    b.err(
        "SELECT * FROM canopy_ops_since(x'0102');",
        "argument 1 (frontier) must be a frontier",
    );
    // unknown nodes
    let ghost = "x'99999999999999999999999999999999'";
    b.err(
        &format!("SELECT canopy_create({ALICE}, {ghost});"),
        "canopy_create: unknown node",
    );
    b.err(
        &format!("SELECT canopy_move({ALICE}, {ghost}, 'root');"),
        "canopy_move: unknown node",
    );
    b.err(
        &format!("SELECT canopy_delete({ALICE}, {ghost});"),
        "canopy_delete: unknown node",
    );
    b.err(
        &format!("SELECT canopy_set_payload({ALICE}, {ghost}, x'00');"),
        "unknown node",
    );
    b.err(
        &format!("SELECT * FROM canopy_children({ghost});"),
        "canopy_children: unknown node",
    );
    b.err(
        &format!("SELECT * FROM canopy_subtree({ghost});"),
        "canopy_subtree: unknown node",
    );
    b.err(
        &format!("SELECT * FROM canopy_ancestors({ghost});"),
        "canopy_ancestors: unknown node",
    );
    b.err(
        &format!("SELECT canopy_payload({ghost});"),
        "canopy_payload: unknown node",
    );
    // a cycle is refused locally
    let first = b.ok("SELECT hex(node) FROM canopy_children('root') LIMIT 1;");
    b.err(
        &format!("SELECT canopy_move({ALICE}, 'root', x'{}');", first[0]),
        "reserved",
    );
    // nothing above changed the document
    assert_eq!(b.tree(), before);
    assert_eq!(b.ok("SELECT count(*) FROM canopy_ops_since(NULL);"), logged);
    assert_eq!(b.ok("SELECT canopy_check();"), ["ok"]);
}

#[test]
fn refuses_a_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let doc = Doc::new(dir.path(), "other.db");
    let out = Command::new(&doc.shell)
        .arg(&doc.path)
        .arg("CREATE TABLE t(x);")
        .output()
        .unwrap();
    assert!(out.status.success());
    doc.err("SELECT 1;", "not a Canopy document");
}
