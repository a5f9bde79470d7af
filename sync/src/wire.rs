//! The sync message encoding (`spec/sync.md`): compact, versioned, size-limited, canonical.
//!
//! ```text
//! message  = version:u8 type:u8 body
//! vv       = count:varint (replica:[32] seq:varint){count}     replicas strictly increasing, seq ≥ 1
//! bytes    = len:varint data:[len]
//! ```
//!
//! Document entries (`canopy_caps::Entry`: delegations, chains, revocations, genesis,
//! equivocation evidence, held ops) travel as opaque bytes in [`Message::Entries`]; the replica
//! that receives them decodes and verifies them (sync never interprets them).
//!
//! Decoding never panics: every malformed input is a [`WireError`].

use canopy_tree::{NodeId, Op, OpId, Position, ReplicaId, VersionVector};
use sha2::{Digest, Sha256};

/// The protocol version this crate speaks (first byte of every message).
pub const PROTOCOL_VERSION: u8 = 2;
/// Largest encoded message, in bytes (4 MiB). Larger input is refused before decoding.
pub const MAX_MESSAGE_LEN: usize = 4 << 20;
/// Most entries in one message's list (ops, node records, gone digests, path entries).
pub const MAX_ITEMS: usize = 1 << 16;
/// Most entries in a version vector on the wire.
pub const MAX_VV_ENTRIES: usize = 1 << 16;

const T_HELLO: u8 = 0;
const T_FRONTIER: u8 = 1;
const T_OPS: u8 = 2;
const T_END: u8 = 3;
const T_PATH: u8 = 4;
const T_NODES: u8 = 5;
const T_GONE: u8 = 6;
const T_CHECKPOINT: u8 = 7;
const T_REFUSED: u8 = 8;
const T_ERROR: u8 = 9;
const T_CLOSE: u8 = 10;
const T_ENTRY_IDS: u8 = 11;
const T_ENTRIES: u8 = 12;
const T_REFUSED_ENTRY: u8 = 13;

/// Why bytes are not a valid sync message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message is larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit")]
    TooLarge { len: usize },
    /// The input ended inside a field.
    #[error("truncated message")]
    Truncated,
    /// The version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion { version: u8 },
    /// Unknown message type.
    #[error("unknown message type {kind}")]
    UnknownType { kind: u8 },
    /// A varint used more bytes than needed.
    #[error("overlong varint")]
    VarintOverlong,
    /// A varint does not fit in 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A list longer than its limit.
    #[error("list of {count} entries exceeds the limit")]
    TooMany { count: u64 },
    /// A version vector's replicas are not strictly increasing, or an entry is 0.
    #[error("version vector is not canonical")]
    VersionVector,
    /// A flag or code byte with an unknown value.
    #[error("invalid value {value} for {field}")]
    InvalidValue { field: &'static str, value: u64 },
    /// A position is not canonical.
    #[error("position: {0}")]
    Position(#[from] canopy_tree::PositionError),
    /// An embedded op does not decode.
    #[error("op: {0}")]
    Op(#[from] canopy_tree::DecodeError),
    /// Bytes after the end of the message.
    #[error("{count} trailing bytes")]
    TrailingBytes { count: usize },
}

/// What a session asks for in its [`Message::Hello`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Mode {
    /// Full replica: reconcile whole op logs (symmetric).
    Full,
    /// Partial replica of the subtree under `scope`: `since` is the responder's frontier at the
    /// last completed sync of this scope (empty for a cold sync).
    Partial { scope: NodeId, since: VersionVector },
}

/// A payload as shipped in a [`NodeRecord`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum PayloadState {
    /// The node has no payload.
    None,
    /// The payload and the op that set it.
    Present { bytes: Vec<u8>, set_by: OpId },
    /// The node may have a payload but the requester may not read payloads.
    Withheld,
}

/// The current state of one node inside a partial replica's scope.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeRecord {
    /// The node.
    pub node: NodeId,
    /// Its parent (the scope root or a node in the scope).
    pub parent: NodeId,
    /// Its position under the parent.
    pub position: Position,
    /// The op that put it there.
    pub placed_by: OpId,
    /// Its payload.
    pub payload: PayloadState,
}

