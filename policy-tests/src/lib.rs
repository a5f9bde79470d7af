//! Canopy policy tests: runs scenario files (a tree, principals, delegations, revocations, ops and
//! expectations) against the authorized apply. The scenario format is `spec/policy-tests.md`
//! (issue 5); this crate holds no code until the authorized apply exists.
