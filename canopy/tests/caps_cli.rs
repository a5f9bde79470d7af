//! Smoke tests of `canopy key|token|share|ucan` against the built binary.

use std::path::Path;
use std::process::{Command, Output};

fn canopy(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the canopy binary runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = canopy(dir, args);
    assert!(
        out.status.success(),
        "canopy {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = canopy(dir, args);
    assert!(!out.status.success(), "canopy {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const FOLDER: &str = "0101010101010101010101010101010a";
const CHILD: &str = "0202020202020202020202020202020b";
const ROOT: &str = "00000000000000000000000000000000";

#[test]
fn keys_tokens_and_share_links() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let owner = ok(d, &["key", "new", "--out", "owner.key"])
        .trim()
        .to_owned();
    assert!(owner.starts_with("did:key:z6Mk"));
    assert_eq!(ok(d, &["key", "show", "owner.key"]).trim(), owner);
    // Never overwrite a key.
    fails(d, &["key", "new", "--out", "owner.key"]);
    let key_text = std::fs::read_to_string(d.join("owner.key")).unwrap();
    assert!(!ok(d, &["key", "show", "owner.key"]).contains(&key_text[key_text.len() - 20..]));
    let alice = ok(d, &["key", "new", "--out", "alice.key"])
        .trim()
        .to_owned();

    // Delegate /tree on a folder to Alice, inspect and verify.
    let args = [
        "token",
        "delegate",
        "--key",
        "owner.key",
        "--to",
        &alice,
        "--cmd",
        "/tree",
        "--subtree",
        FOLDER,
        "--expires-in",
        "3600",
        "--out",
        "alice.chain",
    ];
    ok(d, &args);
    let json: serde_json::Value =
        serde_json::from_str(&ok(d, &["token", "inspect", "alice.chain"])).unwrap();
    assert_eq!(json[0]["payload"]["aud"], alice.as_str());
    assert_eq!(json[0]["payload"]["sub"], owner.as_str());
    assert_eq!(json[0]["signature_valid"], true);
    assert_eq!(json[0]["kind"], "delegation");
    let inside = format!("{FOLDER},{ROOT}");
    let out = ok(
        d,
        &[
            "token",
            "verify",
            "alice.chain",
            "--cmd",
            "/tree/write/move",
            "--node",
            CHILD,
            "--ancestors",
            &inside,
        ],
    );
    assert!(out.starts_with("valid:"), "{out}");
    let err = fails(
        d,
        &[
            "token",
            "verify",
            "alice.chain",
            "--cmd",
            "/tree/write/move",
            "--node",
            CHILD,
            "--ancestors",
            ROOT,
        ],
    );
    assert!(err.contains("MatchError"), "{err}");
    let err = fails(
        d,
        &["token", "verify", "alice.chain", "--at", "99999999999"],
    );
    assert!(err.contains("Expired"), "{err}");

    // Alice shares read access by link; Bob claims it.
    let bob = ok(d, &["key", "new", "--out", "bob.key"]).trim().to_owned();
    let url = ok(
        d,
        &[
            "share",
            "create",
            "--key",
            "alice.key",
            "--proof",
            "alice.chain",
            "--cmd",
            "/tree/read",
            "--subtree",
            FOLDER,
            "--expires-in",
            "600",
            "--base",
            "https://canopy.example/d/1",
        ],
    );
    let url = url.trim();
    assert!(url.starts_with("https://canopy.example/d/1#canopy-share-v1."));
    ok(
        d,
        &[
            "share",
            "claim",
            url,
            "--key",
            "bob.key",
            "--owner",
            &owner,
            "--out",
            "bob.chain",
            "--revocation-out",
            "bob.rev",
        ],
    );
    let out = ok(
        d,
        &[
            "token",
            "verify",
            "bob.chain",
            "--cmd",
            "/tree/read/payload",
            "--node",
            FOLDER,
            "--ancestors",
            ROOT,
            "--revocation",
            "bob.rev",
        ],
    );
    assert!(out.contains(&bob), "{out}");
    let rev: serde_json::Value =
        serde_json::from_str(&ok(d, &["token", "inspect", "bob.rev"])).unwrap();
    assert_eq!(rev[0]["kind"], "revocation");
    assert_eq!(rev[0]["keep"].as_array().map(Vec::len), Some(1));
    // Wrong document, tampered link.
    let err = fails(
        d,
        &[
            "share",
            "claim",
            url,
            "--key",
            "bob.key",
            "--owner",
            &bob,
            "--out",
            "x1",
            "--revocation-out",
            "x2",
        ],
    );
    assert!(err.contains("document"), "{err}");
    let tampered = format!("{}A", &url[..url.len() - 1]);
    fails(
        d,
        &[
            "share",
            "claim",
            &tampered,
            "--key",
            "bob.key",
            "--out",
            "x3",
            "--revocation-out",
            "x4",
        ],
    );
    // A second claim's chain is dead once the first claim's revocation is known.
    let carol = ok(d, &["key", "new", "--out", "carol.key"])
        .trim()
        .to_owned();
    ok(
        d,
        &[
            "share",
            "claim",
            url,
            "--key",
            "carol.key",
            "--out",
            "carol.chain",
            "--revocation-out",
            "carol.rev",
        ],
    );
    let err = fails(
        d,
        &[
            "token",
            "verify",
            "carol.chain",
            "--cmd",
            "/tree/read",
            "--node",
            FOLDER,
            "--ancestors",
            ROOT,
            "--revocation",
            "bob.rev",
        ],
    );
    assert!(err.contains("Revoked"), "{err}");
    assert!(!carol.is_empty());
    // Bob cannot mint a link on a chain that was not delegated to him.
    let err = fails(
        d,
        &[
            "share",
            "create",
            "--key",
            "bob.key",
            "--proof",
            "alice.chain",
            "--cmd",
            "/tree/read",
            "--expires-in",
            "60",
        ],
    );
    assert!(err.contains("InvalidAudience"), "{err}");
}

#[test]
fn ucan_fixture_runner() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = [
        root.join("../shared/vectors/ucan-1.0.0/delegation.json"),
        root.join("../shared/vectors/ucan-1.0.0/policy.json"),
        root.join("spec/vectors/ucan/invocation.json"),
    ];
    let mut args = vec!["ucan", "fixtures"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = ok(&root, &args);
    assert_eq!(out.lines().last(), Some("46 passed, 0 failed"), "{out}");
    assert_eq!(out.lines().count(), 47);

    // A fixture whose expectation is wrong makes the runner fail.
    let tmp = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(&files[2])
            .unwrap()
            .replacen("\"MatchError\"", "\"Expired\"", 1);
    std::fs::write(tmp.path().join("bad.json"), text).unwrap();
    let out = canopy(tmp.path(), &["ucan", "fixtures", "bad.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("19 passed, 1 failed\n"));
}
