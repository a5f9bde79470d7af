//! Runs the shipped scenarios, and checks that wrong expectations and malformed files fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use canopy_policy_tests::{collect, run, run_files, Scenario, ScenarioErrorKind};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_scenarios_pass() {
    let files = collect(&[crate_dir().join("scenarios")]).unwrap();
    assert!(files.len() >= 40, "only {} scenarios", files.len());
    let mut out = Vec::new();
    let sum = run_files(&files, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(sum.failed, 0, "{text}");
    assert_eq!(sum.passed, files.len());
    assert_eq!(text.lines().count(), files.len() + 1);
    assert_eq!(
        text.lines().last().unwrap(),
        format!("{} passed, 0 failed", files.len())
    );
}

#[test]
fn wrong_expectations_are_reported() {
    let path = crate_dir().join("tests/fixtures/wrong-expectations.toml");
    let s = Scenario::load(&path).unwrap();
    let r = run(&s);
    assert!(!r.passed());
    let f = &r.failures;
    // every wrong expectation, and nothing else (the replicas agree)
    assert_eq!(f.len(), 5, "{f:#?}");
    assert!(
        f[0].starts_with("op inside: expected deny, got allow"),
        "{f:#?}"
    );
    assert!(f[1].starts_with("op outside: expected deny:Expired, got deny:MatchError"));
    assert!(f[2].starts_with("tree: expected"));
    assert!(f[3].starts_with("payload of note: expected Some(\"wrong\"), got Some(\"real\")"));
    assert!(
        f[4].starts_with("read[0] (alice with /tree/read/structure): expected [\"docs\"], got []")
    );
    assert!(r
        .to_string()
        .starts_with("FAIL  wrong-expectations\n  - op inside"));
}

#[test]
fn malformed_files_are_failed_cases() {
    let path = crate_dir().join("tests/fixtures/malformed.toml");
    let e = Scenario::load(&path).unwrap_err();
    assert_eq!(e.field, "op[0].parent");
    assert!(matches!(
        *e.kind,
        ScenarioErrorKind::Unknown { what: "node", .. }
    ));
    let mut out = Vec::new();
    let sum = run_files(&[path, PathBuf::from("does/not/exist.toml")], &mut out).unwrap();
    assert_eq!((sum.passed, sum.failed), (0, 2));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("malformed.toml: case malformed: op[0].parent: unknown node \"nowhere\""),
        "{text}"
    );
    assert!(text.contains("exist.toml: -: cannot read"), "{text}");
    assert!(text.ends_with("0 passed, 2 failed\n"));
}

#[test]
fn cli_exit_status_and_closing_line() {
    let bin = env!("CARGO_BIN_EXE_policy-tests");
    let fail = Command::new(bin)
        .arg(crate_dir().join("tests/fixtures"))
        .output()
        .unwrap();
    assert_eq!(fail.status.code(), Some(1));
    let text = String::from_utf8(fail.stdout).unwrap();
    assert_eq!(text.lines().last(), Some("0 passed, 2 failed"));

    let one = crate_dir().join("scenarios/subtree-create.toml");
    let ok = Command::new(bin).arg(&one).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let text = String::from_utf8(ok.stdout).unwrap();
    assert_eq!(text.lines().last(), Some("1 passed, 0 failed"));

    let usage = Command::new(bin).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn spec_coverage_table_names_shipped_scenarios() {
    let spec = std::fs::read_to_string(crate_dir().join("../spec/policy-tests.md")).unwrap();
    let table = spec
        .split("## Coverage of `spec/caps.md`")
        .nth(1)
        .expect("coverage section");
    let mut named = 0;
    for row in table.lines().filter(|l| l.starts_with("| §")) {
        let cell = row.rsplit('|').nth(1).unwrap();
        for name in cell.split(',').map(|n| n.trim().trim_matches('`')) {
            let file = crate_dir().join(format!("scenarios/{name}.toml"));
            assert!(file.is_file(), "spec names {name}, not a shipped scenario");
            named += 1;
        }
    }
    assert!(named >= 40, "{named}");
}