/// One step of the path from the scope root up to ROOT (or TRASH).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PathEntry {
    /// A node on the path (the scope root first).
    pub node: NodeId,
    /// Its parent.
    pub parent: NodeId,
    /// Its position under the parent.
    pub position: Position,
}

/// Why the peer refused one pushed item (sent in [`Message::Refused`] for an op of an
/// [`Message::Ops`] batch, in [`Message::RefusedEntry`] for an item of [`Message::Entries`]).
/// Nothing of a refused item is stored, except [`RefusalCode::Denied`] ops (logged as no-ops).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum RefusalCode {
    /// The op is invalid (the tree's validation rejected it; not logged).
    Invalid,
    /// Another op with the same id is known (equivocation).
    Equivocation,
    /// The responder's policy denied it (logged as a no-op; its capability does not cover it).
    Denied,
    /// The op's signature does not verify under its replica key.
    BadSignature,
    /// The op is signed for another document.
    WrongDocument,
    /// The op carries no signature (an authorized replica takes only signed ops).
    Unsigned,
    /// The op's replica key is not a usable Ed25519 key.
    BadReplicaKey,
    /// The entry's bytes are not a document entry (or the delegation envelope does not decode).
    MalformedEntry,
    /// A delegation whose signature does not verify.
    BadDelegation,
    /// The op waits for a proof the responder does not have and its hold is full.
    HoldFull,
    /// The receiving replica keeps no document entries (a plain, unauthorized tree).
    Unsupported,
}

impl RefusalCode {
    const ALL: [RefusalCode; 11] = [
        RefusalCode::Invalid,
        RefusalCode::Equivocation,
        RefusalCode::Denied,
        RefusalCode::BadSignature,
        RefusalCode::WrongDocument,
        RefusalCode::Unsigned,
        RefusalCode::BadReplicaKey,
        RefusalCode::MalformedEntry,
        RefusalCode::BadDelegation,
        RefusalCode::HoldFull,
        RefusalCode::Unsupported,
    ];

    /// Its wire byte.
    pub fn to_byte(self) -> u8 {
        Self::ALL
            .iter()
            .position(|c| *c == self)
            .expect("every code is listed") as u8
    }

    /// The code of a wire byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }
}

/// A document entry's id: SHA-256 of its encoding (the key under which a replica stores it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId([u8; 32]);

impl EntryId {
    /// The id of an encoded entry.
    pub fn of(entry: &[u8]) -> Self {
        Self(Sha256::digest(entry).into())
    }
    /// From its 32 bytes.
    pub const fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    /// Its 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryId({})", &hex::encode(self.0)[..8])
    }
}

impl std::str::FromStr for EntryId {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b)?;
        Ok(Self(b))
    }
}

/// What a replica holds besides its op log, as announced in [`Message::Hello`]: the number of
/// document entries and [`entries_digest`] of their ids (zero when there are none).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EntriesSummary {
    /// Number of entries.
    pub count: u64,
    /// [`entries_digest`] of their ids (all zero when `count` is 0; not sent then).
    pub digest: [u8; 32],
}

/// A fatal session error sent to the peer before closing (sent in [`Message::Error`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A message did not decode.
    #[error("malformed message")]
    Malformed,
    /// A message arrived that the protocol does not allow in this state.
    #[error("unexpected message")]
    Unexpected,
    /// The requester may not read the whole op log (its grant is narrower).
    #[error("full sync not allowed")]
    FullSyncNotAllowed,
    /// The requested scope is not readable by the requester (or does not exist).
    #[error("scope not readable")]
    ScopeNotReadable,
    /// The responder's storage failed.
    #[error("responder storage failure")]
    Storage,
}

