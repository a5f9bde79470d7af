//! Document entries: what travels between replicas of an authorized document (`spec/ops.md`
//! §Document entries).
//!
//! ```text
//! entry        = op | delegation | chain | revocation | genesis | equivocation
//! op           = the tree codec's version 1 or 2 encoding (first byte 1 or 2)
//! delegation   = 0x10 envelope            (a UCAN delegation, DAG-CBOR)
//! chain        = 0x11 count:u8 (len:u8 cid:[len]){count}
//! revocation   = 0x12 envelope            (a revocation record, DAG-CBOR)
//! genesis      = 0x13 owner:[32] nonce:[16]
//! equivocation = 0x14 len:u32be a:[len] b:[rest]   (two signed ops, a < b bytewise)
//! ```

use canopy_tree::{Op, OpId};
use cid::Cid;

use super::{Document, DocumentId};
use crate::{DecodeError, Delegation, Did, Revocation, RevocationError};

const TAG_DELEGATION: u8 = 0x10;
const TAG_CHAIN: u8 = 0x11;
const TAG_REVOCATION: u8 = 0x12;
/// The tag of a genesis entry.
const TAG_GENESIS: u8 = 0x13;
const TAG_EQUIVOCATION: u8 = 0x14;

/// Largest accepted entry, in bytes (an op with the tree codec's largest payload fits), except
/// equivocation evidence ([`MAX_EVIDENCE_BYTES`]).
pub const MAX_ENTRY_BYTES: usize = (1 << 20) + 4096;

/// Largest accepted equivocation entry: two ops of up to [`MAX_ENTRY_BYTES`] each, with the tag
/// and length prefix.
pub const MAX_EVIDENCE_BYTES: usize = 2 * MAX_ENTRY_BYTES + 5;

/// One item of a document's log, as exchanged between replicas.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Entry {
    /// A tree op (signed, to be accepted).
    Op(Op),
    /// A delegation, known by its CID.
    Delegation(Delegation),
    /// A delegation chain (CIDs, root first), known by its [`super::ChainRef`].
    Chain(Vec<Cid>),
    /// A revocation record.
    Revocation(Revocation),
    /// The document itself (owner and nonce, from which its id is derived): the first entry of
    /// every authorized store, so a peer that receives it can check the [`DocumentId`] it asked
    /// for ([`Document::from_genesis`]).
    Genesis(Document),
    /// Evidence that a replica signed two different ops with the same `(replica, seq)`: from
    /// that seq on, the replica's ops are denied (`spec/caps.md` §11.6).
    Equivocation(Evidence),
}

/// Two different ops signed by the same replica for the same document with the same
/// `(replica, seq)`, in canonical order (the smaller encoding first).
///
/// Built by [`Evidence::new`] or decoded from an [`Entry::Equivocation`]; both check the
/// structure (signed, same document, same id, different bytes). The signatures are checked
/// where the document is known: by [`super::Verified::check`] for received evidence, and by
/// [`super::Authz`] before it records evidence it detected itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    a: Op,
    b: Op,
}

/// Why two ops are not evidence of an equivocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// An op without a signature (only signed ops are evidence).
    #[error("an op of the pair is unsigned")]
    Unsigned,
    /// The ops have different ids.
    #[error("the ops have different ids ({a} and {b})")]
    DifferentIds {
        /// The first op's id.
        a: OpId,
        /// The second op's.
        b: OpId,
    },
    /// The ops are signed for different documents (a replica key may write several documents).
    #[error("the ops are for different documents")]
    DifferentDocuments,
    /// The two ops are the same op.
    #[error("both ops are the same op")]
    SameOp,
    /// Encoded, the pair is not in canonical order (smaller encoding first).
    #[error("the pair is not in canonical order")]
    Order,
    /// The length prefix is truncated or runs past the end.
    #[error("malformed framing")]
    Framing,
}

impl Evidence {
    /// The evidence made of `x` and `y` (in either order).
    pub fn new(x: Op, y: Op) -> Result<Evidence, EvidenceError> {
        let (ax, ay) = match (x.attestation(), y.attestation()) {
            (Some(ax), Some(ay)) => (ax, ay),
            _ => return Err(EvidenceError::Unsigned),
        };
        if x.id() != y.id() {
            return Err(EvidenceError::DifferentIds {
                a: x.id(),
                b: y.id(),
            });
        }
        if ax.doc() != ay.doc() {
            return Err(EvidenceError::DifferentDocuments);
        }
        let (ex, ey) = (x.encode(), y.encode());
        match ex.cmp(&ey) {
            std::cmp::Ordering::Equal => Err(EvidenceError::SameOp),
            std::cmp::Ordering::Less => Ok(Evidence { a: x, b: y }),
            std::cmp::Ordering::Greater => Ok(Evidence { a: y, b: x }),
        }
    }

