//! Canopy policy tests: runs scenario files (a tree, principals, delegations, revocations, ops and
//! expectations) against the authorized apply. The scenario format is `spec/policy-tests.md`.
mod outline;
mod runner;
mod scenario;

pub use outline::{is_name, Outline, OutlineError, OutlineNode};
pub use runner::{
    collect, denial_class, ingest_class, node_id, principal_key, run, run_files, CaseResult,
    Summary,
};
pub use scenario::*;
