//! Integration tests for `canopy-caps`: UCAN fixture conformance, chain validation (one negative
//! case per error variant), revocation, share links, attenuation and decoder robustness.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use canopy_caps::fixtures;
use canopy_caps::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn run_fixture(path: PathBuf) -> Vec<fixtures::CaseResult> {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let results = fixtures::run(&text, now()).unwrap();
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{}: {failed:#?}", path.display());
    results
}

#[test]
fn ucan_delegation_fixture() {
    let r = run_fixture(repo().join("../shared/vectors/ucan-1.0.0/delegation.json"));
    assert_eq!(r.len(), 1);
}

#[test]
fn ucan_policy_fixture() {
    let r = run_fixture(repo().join("../shared/vectors/ucan-1.0.0/policy.json"));
    // 6 valid groups with 17 policies, 4 invalid groups with 8 policies.
    assert_eq!(r.len(), 25, "{r:#?}");
}

#[test]
fn ucan_invocation_fixture() {
    let r = run_fixture(repo().join("spec/vectors/ucan/invocation.json"));
    assert_eq!(r.len(), 20);
}

#[test]
fn fixture_runner_reports_details() {
    let text = std::fs::read_to_string(repo().join("spec/vectors/ucan/invocation.json")).unwrap();
    for r in fixtures::run(&text, now()).unwrap() {
        println!("{} -> {}", r.name, r.detail);
    }
    // A fixture file whose expectation is wrong must fail: flip one expected error class.
    let flipped = text.replacen("\"name\": \"InvalidClaim\"", "\"name\": \"Expired\"", 1);
    let results = fixtures::run(&flipped, now()).unwrap();
    assert_eq!(results.iter().filter(|r| !r.passed).count(), 1);
    assert!(fixtures::run("{\"valid\": [{\"x\": 1}]}", now()).is_err());
}
