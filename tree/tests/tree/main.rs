//! Integration tests of `canopy_tree` (one binary): spec vectors and codec properties, delete
//! scenarios (`spec/delete.md`), multi-replica convergence.

mod adversarial;
mod common;
mod convergence;
mod delete;
mod late;
mod vectors;
