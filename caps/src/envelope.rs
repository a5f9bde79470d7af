//! The UCAN 1.0 envelope: `[signature, {"h": varsig-header, "<tag>": payload}]` in DAG-CBOR,
//! named by a CIDv1 (dag-cbor, sha2-256). See `spec/caps.md` §Envelope.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;
use multihash_codetable::{Code, MultihashDigest as _};

use crate::{Did, SecretKey};

/// Varsig 1.0 header for Ed25519 signatures over DAG-CBOR payloads:
/// `0x34` varsig, `0x01` version, `0xed` EdDSA, `0xed` Ed25519 curve, `0x13` SHA2-512, `0x71` DAG-CBOR
/// (each an unsigned LEB128 varint).
pub const VARSIG_ED25519_DAG_CBOR: [u8; 8] = [0x34, 0x01, 0xed, 0x01, 0xed, 0x01, 0x13, 0x71];

/// Multicodec of DAG-CBOR, the codec of every CID this crate computes.
pub const DAG_CBOR: u64 = 0x71;

/// Largest token (envelope) accepted by any decoder, in bytes.
pub const MAX_TOKEN_BYTES: usize = 256 * 1024;

/// Deepest CBOR nesting accepted by any decoder.
pub const MAX_NESTING: usize = 64;

/// Error decoding an envelope, a delegation, an invocation or a revocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than [`MAX_TOKEN_BYTES`].
    #[error("token of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input nests deeper than [`MAX_NESTING`].
    #[error("CBOR nesting deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input is not well-formed DAG-CBOR (truncated, trailing bytes, bad major type, …).
    #[error("malformed DAG-CBOR at byte {offset}")]
    Malformed {
        /// Byte offset where the problem was found (0 when the DAG-CBOR decoder rejected it).
        offset: usize,
    },
    /// The input decodes, but is not in canonical DAG-CBOR form (so its CID would not be stable).
    #[error("not canonical DAG-CBOR")]
    NonCanonical,
    /// Not a two-element array of signature bytes and a signed-payload map.
    #[error("not a UCAN envelope ([signature, {{h, tag: payload}}])")]
    NotAnEnvelope,
    /// The varsig header is not Ed25519 + DAG-CBOR.
    #[error("unsupported varsig header (only Ed25519 over DAG-CBOR is accepted)")]
    UnsupportedHeader,
    /// The payload's type tag is not one this decoder accepts.
    #[error("unexpected payload tag {found:?}, expected {expected}")]
    WrongTag {
        /// What the envelope carried.
        found: String,
        /// What the decoder accepts.
        expected: &'static str,
    },
    /// A required payload field is missing.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field name.
        field: &'static str,
    },
    /// A payload field has the wrong type or an out-of-range value.
    #[error("field `{field}` has the wrong type or value")]
    InvalidField {
        /// The field name.
        field: &'static str,
    },
    /// A payload carries a field this version does not define.
    #[error("unknown field `{field}`")]
    UnknownField {
        /// The field name.
        field: String,
    },
    /// A principal field is not a supported `did:key`.
    #[error("field `{field}`: {source}")]
    Did {
        /// The field name.
        field: &'static str,
        /// Why the DID was rejected.
        source: crate::DidError,
    },
    /// The `cmd` field is not a valid command.
    #[error("field `cmd`: {0}")]
    Command(#[from] crate::CommandError),
    /// The `pol` field is not a valid policy.
    #[error("field `pol`: {0}")]
    Policy(#[from] crate::PolicyError),
}

/// Which UCAN payload an envelope carries, and which spec version its tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) kind: &'static str,
    pub(crate) version: &'static str,
}

impl Tag {
    pub(crate) fn text(self) -> String {
        format!("{}@{}", self.kind, self.version)
    }
}

/// Versions accepted when decoding; encoding always writes the first.
pub(crate) const VERSIONS: [&str; 2] = ["1.0.0", "1.0.0-rc.1"];

