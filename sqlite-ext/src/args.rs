//! Reading `canopy_*` arguments: node ids, replica keys, placements, frontiers.

use canopy_tree::{NodeId, ReplicaId, VersionVector};
use rusqlite::types::ValueRef;

use crate::error::ExtError;

/// SQL type name of a value, for error messages.
pub fn type_name(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(_) => "INTEGER".into(),
        ValueRef::Real(_) => "REAL".into(),
        ValueRef::Text(t) => format!("TEXT of {} bytes", t.len()),
        ValueRef::Blob(b) => format!("BLOB of {} bytes", b.len()),
    }
}

/// A fixed-size id from a BLOB of `N` bytes or TEXT of `2N` hex digits.
fn fixed<const N: usize>(v: ValueRef<'_>) -> Option<[u8; N]> {
    match v {
        ValueRef::Blob(b) => b.try_into().ok(),
        ValueRef::Text(t) if t.len() == 2 * N => {
            let mut out = [0u8; N];
            for (i, o) in out.iter_mut().enumerate() {
                let hex = std::str::from_utf8(&t[2 * i..2 * i + 2]).ok()?;
                *o = u8::from_str_radix(hex, 16).ok()?;
            }
            Some(out)
        }
        _ => None,
    }
}

/// Where an argument came from, for error messages.
#[derive(Clone, Copy, Debug)]
pub struct At {
    pub func: &'static str,
    pub arg: usize,
    pub name: &'static str,
}

impl At {
    fn err(self, expected: &'static str, v: ValueRef<'_>) -> ExtError {
        ExtError::Arg {
            func: self.func,
            arg: self.arg,
            name: self.name,
            expected,
            got: type_name(v),
        }
    }

    /// A node id: 16-byte BLOB, 32 hex digits, or the text 'root' / 'trash'.
    pub fn node(self, v: ValueRef<'_>) -> Result<NodeId, ExtError> {
        match v {
            ValueRef::Text(b"root") => Ok(NodeId::ROOT),
            ValueRef::Text(b"trash") => Ok(NodeId::TRASH),
            _ => fixed::<16>(v).map(NodeId::from_bytes).ok_or_else(|| {
                self.err(
                    "a node id (16-byte BLOB, 32 hex digits, 'root' or 'trash')",
                    v,
                )
            }),
        }
    }

    /// A replica key: 32-byte BLOB or 64 hex digits.
    pub fn replica(self, v: ValueRef<'_>) -> Result<ReplicaId, ExtError> {
        fixed::<32>(v)
            .map(ReplicaId::from_bytes)
            .ok_or_else(|| self.err("a replica key (32-byte BLOB or 64 hex digits)", v))
    }

    /// A BLOB (payload or op bytes).
    pub fn blob<'a>(self, v: ValueRef<'a>) -> Result<&'a [u8], ExtError> {
        match v {
            ValueRef::Blob(b) => Ok(b),
            _ => Err(self.err("a BLOB", v)),
        }
    }

    /// An optional BLOB (NULL: none).
    pub fn opt_blob<'a>(self, v: ValueRef<'a>) -> Result<Option<&'a [u8]>, ExtError> {
        match v {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) => Ok(Some(b)),
            _ => Err(self.err("a BLOB or NULL", v)),
        }
    }

    /// A placement keyword: 'first', 'last', 'after' or 'before'.
    pub fn place_kind(self, v: ValueRef<'_>) -> Result<PlaceKind, ExtError> {
        match v {
            ValueRef::Text(b"first") => Ok(PlaceKind::First),
            ValueRef::Text(b"last") => Ok(PlaceKind::Last),
            ValueRef::Text(b"after") => Ok(PlaceKind::After),
            ValueRef::Text(b"before") => Ok(PlaceKind::Before),
            _ => Err(self.err("'first', 'last', 'after' or 'before'", v)),
        }
    }

    /// A frontier: BLOB of 40-byte entries (replica key, big-endian u64 seq); empty or NULL: none.
    pub fn frontier(self, v: ValueRef<'_>) -> Result<VersionVector, ExtError> {
        let b = match v {
            ValueRef::Null => return Ok(VersionVector::new()),
            ValueRef::Blob(b) if b.len() % 40 == 0 => b,
            _ => {
                return Err(self.err(
                    "a frontier (BLOB of 40-byte entries, as canopy_frontier() returns)",
                    v,
                ))
            }
        };
        Ok(b.chunks_exact(40)
            .map(|e| {
                let mut r = [0u8; 32];
                r.copy_from_slice(&e[..32]);
                let mut s = [0u8; 8];
                s.copy_from_slice(&e[32..]);
                (ReplicaId::from_bytes(r), u64::from_be_bytes(s))
            })
            .collect())
    }
}

/// A placement keyword (the sibling comes in the next argument).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlaceKind {
    First,
    Last,
    After,
    Before,
}

/// Encodes a frontier as `canopy_frontier()` returns it.
pub fn encode_frontier(v: &VersionVector) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 40);
    for (r, s) in v.iter() {
        out.extend_from_slice(r.as_bytes());
        out.extend_from_slice(&s.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spec/vectors/sqlite.json`, "frontier": the BLOB `canopy_frontier()` returns and
    /// `canopy_ops_since` takes.
    #[test]
    fn frontier_vectors() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../spec/vectors/sqlite.json")).unwrap();
        for v in doc["frontier"].as_array().unwrap() {
            let expected: VersionVector = v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["replica"].as_str().unwrap().parse::<ReplicaId>().unwrap(),
                        e["seq"].as_u64().unwrap(),
                    )
                })
                .collect();
            let blob = hex::decode(v["hex"].as_str().unwrap()).unwrap();
            assert_eq!(encode_frontier(&expected), blob);
            let at = At {
                func: "t",
                arg: 1,
                name: "frontier",
            };
            assert_eq!(at.frontier(ValueRef::Blob(&blob)).unwrap(), expected);
            assert!(at.frontier(ValueRef::Blob(&blob[1..])).is_err());
            assert!(at.frontier(ValueRef::Text(b"x")).is_err());
        }
    }

    #[test]
    fn node_arguments() {
        let at = At {
            func: "t",
            arg: 1,
            name: "node",
        };
        assert_eq!(at.node(ValueRef::Text(b"root")).unwrap(), NodeId::ROOT);
        assert_eq!(at.node(ValueRef::Blob(&[0xff; 16])).unwrap(), NodeId::TRASH);
        let hex = b"0102030405060708090a0b0c0d0e0f10";
        assert_eq!(at.node(ValueRef::Text(hex)).unwrap().as_bytes()[15], 0x10);
        assert!(at.node(ValueRef::Text(b"0102")).is_err());
        assert!(at
            .node(ValueRef::Text(b"zz02030405060708090a0b0c0d0e0f10"))
            .is_err());
        assert!(at.node(ValueRef::Integer(1)).is_err());
        assert!(at.node(ValueRef::Blob(&[0; 15])).is_err());
    }
}
