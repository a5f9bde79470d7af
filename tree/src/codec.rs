//! The binary op encoding (`spec/ops.md`): compact, versioned, canonical.
//!
//! ```text
//! op       = version:u8 kind:u8 replica:[32] seq:varint lamport:varint body
//! create   = node:[16] parent:[16] position:bytes flag:u8 (flag = 1: payload:bytes)
//! move     = node:[16] parent:[16] position:bytes
//! delete   = node:[16] count:varint (replica:[32] seq:varint){count}
//! payload  = node:[16] payload:bytes
//! bytes    = len:varint data:[len]
//! ```
//!
//! Varints are unsigned LEB128 in their shortest form. Decoding checks structure only (lengths,
//! limits, canonical form); semantic rules such as reserved nodes are checked by
//! [`crate::Tree::apply`].

use crate::id::{Lamport, NodeId, OpId, ReplicaId};
use crate::op::{Attestation, Op, OpKind, VersionVector};
use crate::position::{Position, PositionError, MAX_POSITION_LEN};

/// The encoding version of an unsigned op.
pub const VERSION: u8 = 1;
/// The encoding version of a signed op: `2 doc:[32] time:u64be chain:[32] signature:[64]`
/// followed by the op's version-1 encoding (the signed bytes; `spec/ops.md` §Signed ops).
pub const VERSION_SIGNED: u8 = 2;
/// Length of a signed op's header before its version-1 encoding.
pub const SIGNED_HEADER_LEN: usize = 1 + 32 + 8 + 32 + 64;
/// Largest payload, in bytes (1 MiB).
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Most entries in a delete's `seen` vector.
pub const MAX_SEEN_ENTRIES: usize = 4096;

const KIND_CREATE: u8 = 0;
const KIND_MOVE: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_SET_PAYLOAD: u8 = 3;

/// Why bytes are not a canonical encoded op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated op")]
    Truncated,
    /// The version byte is not one this crate reads.
    #[error("unsupported encoding version {version}")]
    UnsupportedVersion { version: u8 },
    /// The kind tag is unknown.
    #[error("unknown op kind {kind}")]
    UnknownKind { kind: u8 },
    /// A varint used more bytes than needed.
    #[error("overlong varint")]
    VarintOverlong,
    /// A varint does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// Sequence numbers start at 1.
    #[error("sequence number 0")]
    SeqZero,
    /// Lamport timestamps start at 1.
    #[error("lamport timestamp 0")]
    LamportZero,
    /// The position is not canonical.
    #[error("position: {0}")]
    Position(#[from] PositionError),
    /// A payload over [`MAX_PAYLOAD_LEN`].
    #[error("payload of {len} bytes exceeds the limit")]
    PayloadTooLarge { len: u64 },
    /// The payload flag is neither 0 nor 1.
    #[error("payload flag {flag} is not 0 or 1")]
    PayloadFlag { flag: u8 },
    /// A `seen` vector over [`MAX_SEEN_ENTRIES`].
    #[error("seen vector of {count} entries exceeds the limit")]
    SeenTooLarge { count: u64 },
    /// `seen` replicas are not strictly increasing.
    #[error("seen vector is not strictly sorted by replica")]
    SeenUnsorted,
    /// A `seen` entry of 0 (entries are omitted instead).
    #[error("seen vector has a zero entry")]
    SeenZero,
    /// Bytes after the end of the op.
    #[error("{count} trailing bytes")]
    TrailingBytes { count: usize },
}

