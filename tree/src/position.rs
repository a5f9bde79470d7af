//! Sibling order: fractional-index positions.
//!
//! Children of a node are ordered by `(Position, NodeId)`. Positions are byte strings compared
//! lexicographically. Key generation (first, last, after, before, between) with the replica
//! tie-break is specified in `spec/ops.md`.

/// A fractional-index position among siblings. Bytes compare lexicographically.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(Box<[u8]>);

impl Position {
    /// Wraps raw position bytes (as decoded from an op).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }
    /// The position's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Position(")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}
