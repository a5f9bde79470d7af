//! Binary form of an op's undo records (column `ops.undo`, `spec/sqlite.md`).
//!
//! ```text
//! undo    = record*
//! record  = 0x00 node prior-placement | 0x01 node prior-payload
//! prior-placement = 0x00 | 0x01 parent:16 varint(len) position replica:32 varint(seq)
//! prior-payload   = 0x00 | 0x01 varint(len) bytes replica:32 varint(seq)
//! ```
//! Node ids are 16 bytes, varints are unsigned LEB128 (at most 10 bytes, minimal not required).

use crate::codec::{put_varint, read_varint, VarintError};
use crate::id::{NodeId, OpId, ReplicaId};
use crate::position::Position;
use crate::store::{PayloadRecord, Placement, Undo};

/// Why an undo blob did not decode. The blob was written by this code, so any of these means the
/// database was changed behind the store's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UndoDecodeError {
    /// The blob ended inside a record.
    #[error("undo record truncated at byte {offset}")]
    Truncated { offset: usize },
    /// A tag or presence byte had an unknown value.
    #[error("unknown tag {tag:#04x} at byte {offset}")]
    Tag { tag: u8, offset: usize },
    /// A varint was not minimal, was longer than 10 bytes or overflowed 64 bits.
    #[error("bad varint at byte {offset}")]
    Varint { offset: usize },
    /// A sequence number was 0.
    #[error("zero sequence number at byte {offset}")]
    ZeroSeq { offset: usize },
}

fn put_op_id(out: &mut Vec<u8>, id: &OpId) {
    out.extend_from_slice(id.replica().as_bytes());
    put_varint(out, id.seq());
}

/// Encodes undo records.
pub(crate) fn encode(undo: &[Undo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(undo.len() * 64);
    for u in undo {
        match u {
            Undo::Placement { node, prior } => {
                out.push(0);
                out.extend_from_slice(node.as_bytes());
                match prior {
                    None => out.push(0),
                    Some(p) => {
                        out.push(1);
                        out.extend_from_slice(p.parent.as_bytes());
                        put_varint(&mut out, p.position.as_bytes().len() as u64);
                        out.extend_from_slice(p.position.as_bytes());
                        put_op_id(&mut out, &p.placed_by);
                    }
                }
            }
            Undo::Payload { node, prior } => {
                out.push(1);
                out.extend_from_slice(node.as_bytes());
                match prior {
                    None => out.push(0),
                    Some(p) => {
                        out.push(1);
                        put_varint(&mut out, p.bytes.len() as u64);
                        out.extend_from_slice(&p.bytes);
                        put_op_id(&mut out, &p.set_by);
                    }
                }
            }
        }
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], UndoDecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(UndoDecodeError::Truncated { offset: self.at })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn byte(&mut self) -> Result<u8, UndoDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> Result<u64, UndoDecodeError> {
        let offset = self.at;
        let (v, used) = read_varint(&self.b[offset..]).map_err(|e| match e {
            VarintError::Truncated => UndoDecodeError::Truncated { offset },
            VarintError::Overlong | VarintError::Overflow => UndoDecodeError::Varint { offset },
        })?;
        self.at += used;
        Ok(v)
    }
    fn node(&mut self) -> Result<NodeId, UndoDecodeError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(NodeId::from_bytes(a))
    }
    fn op_id(&mut self) -> Result<OpId, UndoDecodeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        let offset = self.at;
        let seq = self.varint()?;
        if seq == 0 {
            return Err(UndoDecodeError::ZeroSeq { offset });
        }
        Ok(OpId::new(ReplicaId::from_bytes(a), seq))
    }
    fn len_bytes(&mut self) -> Result<&'a [u8], UndoDecodeError> {
        let offset = self.at;
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| UndoDecodeError::Truncated { offset })?;
        self.take(n)
    }
    fn present(&mut self) -> Result<bool, UndoDecodeError> {
        let offset = self.at;
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(UndoDecodeError::Tag { tag, offset }),
        }
    }
}

