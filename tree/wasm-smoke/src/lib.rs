//! wasm32 smoke test of `canopy-tree`.
//!
//! This crate is a `cdylib` for `wasm32-unknown-unknown` whose plain `extern "C"` exports drive the
//! real `canopy_tree` API; `smoke.mjs` (beside this crate's `Cargo.toml`) instantiates the module under
//! Node with no imports, runs scenarios through the exports and asserts the results. No wasm-bindgen is
//! involved, so no CLI post-processing is needed: `scripts/test.sh` builds it with
//! `scripts/wasm-build.sh` and runs `node tree/wasm-smoke/smoke.mjs <module.wasm>`.
//!
//! # Calling convention
//!
//! Bytes go in through one input buffer and come out through one output buffer, both owned by this
//! module (so the Rust side needs no `unsafe`): the host calls [`smoke_input`] with a length, writes that
//! many bytes at the returned address, then calls an export, which reads the input and may replace the
//! output ([`smoke_output_ptr`], [`smoke_output_len`]). Status codes are `i32`: `0` = ok, a positive
//! code = a typed error (its `Display` text is in the output), `-1` = the input was malformed for the
//! export (wrong length, not UTF-8).
//!
//! The same exports are ordinary Rust functions on the native target, so they are unit-tested here too:
//!
//! ```
//! use canopy_wasm_smoke::{smoke_input, smoke_node_id_parse, output};
//! let hex = "000102030405060708090a0b0c0d0e0f";
//! let dst = smoke_input(hex.len() as u32);
//! // the host (Node) writes into the module's memory; natively we do the same through the pointer
//! unsafe { std::ptr::copy_nonoverlapping(hex.as_ptr(), dst, hex.len()) };
//! assert_eq!(smoke_node_id_parse(), 0);
//! assert_eq!(output(), hex.as_bytes());
//! ```

use std::cell::RefCell;

use canopy_tree::{Lamport, LogKey, NodeId, OpId, ReplicaId, VersionVector};

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Status: success.
pub const OK: i32 = 0;
/// Status: the input is malformed for this export (wrong length, not UTF-8, unknown handle).
pub const BAD_INPUT: i32 = -1;
/// Status: the library returned a typed error; its `Display` text is in the output buffer.
pub const LIB_ERROR: i32 = 1;

/// Resizes the input buffer to `len` zero bytes and returns its address for the host to write into.
#[no_mangle]
pub extern "C" fn smoke_input(len: u32) -> *mut u8 {
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.resize(len as usize, 0);
        b.as_mut_ptr()
    })
}

/// Address of the output buffer (valid until the next export call).
#[no_mangle]
pub extern "C" fn smoke_output_ptr() -> *const u8 {
    OUTPUT.with(|b| b.borrow().as_ptr())
}

/// Length of the output buffer.
#[no_mangle]
pub extern "C" fn smoke_output_len() -> u32 {
    OUTPUT.with(|b| b.borrow().len() as u32)
}

/// A copy of the output buffer (for native callers).
pub fn output() -> Vec<u8> {
    OUTPUT.with(|b| b.borrow().clone())
}

fn input() -> Vec<u8> {
    INPUT.with(|b| b.borrow().clone())
}

fn set_output(bytes: &[u8]) {
    OUTPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.extend_from_slice(bytes);
    });
}

/// Writes `result`'s `Display` text (value or error) to the output and returns the status.
fn report<T: std::fmt::Display, E: std::fmt::Display>(result: Result<T, E>) -> i32 {
    match result {
        Ok(v) => {
            set_output(v.to_string().as_bytes());
            OK
        }
        Err(e) => {
            set_output(e.to_string().as_bytes());
            LIB_ERROR
        }
    }
}

fn input_str() -> Option<String> {
    String::from_utf8(input()).ok()
}

/// A replica id made of one repeated byte (replica `n` of a scenario).
fn replica(n: u32) -> ReplicaId {
    ReplicaId::from_bytes([n as u8; 32])
}

