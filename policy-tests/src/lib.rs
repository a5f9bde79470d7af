//! Canopy policy tests: runs scenario files against the real authorized apply.
//!
//! A scenario (TOML, format in `spec/policy-tests.md`) gives a starting tree, principals,
//! delegations (minted at run time from declarative specs: issuer, audience, command, subtree
//! root, exclusions, expiry, not-before, re-delegation), revocations (delegation + per-replica
//! cutoffs), ops by principals (optionally concurrent, with delivery orders, optionally
//! tampered), and expectations: each op allowed or denied (with the reason class), the final
//! tree as an outline, payloads, and what a principal may read.
//!
//! [`run`] delivers a scenario to several fresh [`canopy_caps::Authz`] replicas (verified
//! ingest + authorized apply), in several orders and on both stores, requires them to converge,
//! and checks the expectations against the converged state. The `policy-tests` binary and
//! `canopy policy test` print one line per case and `N passed, M failed`.
//!
//! ```
//! use std::path::Path;
//! use canopy_policy_tests::{run, Scenario};
//!
//! let text = r#"
//! description = "alice writes inside docs only"
//! principals = ["alice"]
//! tree = """
//! docs
//! private
//! """
//!
//! [[delegation]]
//! name = "g"
//! issuer = "owner"
//! audience = "alice"
//! command = "/tree/write"
//! root = "docs"
//!
//! [[op]]
//! name = "inside"
//! by = "alice"
//! chain = "g"
//! create = "note"
//! parent = "docs"
//! expect = "allow"
//!
//! [[op]]
//! name = "outside"
//! by = "alice"
//! chain = "g"
//! create = "leak"
//! parent = "private"
//! expect = "deny:MatchError"
//!
//! [[read]]
//! principal = "alice"
//! chain = "g"
//! visible = []          # a write grant reads nothing
//!
//! [expect]
//! tree = """
//! docs
//!   note
//! private
//! """
//! "#;
//! let scenario = Scenario::parse(Path::new("example.toml"), text)?;
//! let result = run(&scenario);
//! assert!(result.passed(), "{result}");
//! assert_eq!(result.to_string(), "ok    example (6 replicas agree)");
//!
//! // A wrong expectation is reported, with what actually happened.
//! let wrong = Scenario::parse(Path::new("wrong.toml"), &text.replace("deny:MatchError", "allow"))?;
//! let result = run(&wrong);
//! assert_eq!(result.failures, ["op outside: expected allow, got deny:MatchError"]);
//! # Ok::<(), canopy_policy_tests::ScenarioError>(())
//! ```

mod outline;
mod runner;
mod scenario;

pub use outline::{is_name, Outline, OutlineError, OutlineNode};
pub use runner::{
    collect, denial_class, ingest_class, node_id, principal_key, run, run_files, CaseResult,
    Summary,
};
pub use scenario::{
    ChainSpec, Cutoff, DelegationSpec, Expectations, Item, OpExpect, OpSpec, OpSpecKind, ReadSpec,
    RevocationSpec, Scenario, ScenarioError, ScenarioErrorKind, Tamper, DEFAULT_TIME, OWNER, ROOT,
};