/// One protocol message. See `spec/sync.md` for the exchange.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Message {
    /// First message of each side: what it wants, and a digest of what it has.
    Hello {
        mode: Mode,
        /// SHA-256 of the sender's frontier (full) or of `since` (partial), see [`frontier_digest`].
        digest: [u8; 32],
        /// Number of ops the frontier covers.
        count: u64,
        /// Stay connected and exchange new ops after reconciling.
        live: bool,
        /// The document entries the sender holds (full mode; a partial replica sends none).
        entries: EntriesSummary,
    },
    /// The sender's exact frontier (full mode, after the digests differed).
    Frontier(VersionVector),
    /// A batch of encoded ops.
    Ops(Vec<Op>),
    /// The sender has sent every op the peer lacked (full mode).
    End,
    /// The path from the scope root up to ROOT/TRASH, first message of a partial delta, with the
    /// number of items (node records and gone digests) the delta carries. `reset`: the delta is a
    /// full snapshot of the scope; the receiver drops what it holds first.
    Path {
        entries: Vec<PathEntry>,
        total: u64,
        reset: bool,
    },
    /// Node states in the scope (partial mode). `first_view`: the scope root's children are complete.
    Nodes {
        records: Vec<NodeRecord>,
        first_view: bool,
    },
    /// Digests ([`gone_digest`]) of nodes that left the scope (partial mode).
    Gone(Vec<[u8; 16]>),
    /// The delta is complete as of the responder's `frontier` (partial mode).
    Checkpoint {
        frontier: VersionVector,
        max_lamport: u64,
    },
    /// A pushed op was refused.
    Refused { op: OpId, code: RefusalCode },
    /// The ids of every document entry the sender holds (full mode, after the entries
    /// summaries differed), sorted; `more`: another `EntryIds` message follows.
    EntryIds { ids: Vec<EntryId>, more: bool },
    /// Document entries the receiver lacks, each in its `canopy_caps::Entry` encoding, in the
    /// order they are to be ingested (proofs before what depends on them).
    Entries(Vec<Vec<u8>>),
    /// An item of an [`Message::Entries`] batch was refused.
    RefusedEntry { entry: EntryId, code: RefusalCode },
    /// A fatal error; the sender closes the session.
    Error(ErrorCode),
    /// The sender ends the session.
    Close,
}

/// SHA-256 of a version vector's canonical encoding, domain-separated.
pub fn frontier_digest(vv: &VersionVector) -> [u8; 32] {
    let mut buf = Vec::with_capacity(16 + vv.len() * 34);
    buf.extend_from_slice(b"canopy-sync/frontier/v1");
    put_vv(&mut buf, vv);
    Sha256::digest(&buf).into()
}

/// The 16-byte digest by which a node leaving a scope is named (never its id).
pub fn gone_digest(node: NodeId) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"canopy-sync/gone/v1");
    h.update(node.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// SHA-256 of a set of entry ids, domain-separated: `SHA-256("canopy-sync/entries/v1" ‖ ids)`
/// with the ids sorted and deduplicated. Order-independent: two replicas holding the same
/// entries have the same digest.
pub fn entries_digest<'a>(ids: impl IntoIterator<Item = &'a EntryId>) -> [u8; 32] {
    let mut v: Vec<&EntryId> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut h = Sha256::new();
    h.update(b"canopy-sync/entries/v1");
    for id in v {
        h.update(id.0);
    }
    h.finalize().into()
}

impl EntriesSummary {
    /// The summary of a set of entry ids (see [`entries_digest`]).
    pub fn of<'a>(ids: impl IntoIterator<Item = &'a EntryId> + Clone) -> Self {
        let count = ids.clone().into_iter().count() as u64;
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            digest: entries_digest(ids),
        }
    }
}

/// Number of ops a frontier covers (sum of its entries).
pub fn frontier_count(vv: &VersionVector) -> u64 {
    vv.iter().map(|(_, s)| s).fold(0u64, u64::saturating_add)
}

// ---------------------------------------------------------------- encoding

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_vv(out: &mut Vec<u8>, vv: &VersionVector) {
    put_varint(out, vv.len() as u64);
    for (r, s) in vv.iter() {
        out.extend_from_slice(r.as_bytes());
        put_varint(out, s);
    }
}