/// Parses the input as a hex [`NodeId`]; output: its `Display` (round trip) or the parse error.
#[no_mangle]
pub extern "C" fn smoke_node_id_parse() -> i32 {
    match input_str() {
        Some(s) => report(s.parse::<NodeId>()),
        None => BAD_INPUT,
    }
}

/// Parses the input as an [`OpId`] (`replicahex@seq`); output: its `Display` or the parse error.
#[no_mangle]
pub extern "C" fn smoke_op_id_parse() -> i32 {
    match input_str() {
        Some(s) => report(s.parse::<OpId>()),
        None => BAD_INPUT,
    }
}

/// 1 if the 16 input bytes are a reserved node id (ROOT, TRASH), 0 if not, -1 if not 16 bytes.
#[no_mangle]
pub extern "C" fn smoke_node_is_reserved() -> i32 {
    match <[u8; 16]>::try_from(input().as_slice()) {
        Ok(b) => i32::from(NodeId::from_bytes(b).is_reserved()),
        Err(_) => BAD_INPUT,
    }
}

/// Compares two ops' places in the total order `(lamport, replica)`: -1, 0 or 1.
#[no_mangle]
pub extern "C" fn smoke_log_key_cmp(
    lamport_a: u64,
    replica_a: u32,
    lamport_b: u64,
    replica_b: u32,
) -> i32 {
    let a = LogKey::new(Lamport::new(lamport_a), replica(replica_a));
    let b = LogKey::new(Lamport::new(lamport_b), replica(replica_b));
    a.cmp(&b) as i32
}

/// Builds a version vector from the input (pairs of little-endian `u32` replica, `u32` seq, each
/// replica a repeated byte) and says whether it covers op `(replica, seq)`: 1/0, -1 if malformed.
#[no_mangle]
pub extern "C" fn smoke_version_vector_covers(replica_n: u32, seq: u64) -> i32 {
    let bytes = input();
    if bytes.len() % 8 != 0 {
        return BAD_INPUT;
    }
    let vv: VersionVector = bytes
        .chunks_exact(8)
        .map(|c| {
            let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let s = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            (replica(r), u64::from(s))
        })
        .collect();
    i32::from(vv.covers(&OpId::new(replica(replica_n), seq)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(bytes: &[u8]) {
        let dst = smoke_input(bytes.len() as u32);
        // SAFETY: `smoke_input` returned a buffer of exactly `bytes.len()` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
    }

    #[test]
    fn ids_round_trip_and_errors() {
        put(b"ffffffffffffffffffffffffffffffff");
        assert_eq!(smoke_node_id_parse(), OK);
        assert_eq!(output(), b"ffffffffffffffffffffffffffffffff");
        put(b"zz");
        assert_eq!(smoke_node_id_parse(), LIB_ERROR);
        assert!(!output().is_empty());
        put(&[0xff, 0xfe]);
        assert_eq!(smoke_node_id_parse(), BAD_INPUT);
        put(format!("{}@0", replica(7)).as_bytes());
        assert_eq!(smoke_op_id_parse(), LIB_ERROR);
    }

    #[test]
    fn order_and_coverage() {
        assert_eq!(smoke_log_key_cmp(1, 9, 2, 1), -1);
        assert_eq!(smoke_log_key_cmp(2, 1, 2, 9), -1);
        assert_eq!(smoke_log_key_cmp(2, 9, 2, 9), 0);
        put(&[[1, 0, 0, 0, 5, 0, 0, 0], [2, 0, 0, 0, 1, 0, 0, 0]].concat());
        assert_eq!(smoke_version_vector_covers(1, 5), 1);
        assert_eq!(smoke_version_vector_covers(1, 6), 0);
        assert_eq!(smoke_version_vector_covers(3, 1), 0);
        put(&[0; 16]);
        assert_eq!(smoke_node_is_reserved(), 1);
        put(&[1; 16]);
        assert_eq!(smoke_node_is_reserved(), 0);
        put(&[0; 15]);
        assert_eq!(smoke_node_is_reserved(), BAD_INPUT);
    }
}
