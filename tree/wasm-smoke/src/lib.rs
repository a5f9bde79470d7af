//! wasm32 smoke test of `canopy-tree`.
//!
//! This crate is a `cdylib` for `wasm32-unknown-unknown` whose plain `extern "C"` exports drive the
//! real `canopy_tree` API: [`Tree`](canopy_tree::Tree)s on a [`MemoryStore`](canopy_tree::MemoryStore)
//! (and, with the `sqlite` feature, on an in-memory `SqliteStore`, SQLite compiled to wasm by
//! `sqlite-wasm-rs`), local creates/moves/deletes/restores/payload writes, ops delivered between
//! replicas through the wire encoding in any order, and reads. `smoke.mjs` (beside this crate's
//! `Cargo.toml`) instantiates the module under Node, runs scenarios through the exports and asserts
//! concrete results (child order, counts, payload bytes, skipped cycles, restores, convergence,
//! `check_invariants()`). No wasm-bindgen is involved, so no CLI post-processing is needed:
//!
//! ```text
//! scripts/wasm-build.sh -p canopy-wasm-smoke [--features sqlite]
//! node tree/wasm-smoke/smoke.mjs ~/.cache/canopy/target-wasm/wasm32-unknown-unknown/release/canopy_wasm_smoke.wasm [--sqlite]
//! ```
//!
//! `scripts/test.sh` runs both. With `sqlite`, SQLite's five host services (clock, randomness, sleep,
//! local time) are imports of module `env` that `sqlite-host.mjs` provides (see `build.rs`).
//!
//! [`smoke_seed`] runs the seed's benchmark workloads (as `canopy bench seed` does natively);
//! `smoke.mjs` checks their shape, and `bench.mjs` times them in wasm and prints figures:
//! `node tree/wasm-smoke/bench.mjs <module.wasm> [--runs N] [--json]`.
//!
//! # Calling convention
//!
//! Bytes go in through one input buffer and come out through one output buffer, both owned by this
//! module, so the Rust side needs no `unsafe`: the host calls [`smoke_input`] with a length, writes
//! that many bytes at the returned address, then calls an export, which reads the input and may
//! replace the output ([`smoke_output_ptr`], [`smoke_output_len`]). Every export returns a status
//! (`i32`): [`OK`], [`LIB_ERROR`] (a typed library error; its `Debug` form, variant name first, is
//! the output) or [`BAD_INPUT`] (malformed for the export: wrong length, not UTF-8, unknown handle).
//!
//! The exports are ordinary Rust functions on the native target too, so they are unit-tested here:
//!
//! ```
//! use canopy_wasm_smoke::*;
//!
//! smoke_reset();
//! assert_eq!(smoke_replica_new(STORE_MEMORY, 1), OK); // replica handle 0
//! put(b"hello");
//! assert_eq!(smoke_create(0, 0, 1, 0, 1), OK); // under ROOT (ref 0), Last, with the input as payload
//! let node = u32::from_le_bytes(output()[..4].try_into().unwrap());
//! assert_eq!(smoke_payload(0, node), OK);
//! assert_eq!(output(), b"\x01hello");
//! assert_eq!(smoke_move(0, node, node, 1, 0), LIB_ERROR); // under itself: a typed error
//! assert!(output().starts_with(b"Cycle"));
//! ```

mod ids;
mod io;
mod replica;
mod seed;

pub use ids::{
    smoke_log_key_cmp, smoke_node_id_parse, smoke_node_is_reserved, smoke_op_id_parse,
    smoke_version_vector_covers,
};
pub use io::{
    output, put, smoke_input, smoke_output_len, smoke_output_ptr, BAD_INPUT, LIB_ERROR, OK,
};
pub use replica::{
    smoke_check, smoke_children, smoke_counts, smoke_create, smoke_delete, smoke_deliver,
    smoke_dump, smoke_events, smoke_move, smoke_node_state, smoke_op_decode, smoke_parent,
    smoke_payload, smoke_replica_new, smoke_reset, smoke_restore, smoke_sent_count, smoke_sent_op,
    smoke_set_payload, smoke_store_kinds, STORE_MEMORY, STORE_SQLITE,
};
pub use seed::{smoke_seed, SEED_BULK_SIBLINGS, SEED_INSERT_CHAIN};