fn put_op_id(out: &mut Vec<u8>, id: OpId) {
    out.extend_from_slice(id.replica().as_bytes());
    put_varint(out, id.seq());
}

pub(crate) fn put_record(out: &mut Vec<u8>, r: &NodeRecord) {
    out.extend_from_slice(r.node.as_bytes());
    out.extend_from_slice(r.parent.as_bytes());
    put_bytes(out, r.position.as_bytes());
    put_op_id(out, r.placed_by);
    match &r.payload {
        PayloadState::None => out.push(0),
        PayloadState::Present { bytes, set_by } => {
            out.push(1);
            put_bytes(out, bytes);
            put_op_id(out, *set_by);
        }
        PayloadState::Withheld => out.push(2),
    }
}

impl Message {
    /// The canonical encoding of this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PROTOCOL_VERSION];
        match self {
            Message::Hello {
                mode,
                digest,
                count,
                live,
                entries,
            } => {
                out.push(T_HELLO);
                match mode {
                    Mode::Full => out.push(0),
                    Mode::Partial { scope, since } => {
                        out.push(1);
                        out.extend_from_slice(scope.as_bytes());
                        put_vv(&mut out, since);
                    }
                }
                out.extend_from_slice(digest);
                put_varint(&mut out, *count);
                out.push(u8::from(*live));
                put_varint(&mut out, entries.count);
                if entries.count > 0 {
                    out.extend_from_slice(&entries.digest);
                }
            }
            Message::Frontier(vv) => {
                out.push(T_FRONTIER);
                put_vv(&mut out, vv);
            }
            Message::Ops(ops) => {
                out.push(T_OPS);
                put_varint(&mut out, ops.len() as u64);
                let mut buf = Vec::new();
                for op in ops {
                    buf.clear();
                    op.encode_into(&mut buf);
                    put_bytes(&mut out, &buf);
                }
            }
            Message::End => out.push(T_END),
            Message::Path {
                entries,
                total,
                reset,
            } => {
                out.push(T_PATH);
                out.push(u8::from(*reset));
                put_varint(&mut out, *total);
                put_varint(&mut out, entries.len() as u64);
                for e in entries {
                    out.extend_from_slice(e.node.as_bytes());
                    out.extend_from_slice(e.parent.as_bytes());
                    put_bytes(&mut out, e.position.as_bytes());
                }
            }
            Message::Nodes {
                records,
                first_view,
            } => {
                out.push(T_NODES);
                out.push(u8::from(*first_view));
                put_varint(&mut out, records.len() as u64);
                for r in records {
                    put_record(&mut out, r);
                }
            }
            Message::Gone(ds) => {
                out.push(T_GONE);
                put_varint(&mut out, ds.len() as u64);
                for d in ds {
                    out.extend_from_slice(d);
                }
            }
            Message::Checkpoint {
                frontier,
                max_lamport,
            } => {
                out.push(T_CHECKPOINT);
                put_vv(&mut out, frontier);
                put_varint(&mut out, *max_lamport);
            }
            Message::Refused { op, code } => {
                out.push(T_REFUSED);
                put_op_id(&mut out, *op);
                out.push(code.to_byte());
            }
            Message::EntryIds { ids, more } => {
                out.push(T_ENTRY_IDS);
                out.push(u8::from(*more));
                put_varint(&mut out, ids.len() as u64);
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
            Message::Entries(entries) => {
                out.push(T_ENTRIES);
                put_varint(&mut out, entries.len() as u64);
                for e in entries {
                    put_bytes(&mut out, e);
                }
            }
            Message::RefusedEntry { entry, code } => {
                out.push(T_REFUSED_ENTRY);
                out.extend_from_slice(&entry.0);
                out.push(code.to_byte());
            }
            Message::Error(code) => {
                out.push(T_ERROR);
                out.push(match code {
                    ErrorCode::Malformed => 0,
                    ErrorCode::Unexpected => 1,
                    ErrorCode::FullSyncNotAllowed => 2,
                    ErrorCode::ScopeNotReadable => 3,
                    ErrorCode::Storage => 4,
                });
            }
            Message::Close => out.push(T_CLOSE),
        }
        out
    }