/// A decoded (not yet verified) envelope.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) signature: Vec<u8>,
    pub(crate) tag: Tag,
    pub(crate) payload: BTreeMap<String, Ipld>,
    /// The DAG-CBOR bytes the signature covers (`{"h": header, tag: payload}`).
    pub(crate) signed: Vec<u8>,
    pub(crate) cid: Cid,
}

/// The CIDv1 (dag-cbor, sha2-256) of some DAG-CBOR bytes.
pub fn cid_of(bytes: &[u8]) -> Cid {
    Cid::new_v1(DAG_CBOR, Code::Sha2_256.digest(bytes))
}

impl Envelope {
    /// Decodes `bytes` as an envelope whose tag kind is `kind` (e.g. `ucan/dlg`).
    pub(crate) fn decode(bytes: &[u8], kind: &'static str) -> Result<Self, DecodeError> {
        let value = decode_ipld(bytes)?;
        let Ipld::List(mut items) = value else {
            return Err(DecodeError::NotAnEnvelope);
        };
        if items.len() != 2 {
            return Err(DecodeError::NotAnEnvelope);
        }
        let signed_map = items.pop().ok_or(DecodeError::NotAnEnvelope)?;
        let Some(Ipld::Bytes(signature)) = items.pop() else {
            return Err(DecodeError::NotAnEnvelope);
        };
        let Ipld::Map(mut map) = signed_map else {
            return Err(DecodeError::NotAnEnvelope);
        };
        if map.len() != 2 {
            return Err(DecodeError::NotAnEnvelope);
        }
        match map.remove("h") {
            Some(Ipld::Bytes(h)) if h == VARSIG_ED25519_DAG_CBOR => {}
            Some(Ipld::Bytes(_)) => return Err(DecodeError::UnsupportedHeader),
            _ => return Err(DecodeError::NotAnEnvelope),
        }
        let (tag_text, payload) = map.pop_first().ok_or(DecodeError::NotAnEnvelope)?;
        let tag = VERSIONS
            .iter()
            .find(|v| tag_text == format!("{kind}@{v}"))
            .map(|version| Tag { kind, version })
            .ok_or(DecodeError::WrongTag {
                found: tag_text,
                expected: kind,
            })?;
        let Ipld::Map(payload) = payload else {
            return Err(DecodeError::InvalidField { field: "payload" });
        };
        let signed = signed_bytes(tag, &payload);
        Ok(Envelope {
            signature,
            tag,
            payload,
            signed,
            cid: cid_of(bytes),
        })
    }

    /// Signs `payload` under `tag` and returns the envelope's bytes.
    pub(crate) fn seal(key: &SecretKey, tag: Tag, payload: BTreeMap<String, Ipld>) -> Vec<u8> {
        let signed = signed_bytes(tag, &payload);
        let signature = key.sign(&signed);
        let mut map = BTreeMap::new();
        map.insert(
            "h".to_owned(),
            Ipld::Bytes(VARSIG_ED25519_DAG_CBOR.to_vec()),
        );
        map.insert(tag.text(), Ipld::Map(payload));
        encode_ipld(&Ipld::List(vec![
            Ipld::Bytes(signature.to_vec()),
            Ipld::Map(map),
        ]))
    }

    /// Checks the signature against `issuer`. Never panics on odd signature lengths or keys.
    pub(crate) fn signature_valid(&self, issuer: &Did) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&self.signature) else {
            return false;
        };
        issuer
            .verifying_key()
            .is_some_and(|vk| vk.verify_strict(&self.signed, &sig).is_ok())
    }
}

fn signed_bytes(tag: Tag, payload: &BTreeMap<String, Ipld>) -> Vec<u8> {
    // Borrowing serializer: {"h": header, tag: payload}, keys in DAG-CBOR order ("h" is shorter).
    let mut out = Vec::with_capacity(256);
    out.push(0xa2);
    out.extend_from_slice(&encode_ipld(&Ipld::String("h".to_owned())));
    out.extend_from_slice(&encode_ipld(&Ipld::Bytes(VARSIG_ED25519_DAG_CBOR.to_vec())));
    out.extend_from_slice(&encode_ipld(&Ipld::String(tag.text())));
    out.extend_from_slice(&encode_map(payload));
    out
}

