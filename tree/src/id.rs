//! Identifier newtypes: nodes, replicas, ops, Lamport timestamps.

use std::fmt;
use std::str::FromStr;

/// Error parsing an identifier from its hex text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text was not the expected number of hex digits.
    #[error("expected {expected} hex digits, got {got}")]
    Length { expected: usize, got: usize },
    /// A character was not a hex digit.
    #[error("invalid hex digit at offset {offset}")]
    Digit { offset: usize },
}

fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseIdError> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return Err(ParseIdError::Length {
            expected: 2 * N,
            got: b.len(),
        });
    }
    let nib = |i: usize| -> Result<u8, ParseIdError> {
        match b[i] {
            c @ b'0'..=b'9' => Ok(c - b'0'),
            c @ b'a'..=b'f' => Ok(c - b'a' + 10),
            c @ b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ParseIdError::Digit { offset: i }),
        }
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(2 * i)? << 4) | nib(2 * i + 1)?;
    }
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Defines a fixed-size byte identifier with hex `Display`/`FromStr` and a short `Debug`.
macro_rules! byte_id {
    ($(#[$m:meta])* $name:ident, $len:expr, $short:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the identifier in bytes.
            pub const LEN: usize = $len;
            /// Builds the identifier from its bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
            /// The identifier's bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "("))?;
                write_hex(f, &self.0[..$short])?;
                f.write_str(")")
            }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                decode_hex::<$len>(s).map(Self)
            }
        }
    };
}

byte_id!(
    /// A tree node: 16 bytes, random for user nodes. [`NodeId::ROOT`] and [`NodeId::TRASH`] are reserved.
    NodeId,
    16,
    4
);
byte_id!(
    /// A replica: the 32-byte ed25519 public key that signs its ops.
    ReplicaId,
    32,
    4
);

impl NodeId {
    /// The root of every document tree.
    pub const ROOT: NodeId = NodeId([0; 16]);
    /// Parent of deleted nodes; a node under TRASH can be restored by a move.
    pub const TRASH: NodeId = NodeId([0xff; 16]);

    /// True for ROOT and TRASH, which no op may create, move or delete.
    pub fn is_reserved(&self) -> bool {
        *self == Self::ROOT || *self == Self::TRASH
    }
}

/// A Lamport timestamp. Ops are totally ordered by `(lamport, replica)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Lamport(u64);

impl Lamport {
    /// Builds a timestamp.
    pub const fn new(t: u64) -> Self {
        Self(t)
    }
    /// The timestamp's value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lamport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An op's identity: the replica that made it and its gap-free sequence number (1, 2, 3, …).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    replica: ReplicaId,
    seq: u64,
}

impl OpId {
    /// Builds an op id. `seq` starts at 1.
    pub const fn new(replica: ReplicaId, seq: u64) -> Self {
        Self { replica, seq }
    }
    /// The replica that made the op.
    pub const fn replica(&self) -> ReplicaId {
        self.replica
    }
    /// The op's sequence number within its replica.
    pub const fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.replica, self.seq)
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.replica, self.seq)
    }
}

/// Error parsing an [`OpId`] from `replicahex@seq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseOpIdError {
    /// No `@` separator.
    #[error("expected REPLICA@SEQ")]
    Separator,
    /// The replica part is not 64 hex digits.
    #[error("replica: {0}")]
    Replica(#[from] ParseIdError),
    /// The sequence number is not a positive integer.
    #[error("sequence number is not a positive integer")]
    Seq,
}

impl FromStr for OpId {
    type Err = ParseOpIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (r, q) = s.split_once('@').ok_or(ParseOpIdError::Separator)?;
        let seq: u64 = q.parse().map_err(|_| ParseOpIdError::Seq)?;
        if seq == 0 {
            return Err(ParseOpIdError::Seq);
        }
        Ok(OpId::new(r.parse()?, seq))
    }
}

/// Position of an op in the total order: `(lamport, replica)`. Unique per op because a replica's
/// Lamport timestamps strictly increase with its sequence numbers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LogKey {
    lamport: Lamport,
    replica: ReplicaId,
}

impl LogKey {
    /// Builds a key.
    pub const fn new(lamport: Lamport, replica: ReplicaId) -> Self {
        Self { lamport, replica }
    }
    /// The Lamport part.
    pub const fn lamport(&self) -> Lamport {
        self.lamport
    }
    /// The replica part (the tie-break).
    pub const fn replica(&self) -> ReplicaId {
        self.replica
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_from_str_round_trip() {
        let n = NodeId::from_bytes(*b"0123456789abcdef");
        assert_eq!(n.to_string().parse::<NodeId>().unwrap(), n);
        let r = ReplicaId::from_bytes([7; 32]);
        let id = OpId::new(r, 42);
        assert_eq!(id.to_string().parse::<OpId>().unwrap(), id);
        assert_eq!(format!("{n:?}"), "NodeId(30313233)");
        assert!("zz".parse::<NodeId>().is_err());
        assert!(format!("{r}@0").parse::<OpId>().is_err());
    }

    #[test]
    fn reserved_ids() {
        assert!(NodeId::ROOT.is_reserved() && NodeId::TRASH.is_reserved());
        assert!(NodeId::ROOT < NodeId::TRASH);
    }
}