    /// The `(replica, seq)` both ops claim: the replica's ops from this seq on are denied.
    pub fn id(&self) -> OpId {
        self.a.id()
    }

    /// The document both ops are signed for.
    pub fn document(&self) -> DocumentId {
        DocumentId::from_bytes(*self.a.attestation().expect("evidence ops are signed").doc())
    }

    /// The two ops, smaller encoding first.
    pub fn ops(&self) -> (&Op, &Op) {
        (&self.a, &self.b)
    }

    fn encode(&self) -> Vec<u8> {
        let (a, b) = (self.a.encode(), self.b.encode());
        let mut out = Vec::with_capacity(5 + a.len() + b.len());
        out.push(TAG_EQUIVOCATION);
        out.extend_from_slice(&(a.len() as u32).to_be_bytes());
        out.extend_from_slice(&a);
        out.extend_from_slice(&b);
        out
    }

    fn decode(body: &[u8]) -> Result<Evidence, EntryDecodeError> {
        if body.len() < 4 {
            return Err(EvidenceError::Framing.into());
        }
        let (len, rest) = body.split_at(4);
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > rest.len() {
            return Err(EvidenceError::Framing.into());
        }
        let (a, b) = rest.split_at(len);
        let (oa, ob) = (Op::decode(a)?, Op::decode(b)?);
        // The op codec is canonical, but the evidence's own identity (its store key) is its
        // bytes: insist that they re-encode exactly.
        if oa.encode() != a || ob.encode() != b {
            return Err(EvidenceError::Framing.into());
        }
        let e = Evidence::new(oa, ob)?;
        if e.a.encode() != a {
            return Err(EvidenceError::Order.into());
        }
        Ok(e)
    }
}

impl Document {
    /// The document named by a genesis entry's bytes, if it is `expected` — how a replica that
    /// asked a peer for document `expected` learns its owner and nonce (the id is derived from
    /// them, so a peer cannot substitute another owner).
    pub fn from_genesis(bytes: &[u8], expected: &DocumentId) -> Result<Document, GenesisError> {
        match Entry::decode(bytes)? {
            Entry::Genesis(d) if d.id() == *expected => Ok(d),
            Entry::Genesis(d) => Err(GenesisError::WrongDocument {
                expected: *expected,
                found: d.id(),
            }),
            _ => Err(GenesisError::NotGenesis),
        }
    }
}

/// Why bytes are not the genesis of an expected document ([`Document::from_genesis`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// Not an entry.
    #[error("decode: {0}")]
    Decode(#[from] EntryDecodeError),
    /// An entry, but not a genesis.
    #[error("not a genesis entry")]
    NotGenesis,
    /// The genesis of another document.
    #[error("genesis of document {found}, not {expected}")]
    WrongDocument {
        /// The document asked for.
        expected: DocumentId,
        /// The genesis's.
        found: DocumentId,
    },
}

