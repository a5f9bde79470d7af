//! `spec/vectors/ops.json` and codec properties.

use canopy_tree::{Lamport, NodeId, Op, OpId, OpKind, Position, ReplicaId, VersionVector};
use proptest::prelude::*;
use serde_json::Value;

use crate::common::arb_op;

fn op_from_json(v: &Value) -> Op {
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}"));
    let node = |k: &str| s(k).parse::<NodeId>().unwrap();
    let bytes = |k: &str| hex::decode(s(k)).unwrap();
    let replica: ReplicaId = s("replica").parse().unwrap();
    let id = OpId::new(replica, v["seq"].as_u64().unwrap());
    let lamport = Lamport::new(v["lamport"].as_u64().unwrap());
    let kind = match s("kind") {
        "create" => OpKind::Create {
            node: node("node"),
            parent: node("parent"),
            position: Position::try_from_bytes(&bytes("position")).unwrap(),
            payload: v["payload"].as_str().map(|p| hex::decode(p).unwrap()),
        },
        "move" => OpKind::Move {
            node: node("node"),
            parent: node("parent"),
            position: Position::try_from_bytes(&bytes("position")).unwrap(),
        },
        "delete" => OpKind::Delete {
            node: node("node"),
            seen: v["seen"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e[0].as_str().unwrap().parse::<ReplicaId>().unwrap(),
                        e[1].as_u64().unwrap(),
                    )
                })
                .collect::<VersionVector>(),
        },
        "set-payload" => OpKind::SetPayload {
            node: node("node"),
            payload: bytes("payload"),
        },
        other => panic!("unknown kind {other}"),
    };
    Op::new(id, lamport, kind)
}

fn error_name(e: &canopy_tree::DecodeError) -> String {
    let dbg = format!("{e:?}");
    let head: String = dbg.chars().take_while(|c| c.is_alphanumeric()).collect();
    if head == "Position" {
        let inner: String = dbg["Position(".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        format!("Position.{inner}")
    } else {
        head
    }
}

#[test]
fn spec_vectors() {
    let text = include_str!("../../../spec/vectors/ops.json");
    let v: Value = serde_json::from_str(text).unwrap();
    let valid = v["valid"].as_array().unwrap();
    let invalid = v["invalid"].as_array().unwrap();
    assert!(valid.len() >= 8 && invalid.len() >= 15);
    for case in valid {
        let name = case["name"].as_str().unwrap();
        let op = op_from_json(&case["op"]);
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        assert_eq!(op.encode(), bytes, "encode {name}");
        assert_eq!(Op::decode(&bytes).unwrap(), op, "decode {name}");
    }
    for case in invalid {
        let name = case["name"].as_str().unwrap();
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        let err = Op::decode(&bytes).expect_err(name);
        assert_eq!(error_name(&err), case["error"].as_str().unwrap(), "{name}");
    }
}

proptest! {
    #[test]
    fn encode_decode_round_trip(op in arb_op()) {
        let bytes = op.encode();
        prop_assert_eq!(Op::decode(&bytes).unwrap(), op);
        // Any strict prefix is truncated; any extension has trailing bytes.
        if bytes.len() > 1 {
            prop_assert!(Op::decode(&bytes[..bytes.len() - 1]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Op::decode(&longer).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(op) = Op::decode(&bytes) {
            // Whatever decodes is canonical: it re-encodes to the same bytes.
            prop_assert_eq!(op.encode(), bytes);
        }
    }

    #[test]
    fn mutated_ops_never_panic(op in arb_op(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = op.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(op) = Op::decode(&bytes) {
            prop_assert_eq!(op.encode(), bytes);
        }
    }

    #[test]
    fn position_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        match Position::try_from_bytes(&bytes) {
            Ok(p) => prop_assert_eq!(p.as_bytes(), &bytes[..]),
            Err(_) => prop_assert!(bytes.is_empty() || bytes.len() > 64 || bytes.last() == Some(&0)),
        }
    }
}
