//! Canopy sync: the sans-IO reconciliation protocol between two replicas.
//!
//! This crate is the home of the protocol described in `spec/sync.md` (issue 6). It holds no code
//! yet; the tree, storage and capability layers it builds on land first.