impl Op {
    /// The canonical encoding of this op.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding of this op to `out`: version 2 when it carries an
    /// [`Attestation`], else version 1.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Some(a) = self.attestation() {
            out.push(VERSION_SIGNED);
            out.extend_from_slice(a.doc());
            out.extend_from_slice(&a.time().to_be_bytes());
            out.extend_from_slice(a.chain());
            out.extend_from_slice(a.signature());
        }
        self.encode_unsigned_into(out);
    }

    /// Appends the version-1 encoding of this op, without any attestation (what a signature
    /// covers, after its header).
    pub fn encode_unsigned_into(&self, out: &mut Vec<u8>) {
        let kind = match self.kind() {
            OpKind::Create { .. } => KIND_CREATE,
            OpKind::Move { .. } => KIND_MOVE,
            OpKind::Delete { .. } => KIND_DELETE,
            OpKind::SetPayload { .. } => KIND_SET_PAYLOAD,
        };
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(self.id().replica().as_bytes());
        put_varint(out, self.id().seq());
        put_varint(out, self.lamport().get());
        match self.kind() {
            OpKind::Create {
                node,
                parent,
                position,
                payload,
            } => {
                out.extend_from_slice(node.as_bytes());
                out.extend_from_slice(parent.as_bytes());
                put_bytes(out, position.as_bytes());
                match payload {
                    None => out.push(0),
                    Some(p) => {
                        out.push(1);
                        put_bytes(out, p);
                    }
                }
            }
            OpKind::Move {
                node,
                parent,
                position,
            } => {
                out.extend_from_slice(node.as_bytes());
                out.extend_from_slice(parent.as_bytes());
                put_bytes(out, position.as_bytes());
            }
            OpKind::Delete { node, seen } => {
                out.extend_from_slice(node.as_bytes());
                put_varint(out, seen.len() as u64);
                for (r, s) in seen.iter() {
                    out.extend_from_slice(r.as_bytes());
                    put_varint(out, s);
                }
            }
            OpKind::SetPayload { node, payload } => {
                out.extend_from_slice(node.as_bytes());
                put_bytes(out, payload);
            }
        }
    }

    /// Decodes one op (version 1, or version 2 with its attestation) from exactly `bytes`
    /// (untrusted input: never panics). A signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Op, DecodeError> {
        if bytes.first() == Some(&VERSION_SIGNED) {
            let mut r = Reader { b: &bytes[1..] };
            let doc = r.array()?;
            let time = u64::from_be_bytes(r.array()?);
            let chain = r.array()?;
            let signature = r.array()?;
            let op = Op::decode_unsigned(r.b)?;
            return Ok(op.with_attestation(Attestation::new(doc, time, chain, signature)));
        }
        Op::decode_unsigned(bytes)
    }

    fn decode_unsigned(bytes: &[u8]) -> Result<Op, DecodeError> {
        let mut r = Reader { b: bytes };
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let kind = r.u8()?;
        if kind > KIND_SET_PAYLOAD {
            return Err(DecodeError::UnknownKind { kind });
        }
        let replica = ReplicaId::from_bytes(r.array()?);
        let seq = r.varint()?;
        if seq == 0 {
            return Err(DecodeError::SeqZero);
        }
        let lamport = r.varint()?;
        if lamport == 0 {
            return Err(DecodeError::LamportZero);
        }
        let node = NodeId::from_bytes(r.array()?);
        let kind = match kind {
            KIND_CREATE | KIND_MOVE => {
                let parent = NodeId::from_bytes(r.array()?);
                let position = r.position()?;
                if kind == KIND_MOVE {
                    OpKind::Move {
                        node,
                        parent,
                        position,
                    }
                } else {
                    let payload = match r.u8()? {
                        0 => None,
                        1 => Some(r.payload()?),
                        flag => return Err(DecodeError::PayloadFlag { flag }),
                    };
                    OpKind::Create {
                        node,
                        parent,
                        position,
                        payload,
                    }
                }
            }
            KIND_DELETE => {
                let count = r.varint()?;
                if count > MAX_SEEN_ENTRIES as u64 {
                    return Err(DecodeError::SeenTooLarge { count });
                }
                let mut entries: Vec<(ReplicaId, u64)> = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let rep = ReplicaId::from_bytes(r.array()?);
                    let s = r.varint()?;
                    if s == 0 {
                        return Err(DecodeError::SeenZero);
                    }
                    if entries.last().is_some_and(|(prev, _)| *prev >= rep) {
                        return Err(DecodeError::SeenUnsorted);
                    }
                    entries.push((rep, s));
                }
                OpKind::Delete {
                    node,
                    seen: VersionVector::from_sorted(entries),
                }
            }
            _ => OpKind::SetPayload {
                node,
                payload: r.payload()?,
            },
        };
        if !r.b.is_empty() {
            return Err(DecodeError::TrailingBytes { count: r.b.len() });
        }
        Ok(Op::new(
            OpId::new(replica, seq),
            Lamport::new(lamport),
            kind,
        ))
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why bytes do not start with a canonical unsigned LEB128 varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More bytes than the value needs (a trailing zero group).
    Overlong,
    /// The value does not fit in 64 bits.
    Overflow,
}

/// Reads the canonical unsigned LEB128 varint at the front of `b`: its value and length.
pub(crate) fn read_varint(b: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(i).ok_or(VarintError::Truncated)?;
        if i == 9 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(VarintError::Overlong);
            }
            return Ok((v, i + 1));
        }
    }
    Err(VarintError::Overflow)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, used) = read_varint(self.b).map_err(|e| match e {
            VarintError::Truncated => DecodeError::Truncated,
            VarintError::Overlong => DecodeError::VarintOverlong,
            VarintError::Overflow => DecodeError::VarintOverflow,
        })?;
        self.b = &self.b[used..];
        Ok(v)
    }

    fn position(&mut self) -> Result<Position, DecodeError> {
        let len = self.varint()?;
        if len > MAX_POSITION_LEN as u64 {
            return Err(PositionError::TooLong {
                len: usize::try_from(len).unwrap_or(usize::MAX),
            }
            .into());
        }
        Ok(Position::try_from_bytes(self.take(len as usize)?)?)
    }

    fn payload(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.varint()?;
        if len > MAX_PAYLOAD_LEN as u64 {
            return Err(DecodeError::PayloadTooLarge { len });
        }
        Ok(self.take(len as usize)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_ops_round_trip_and_reject_truncation() {
        let op = Op::new(
            OpId::new(ReplicaId::from_bytes([3; 32]), 2),
            Lamport::new(5),
            OpKind::SetPayload {
                node: NodeId::from_bytes([4; 16]),
                payload: b"p".to_vec(),
            },
        );
        let signed = op
            .clone()
            .with_attestation(Attestation::new([1; 32], 77, [2; 32], [9; 64]));
        let bytes = signed.encode();
        assert_eq!(bytes[0], VERSION_SIGNED);
        assert_eq!(&bytes[SIGNED_HEADER_LEN..], &op.encode()[..]);
        assert_eq!(Op::decode(&bytes).unwrap(), signed);
        assert_ne!(Op::decode(&bytes).unwrap(), op);
        for cut in 0..bytes.len() {
            assert!(Op::decode(&bytes[..cut]).is_err());
        }
        // The embedded op must itself be version 1.
        let mut nested = bytes.clone();
        nested[SIGNED_HEADER_LEN] = VERSION_SIGNED;
        assert!(Op::decode(&nested).is_err());
    }

    #[test]
    fn varints_are_canonical() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut r = Reader { b: &[0x80, 0x00] };
        assert_eq!(r.varint(), Err(DecodeError::VarintOverlong));
        let mut r = Reader {
            b: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        };
        assert_eq!(r.varint(), Err(DecodeError::VarintOverflow));
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(Reader { b: &max }.varint(), Ok(u64::MAX));
    }
}