    /// Decodes one message, checking size, structure and canonical form.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(WireError::TooLarge { len: bytes.len() });
        }
        let mut r = Reader { b: bytes, at: 0 };
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion { version });
        }
        let kind = r.u8()?;
        let msg = match kind {
            T_HELLO => {
                let mode = match r.u8()? {
                    0 => Mode::Full,
                    1 => Mode::Partial {
                        scope: NodeId::from_bytes(r.array()?),
                        since: r.vv()?,
                    },
                    v => {
                        return Err(WireError::InvalidValue {
                            field: "mode",
                            value: v.into(),
                        })
                    }
                };
                let digest = r.array()?;
                let count = r.varint()?;
                let live = r.flag("live")?;
                let entries = match r.varint()? {
                    0 => EntriesSummary::default(),
                    count => EntriesSummary {
                        count,
                        digest: r.array()?,
                    },
                };
                Message::Hello {
                    mode,
                    digest,
                    count,
                    live,
                    entries,
                }
            }
            T_FRONTIER => Message::Frontier(r.vv()?),
            T_OPS => {
                let n = r.count(MAX_ITEMS)?;
                let mut ops = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    ops.push(Op::decode(r.bytes()?)?);
                }
                Message::Ops(ops)
            }
            T_END => Message::End,
            T_PATH => {
                let reset = r.flag("reset")?;
                let total = r.varint()?;
                let n = r.count(MAX_ITEMS)?;
                let mut v = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    v.push(PathEntry {
                        node: NodeId::from_bytes(r.array()?),
                        parent: NodeId::from_bytes(r.array()?),
                        position: Position::try_from_bytes(r.bytes()?)?,
                    });
                }
                Message::Path {
                    entries: v,
                    total,
                    reset,
                }
            }
            T_NODES => {
                let first_view = r.flag("first_view")?;
                let n = r.count(MAX_ITEMS)?;
                let mut records = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    records.push(r.record()?);
                }
                Message::Nodes {
                    records,
                    first_view,
                }
            }
            T_GONE => {
                let n = r.count(MAX_ITEMS)?;
                let mut v = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    v.push(r.array()?);
                }
                Message::Gone(v)
            }
            T_CHECKPOINT => Message::Checkpoint {
                frontier: r.vv()?,
                max_lamport: r.varint()?,
            },
            T_REFUSED => {
                let op = r.op_id()?;
                let code = r.refusal()?;
                Message::Refused { op, code }
            }
            T_ENTRY_IDS => {
                let more = r.flag("more")?;
                let n = r.count(MAX_ITEMS)?;
                let mut ids: Vec<EntryId> = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let id = EntryId(r.array()?);
                    if ids.last().is_some_and(|p| *p >= id) {
                        return Err(WireError::InvalidValue {
                            field: "entry ids order",
                            value: ids.len() as u64,
                        });
                    }
                    ids.push(id);
                }
                Message::EntryIds { ids, more }
            }
            T_ENTRIES => {
                let n = r.count(MAX_ITEMS)?;
                let mut v = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    v.push(r.bytes()?.to_vec());
                }
                Message::Entries(v)
            }
            T_REFUSED_ENTRY => Message::RefusedEntry {
                entry: EntryId(r.array()?),
                code: r.refusal()?,
            },
            T_ERROR => Message::Error(match r.u8()? {
                0 => ErrorCode::Malformed,
                1 => ErrorCode::Unexpected,
                2 => ErrorCode::FullSyncNotAllowed,
                3 => ErrorCode::ScopeNotReadable,
                4 => ErrorCode::Storage,
                v => {
                    return Err(WireError::InvalidValue {
                        field: "error",
                        value: v.into(),
                    })
                }
            }),
            T_CLOSE => Message::Close,
            kind => return Err(WireError::UnknownType { kind }),
        };
        let rest = bytes.len() - r.at;
        if rest != 0 {
            return Err(WireError::TrailingBytes { count: rest });
        }
        Ok(msg)
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.b.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::InvalidValue {
                field,
                value: v.into(),
            }),
        }
    }
    fn refusal(&mut self) -> Result<RefusalCode, WireError> {
        let v = self.u8()?;
        RefusalCode::from_byte(v).ok_or(WireError::InvalidValue {
            field: "refusal",
            value: v.into(),
        })
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.u8()?;
            if i == 9 && byte > 1 {
                return Err(WireError::VarintOverflow);
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(WireError::VarintOverlong);
                }
                return Ok(v);
            }
        }
        Err(WireError::VarintOverflow)
    }
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, WireError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(WireError::TooMany { count: n });
        }
        Ok(n as usize)
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        self.take(n)
    }
    pub(crate) fn vv(&mut self) -> Result<VersionVector, WireError> {
        let n = self.count(MAX_VV_ENTRIES)?;
        let mut entries: Vec<(ReplicaId, u64)> = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let r = ReplicaId::from_bytes(self.array()?);
            let s = self.varint()?;
            if s == 0 || entries.last().is_some_and(|(p, _)| *p >= r) {
                return Err(WireError::VersionVector);
            }
            entries.push((r, s));
        }
        Ok(entries.into_iter().collect())
    }
    pub(crate) fn op_id(&mut self) -> Result<OpId, WireError> {
        let r = ReplicaId::from_bytes(self.array()?);
        let s = self.varint()?;
        if s == 0 {
            return Err(WireError::InvalidValue {
                field: "seq",
                value: 0,
            });
        }
        Ok(OpId::new(r, s))
    }
    pub(crate) fn record(&mut self) -> Result<NodeRecord, WireError> {
        let node = NodeId::from_bytes(self.array()?);
        let parent = NodeId::from_bytes(self.array()?);
        let position = Position::try_from_bytes(self.bytes()?)?;
        let placed_by = self.op_id()?;
        let payload = match self.u8()? {
            0 => PayloadState::None,
            1 => {
                let bytes = self.bytes()?;
                if bytes.len() > canopy_tree::MAX_PAYLOAD_LEN {
                    return Err(WireError::InvalidValue {
                        field: "payload length",
                        value: bytes.len() as u64,
                    });
                }
                PayloadState::Present {
                    bytes: bytes.to_vec(),
                    set_by: self.op_id()?,
                }
            }
            2 => PayloadState::Withheld,
            v => {
                return Err(WireError::InvalidValue {
                    field: "payload",
                    value: v.into(),
                })
            }
        };
        Ok(NodeRecord {
            node,
            parent,
            position,
            placed_by,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_rejects_overlong_and_overflow() {
        let mut r = Reader {
            b: &[0x80, 0x00],
            at: 0,
        };
        assert_eq!(r.varint(), Err(WireError::VarintOverlong));
        let b = [0xff; 10];
        let mut r = Reader { b: &b, at: 0 };
        assert_eq!(r.varint(), Err(WireError::VarintOverflow));
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        let mut r = Reader { b: &out, at: 0 };
        assert_eq!(r.varint(), Ok(u64::MAX));
    }

    #[test]
    fn oversized_and_unknown_messages_are_typed_errors() {
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            Message::decode(&big),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(
            Message::decode(&[1, 0]),
            Err(WireError::UnsupportedVersion { version: 1 })
        );
        assert_eq!(
            Message::decode(&[PROTOCOL_VERSION, 99]),
            Err(WireError::UnknownType { kind: 99 })
        );
        assert_eq!(
            Message::decode(&[PROTOCOL_VERSION]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Message::decode(&[PROTOCOL_VERSION, T_END, 0]),
            Err(WireError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn unsorted_version_vector_is_rejected() {
        let mut out = vec![PROTOCOL_VERSION, T_FRONTIER];
        put_varint(&mut out, 2);
        out.extend_from_slice(&[2; 32]);
        put_varint(&mut out, 1);
        out.extend_from_slice(&[1; 32]);
        put_varint(&mut out, 1);
        assert_eq!(Message::decode(&out), Err(WireError::VersionVector));
    }
}