/// Decodes undo records written by [`encode`].
pub(crate) fn decode(b: &[u8]) -> Result<Vec<Undo>, UndoDecodeError> {
    let mut r = Reader { b, at: 0 };
    let mut out = Vec::new();
    while r.at < b.len() {
        let offset = r.at;
        let tag = r.byte()?;
        let node = r.node()?;
        out.push(match tag {
            0 => {
                let prior = if r.present()? {
                    let parent = r.node()?;
                    let position = Position::from_bytes(r.len_bytes()?);
                    let placed_by = r.op_id()?;
                    Some(Placement {
                        parent,
                        position,
                        placed_by,
                    })
                } else {
                    None
                };
                Undo::Placement { node, prior }
            }
            1 => {
                let prior = if r.present()? {
                    let bytes = r.len_bytes()?.to_vec();
                    let set_by = r.op_id()?;
                    Some(PayloadRecord { bytes, set_by })
                } else {
                    None
                };
                Undo::Payload { node, prior }
            }
            tag => return Err(UndoDecodeError::Tag { tag, offset }),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_op_id() -> impl Strategy<Value = OpId> {
        (any::<[u8; 32]>(), 1u64..=u64::MAX)
            .prop_map(|(r, s)| OpId::new(ReplicaId::from_bytes(r), s))
    }

    fn arb_undo() -> impl Strategy<Value = Undo> {
        let node = any::<[u8; 16]>().prop_map(NodeId::from_bytes);
        let placement = (
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..20),
            arb_op_id(),
        )
            .prop_map(|(p, pos, by)| Placement {
                parent: NodeId::from_bytes(p),
                position: Position::from_bytes(&pos),
                placed_by: by,
            });
        let payload = (proptest::collection::vec(any::<u8>(), 0..300), arb_op_id())
            .prop_map(|(bytes, set_by)| PayloadRecord { bytes, set_by });
        prop_oneof![
            (node.clone(), proptest::option::of(placement))
                .prop_map(|(node, prior)| Undo::Placement { node, prior }),
            (node, proptest::option::of(payload))
                .prop_map(|(node, prior)| Undo::Payload { node, prior }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(undo in proptest::collection::vec(arb_undo(), 0..4)) {
            prop_assert_eq!(decode(&encode(&undo)).unwrap(), undo);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }

        #[test]
        fn truncation_is_an_error(undo in proptest::collection::vec(arb_undo(), 1..3), cut in any::<prop::sample::Index>()) {
            let b = encode(&undo);
            let at = cut.index(b.len());
            // a strict prefix either fails or decodes to fewer records, never to the same list
            if let Ok(d) = decode(&b[..at]) { prop_assert_ne!(d, undo); }
        }
    }
}

#[cfg(test)]
mod vectors {
    //! `spec/vectors/sqlite.json`: the undo-record vectors.
    use super::*;
    use serde_json::Value;

    fn op_id(s: &str) -> OpId {
        s.parse().unwrap()
    }

    fn node(v: &Value) -> NodeId {
        v.as_str().unwrap().parse().unwrap()
    }

    fn bytes(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }

    fn record(r: &Value) -> Undo {
        let n = node(&r["node"]);
        let prior = &r["prior"];
        match r["kind"].as_str().unwrap() {
            "placement" => Undo::Placement {
                node: n,
                prior: (!prior.is_null()).then(|| Placement {
                    parent: node(&prior["parent"]),
                    position: Position::from_bytes(&bytes(&prior["position"])),
                    placed_by: op_id(prior["placed_by"].as_str().unwrap()),
                }),
            },
            "payload" => Undo::Payload {
                node: n,
                prior: (!prior.is_null()).then(|| PayloadRecord {
                    bytes: bytes(&prior["bytes"]),
                    set_by: op_id(prior["set_by"].as_str().unwrap()),
                }),
            },
            k => panic!("unknown kind {k}"),
        }
    }

    #[test]
    fn spec_vectors() {
        let doc: Value =
            serde_json::from_str(include_str!("../../../spec/vectors/sqlite.json")).unwrap();
        let cases = doc["undo"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for c in cases {
            let records: Vec<Undo> = c["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(record)
                .collect();
            let hex_bytes = bytes(&c["hex"]);
            assert_eq!(encode(&records), hex_bytes, "{}", c["name"]);
            assert_eq!(decode(&hex_bytes).unwrap(), records, "{}", c["name"]);
        }
        for c in doc["undo_invalid"].as_array().unwrap() {
            let err = decode(&bytes(&c["hex"])).unwrap_err();
            let name = match err {
                UndoDecodeError::Truncated { .. } => "Truncated",
                UndoDecodeError::Tag { .. } => "Tag",
                UndoDecodeError::Varint { .. } => "Varint",
                UndoDecodeError::ZeroSeq { .. } => "ZeroSeq",
            };
            assert_eq!(name, c["error"].as_str().unwrap(), "{}", c["name"]);
        }
    }
}