fn encode_map(map: &BTreeMap<String, Ipld>) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(map).expect("an in-memory IPLD map always encodes")
}

/// DAG-CBOR encoding of an IPLD value (map keys in canonical order).
pub(crate) fn encode_ipld(value: &Ipld) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(value).expect("an in-memory IPLD value always encodes")
}

/// Strict DAG-CBOR decoding: size and nesting limits, then decode, then a canonical re-encoding check.
pub(crate) fn decode_ipld(bytes: &[u8]) -> Result<Ipld, DecodeError> {
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    prescan(bytes)?;
    let value: Ipld =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|_| DecodeError::Malformed { offset: 0 })?;
    if let Ipld::Float(f) = &value {
        if !f.is_finite() {
            return Err(DecodeError::NonCanonical);
        }
    }
    if encode_ipld(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Walks the CBOR item structure without recursion, so that the recursive decoder behind it never
/// sees nesting deeper than [`MAX_NESTING`] or length headers larger than the input.
fn prescan(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut pos = 0usize;
    // Items still to read at each open nesting level; starts with the one top-level item.
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let head = *bytes
            .get(pos)
            .ok_or(DecodeError::Malformed { offset: pos })?;
        let start = pos;
        pos += 1;
        let major = head >> 5;
        let info = head & 0x1f;
        let arg: u64 = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let raw = bytes
                    .get(pos..pos + n)
                    .ok_or(DecodeError::Malformed { offset: pos })?;
                pos += n;
                raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            }
            _ => return Err(DecodeError::Malformed { offset: start }),
        };
        let remaining = (bytes.len() - pos) as u64;
        match major {
            0 | 1 | 7 => {}
            2 | 3 => {
                if arg > remaining {
                    return Err(DecodeError::Malformed { offset: start });
                }
                pos += arg as usize;
            }
            4 | 5 => {
                let items = if major == 5 {
                    arg.saturating_mul(2)
                } else {
                    arg
                };
                if items > remaining {
                    return Err(DecodeError::Malformed { offset: start });
                }
                if pending.len() >= MAX_NESTING {
                    return Err(DecodeError::TooDeep { max: MAX_NESTING });
                }
                pending.push(items);
            }
            6 => {
                // A tag (only 42, CID links, is valid DAG-CBOR) wraps exactly one item.
                if pending.len() >= MAX_NESTING {
                    return Err(DecodeError::TooDeep { max: MAX_NESTING });
                }
                pending.push(1);
            }
            _ => return Err(DecodeError::Malformed { offset: start }),
        }
    }
    if pos != bytes.len() {
        return Err(DecodeError::Malformed { offset: pos });
    }
    Ok(())
}

// ---- payload field helpers shared by delegation, invocation and revocation decoders ----

pub(crate) struct Fields {
    map: BTreeMap<String, Ipld>,
}

impl Fields {
    pub(crate) fn new(map: BTreeMap<String, Ipld>) -> Self {
        Fields { map }
    }

    pub(crate) fn take(&mut self, field: &'static str) -> Option<Ipld> {
        self.map.remove(field)
    }

    pub(crate) fn required(&mut self, field: &'static str) -> Result<Ipld, DecodeError> {
        self.take(field).ok_or(DecodeError::MissingField { field })
    }

    pub(crate) fn did(&mut self, field: &'static str) -> Result<Did, DecodeError> {
        match self.required(field)? {
            Ipld::String(s) => s
                .parse()
                .map_err(|source| DecodeError::Did { field, source }),
            _ => Err(DecodeError::InvalidField { field }),
        }
    }