/// Why bytes are not a document entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryDecodeError {
    /// Empty input.
    #[error("empty entry")]
    Empty,
    /// Larger than [`MAX_ENTRY_BYTES`] ([`MAX_EVIDENCE_BYTES`] for equivocation evidence).
    #[error("entry of {len} bytes exceeds the limit")]
    TooLarge {
        /// The input's length.
        len: usize,
    },
    /// The tag byte is unknown.
    #[error("unknown entry tag {tag:#04x}")]
    UnknownTag {
        /// The tag.
        tag: u8,
    },
    /// A malformed op.
    #[error("op: {0}")]
    Op(#[from] canopy_tree::DecodeError),
    /// A malformed delegation.
    #[error("delegation: {0}")]
    Delegation(DecodeError),
    /// A malformed or badly signed revocation.
    #[error("revocation: {0}")]
    Revocation(#[from] RevocationError),
    /// A chain list that is truncated, has a bad CID or trailing bytes.
    #[error("malformed chain list")]
    Chain,
    /// A genesis entry of the wrong length or whose owner is not an Ed25519 public key.
    #[error("malformed genesis")]
    Genesis,
    /// An equivocation entry that is not evidence of an equivocation.
    #[error("equivocation evidence: {0}")]
    Evidence(#[from] EvidenceError),
}

impl Entry {
    /// The entry's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Entry::Op(op) => op.encode(),
            Entry::Delegation(d) => tagged(TAG_DELEGATION, d.to_bytes()),
            Entry::Revocation(r) => tagged(TAG_REVOCATION, r.to_bytes()),
            Entry::Chain(cids) => {
                let mut out = vec![TAG_CHAIN, cids.len() as u8];
                for c in cids {
                    let b = c.to_bytes();
                    out.push(b.len() as u8);
                    out.extend_from_slice(&b);
                }
                out
            }
            Entry::Genesis(d) => {
                let mut out = Vec::with_capacity(GENESIS_LEN);
                out.push(TAG_GENESIS);
                out.extend_from_slice(d.owner().public_key());
                out.extend_from_slice(d.nonce());
                out
            }
            Entry::Equivocation(e) => e.encode(),
        }
    }

    /// Decodes one entry from exactly `bytes` (untrusted input: never panics). Delegation
    /// signatures are checked at ingest, revocation signatures here.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryDecodeError> {
        let limit = match bytes.first() {
            Some(&TAG_EQUIVOCATION) => MAX_EVIDENCE_BYTES,
            _ => MAX_ENTRY_BYTES,
        };
        if bytes.len() > limit {
            return Err(EntryDecodeError::TooLarge { len: bytes.len() });
        }
        let (&tag, rest) = bytes.split_first().ok_or(EntryDecodeError::Empty)?;
        match tag {
            canopy_tree::VERSION | canopy_tree::VERSION_SIGNED => Ok(Entry::Op(Op::decode(bytes)?)),
            TAG_DELEGATION => Delegation::decode(rest)
                .map(Entry::Delegation)
                .map_err(EntryDecodeError::Delegation),
            TAG_REVOCATION => Ok(Entry::Revocation(Revocation::decode(rest)?)),
            TAG_CHAIN => {
                let (&count, mut r) = rest.split_first().ok_or(EntryDecodeError::Chain)?;
                let mut cids = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (&len, tail) = r.split_first().ok_or(EntryDecodeError::Chain)?;
                    if tail.len() < len as usize {
                        return Err(EntryDecodeError::Chain);
                    }
                    let (cid, tail) = tail.split_at(len as usize);
                    let cid = Cid::try_from(cid).map_err(|_| EntryDecodeError::Chain)?;
                    if cid.to_bytes() != r[1..=len as usize] {
                        return Err(EntryDecodeError::Chain);
                    }
                    cids.push(cid);
                    r = tail;
                }
                if !r.is_empty() {
                    return Err(EntryDecodeError::Chain);
                }
                Ok(Entry::Chain(cids))
            }
            TAG_GENESIS => {
                if bytes.len() != GENESIS_LEN {
                    return Err(EntryDecodeError::Genesis);
                }
                let owner: [u8; 32] = rest[..32].try_into().expect("32 bytes");
                let nonce: [u8; 16] = rest[32..].try_into().expect("16 bytes");
                // An owner that is not a usable key could never sign: not a document.
                match ed25519_dalek::VerifyingKey::from_bytes(&owner) {
                    Ok(k) if !k.is_weak() => {}
                    _ => return Err(EntryDecodeError::Genesis),
                }
                Ok(Entry::Genesis(Document::new(
                    Did::from_public_key(owner),
                    nonce,
                )))
            }
            TAG_EQUIVOCATION => Ok(Entry::Equivocation(Evidence::decode(rest)?)),
            tag => Err(EntryDecodeError::UnknownTag { tag }),
        }
    }
}

/// Length of a genesis entry: tag, owner key, nonce.
const GENESIS_LEN: usize = 1 + 32 + 16;

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lists_round_trip_and_reject_garbage() {
        let cids = vec![crate::cid_of(b"a"), crate::cid_of(b"b")];
        let bytes = Entry::Chain(cids.clone()).encode();
        match Entry::decode(&bytes).unwrap() {
            Entry::Chain(c) => assert_eq!(c, cids),
            e => panic!("{e:?}"),
        }
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Entry::decode(&long).unwrap_err(), EntryDecodeError::Chain);
        assert_eq!(
            Entry::decode(&[0x55]).unwrap_err(),
            EntryDecodeError::UnknownTag { tag: 0x55 }
        );
    }
}
