//! Exports over the id and op model types (no tree needed).

use canopy_tree::{Lamport, LogKey, NodeId, OpId, VersionVector};

use crate::io::{input, input_str, replica, report, BAD_INPUT};

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
    use crate::io::{output, put, LIB_ERROR, OK};

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