    pub(crate) fn optional_did(&mut self, field: &'static str) -> Result<Option<Did>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Ipld::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|source| DecodeError::Did { field, source }),
            Some(_) => Err(DecodeError::InvalidField { field }),
        }
    }

    /// A required field that may be `null` (`sub`, `exp`).
    pub(crate) fn nullable_did(&mut self, field: &'static str) -> Result<Option<Did>, DecodeError> {
        match self.required(field)? {
            Ipld::Null => Ok(None),
            Ipld::String(s) => s
                .parse()
                .map(Some)
                .map_err(|source| DecodeError::Did { field, source }),
            _ => Err(DecodeError::InvalidField { field }),
        }
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        match self.required(field)? {
            Ipld::String(s) => Ok(s),
            _ => Err(DecodeError::InvalidField { field }),
        }
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.required(field)? {
            Ipld::Bytes(b) => Ok(b),
            _ => Err(DecodeError::InvalidField { field }),
        }
    }

    pub(crate) fn optional_time(
        &mut self,
        field: &'static str,
    ) -> Result<Option<u64>, DecodeError> {
        match self.take(field) {
            None | Some(Ipld::Null) => Ok(None),
            Some(v) => time(v, field).map(Some),
        }
    }

    pub(crate) fn nullable_time(
        &mut self,
        field: &'static str,
    ) -> Result<Option<u64>, DecodeError> {
        match self.required(field)? {
            Ipld::Null => Ok(None),
            v => time(v, field).map(Some),
        }
    }

    pub(crate) fn optional_map(
        &mut self,
        field: &'static str,
    ) -> Result<Option<BTreeMap<String, Ipld>>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Ipld::Map(m)) => Ok(Some(m)),
            Some(_) => Err(DecodeError::InvalidField { field }),
        }
    }

    pub(crate) fn links(&mut self, field: &'static str) -> Result<Vec<Cid>, DecodeError> {
        match self.required(field)? {
            Ipld::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Ipld::Link(c) => Ok(c),
                    _ => Err(DecodeError::InvalidField { field }),
                })
                .collect(),
            _ => Err(DecodeError::InvalidField { field }),
        }
    }

    /// Fails on any field left over.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.map.into_keys().next() {
            None => Ok(()),
            Some(field) => Err(DecodeError::UnknownField { field }),
        }
    }
}

/// Largest integer UCAN allows in time fields (2^53 - 1, so JavaScript reads it exactly).
pub(crate) const MAX_SAFE_INT: u64 = (1 << 53) - 1;

fn time(v: Ipld, field: &'static str) -> Result<u64, DecodeError> {
    match v {
        Ipld::Integer(i) if (0..=i128::from(MAX_SAFE_INT)).contains(&i) => Ok(i as u64),
        _ => Err(DecodeError::InvalidField { field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let mut deep = vec![0x81u8; 100_000];
        deep.push(0x00);
        assert_eq!(
            decode_ipld(&deep),
            Err(DecodeError::TooDeep { max: MAX_NESTING })
        );
        let huge = vec![0x81u8; MAX_TOKEN_BYTES + 1];
        assert_eq!(
            decode_ipld(&huge),
            Err(DecodeError::TooLarge {
                len: MAX_TOKEN_BYTES + 1,
                max: MAX_TOKEN_BYTES
            })
        );
    }

    #[test]
    fn limits() {
        let mut deep = vec![0x81u8; 1000];
        deep.push(0x00);
        assert_eq!(
            decode_ipld(&deep),
            Err(DecodeError::TooDeep { max: MAX_NESTING })
        );
        // A list claiming 2^32 items in 5 bytes.
        assert!(matches!(
            decode_ipld(&[0x9a, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed { .. })
        ));
        // Trailing bytes.
        assert!(matches!(
            decode_ipld(&[0x01, 0x02]),
            Err(DecodeError::Malformed { .. })
        ));
        // Non-minimal integer encoding.
        assert_eq!(decode_ipld(&[0x18, 0x01]), Err(DecodeError::NonCanonical));
        assert_eq!(decode_ipld(&[0x18, 0x18]), Ok(Ipld::Integer(24)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_ipld(&bytes);
            let _ = Envelope::decode(&bytes, "ucan/dlg");
        }
    }
}
