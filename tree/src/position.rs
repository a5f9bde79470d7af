//! Sibling order: fractional-index positions.
//!
//! Children of a node are ordered by `(Position, NodeId)`. Positions are byte strings compared
//! lexicographically. A valid position is 1–64 bytes long and does not end in `0x00` (so a
//! position always exists strictly between any two distinct positions). Key generation (first,
//! after, before, between) with the replica tie-break is specified in `spec/ops.md`, "Positions".
//!
//! Generated keys are `head ‖ integer ‖ [fraction] ‖ suffix`: a variable-length integer (head
//! byte `0x80 + n − 1` for an `n`-byte non-negative integer, `0x7f − (n − 1)` for the negative
//! side) so that repeated appends and prepends grow keys logarithmically, an optional fraction
//! when inserting between two keys, and a 2-byte suffix derived from the writing replica so that
//! concurrent inserts at the same place get distinct keys.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::id::{Lamport, ReplicaId};

/// Longest valid position, in bytes.
pub const MAX_POSITION_LEN: usize = 64;

const INLINE: usize = 22;
const SUFFIX_LEN: usize = 2;

/// Why position bytes are invalid, or why no key could be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PositionError {
    /// Positions are at least one byte.
    #[error("empty position")]
    Empty,
    /// Positions are at most 64 bytes.
    #[error("position of {len} bytes exceeds {MAX_POSITION_LEN}")]
    TooLong { len: usize },
    /// The last byte is `0x00` (not canonical: nothing would fit between `k` and `k‖00`).
    #[error("position ends in a zero byte")]
    TrailingZero,
    /// `between(lo, hi)` needs `lo < hi`.
    #[error("bounds are not in increasing order")]
    NotOrdered,
    /// The generated key would exceed 64 bytes.
    #[error("no position of at most {MAX_POSITION_LEN} bytes fits here")]
    NoRoom,
}

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

/// A fractional-index position among siblings. Bytes compare lexicographically.
///
/// Cheap to clone: positions up to 22 bytes (all generated keys in ordinary use) are stored
/// inline.
#[derive(Clone)]
pub struct Position(Repr);

impl Position {
    /// Wraps raw position bytes without validating them (for stores reading back bytes they
    /// wrote). Use [`Position::try_from_bytes`] for untrusted input.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..bytes.len()].copy_from_slice(bytes);
            Self(Repr::Inline {
                len: bytes.len() as u8,
                buf,
            })
        } else {
            Self(Repr::Heap(bytes.into()))
        }
    }

    /// Validates and wraps position bytes: 1–64 bytes, last byte not zero.
    pub fn try_from_bytes(bytes: &[u8]) -> Result<Self, PositionError> {
        validate(bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The position's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(b) => b,
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Always false for a valid position (kept for API symmetry with `len`).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Checks the canonical form (see [`Position::try_from_bytes`]).
    pub fn validate(&self) -> Result<(), PositionError> {
        validate(self.as_bytes())
    }

    /// The key for the first child of an empty parent, written by `replica`.
    pub fn first(replica: &ReplicaId) -> Self {
        finish(Stem::from_slice(&[0x80, 0x00]), replica).expect("2 + suffix bytes always fit")
    }

    /// A key greater than `lo`, written by `replica`.
    pub fn after(lo: &Position, replica: &ReplicaId) -> Result<Self, PositionError> {
        finish(after_stem(lo.as_bytes()), replica)
    }

    /// A key less than `hi`, written by `replica`.
    pub fn before(hi: &Position, replica: &ReplicaId) -> Result<Self, PositionError> {
        finish(before_stem(hi.as_bytes()), replica)
    }

    /// A key strictly between `lo` and `hi` (`lo < hi`), written by `replica`.
    pub fn between(
        lo: &Position,
        hi: &Position,
        replica: &ReplicaId,
    ) -> Result<Self, PositionError> {
        let (a, b) = (lo.as_bytes(), hi.as_bytes());
        if a >= b {
            return Err(PositionError::NotOrdered);
        }
        finish(between_stem(a, b), replica)
    }

    /// The position of a node a delete moves to TRASH: the integer key of the delete's Lamport
    /// timestamp with the deleter's suffix, so TRASH lists nodes in delete order.
    pub fn trash(lamport: Lamport, replica: &ReplicaId) -> Self {
        let mut stem = Stem::new();
        push_int(&mut stem, lamport.get());
        finish(stem, replica).expect("at most 11 bytes")
    }
}

fn validate(bytes: &[u8]) -> Result<(), PositionError> {
    match bytes.last() {
        None => Err(PositionError::Empty),
        Some(_) if bytes.len() > MAX_POSITION_LEN => {
            Err(PositionError::TooLong { len: bytes.len() })
        }
        Some(0) => Err(PositionError::TrailingZero),
        Some(_) => Ok(()),
    }
}

/// The replica suffix: the first two bytes of the replica id, the last with its low bit set so a
/// key never ends in zero.
fn suffix(replica: &ReplicaId) -> [u8; SUFFIX_LEN] {
    let r = replica.as_bytes();
    [r[0], r[1] | 1]
}

/// A key under construction, on the stack (key generation does not allocate). Too long a stem
/// (only from over-long unvalidated input) is remembered and reported as `NoRoom`.
struct Stem {
    len: usize,
    overflow: bool,
    buf: [u8; STEM_CAP],
}

const STEM_CAP: usize = MAX_POSITION_LEN + 16;

impl Stem {
    fn new() -> Self {
        Stem {
            len: 0,
            overflow: false,
            buf: [0; STEM_CAP],
        }
    }
    fn from_slice(b: &[u8]) -> Self {
        let mut s = Stem::new();
        s.extend_from_slice(b);
        s
    }
    fn push(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }
    fn extend_from_slice(&mut self, b: &[u8]) {
        for &x in b {
            self.push(x);
        }
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn finish(mut stem: Stem, replica: &ReplicaId) -> Result<Position, PositionError> {
    stem.extend_from_slice(&suffix(replica));
    if stem.overflow || stem.len > MAX_POSITION_LEN {
        return Err(PositionError::NoRoom);
    }
    Ok(Position::from_bytes(stem.as_slice()))
}

/// Appends the non-negative integer head for `v` (minimal big-endian bytes, at least one).
fn push_int(out: &mut Stem, v: u64) {
    let n = (8 - (v.leading_zeros() as usize / 8)).max(1);
    out.push(0x80 + (n as u8 - 1));
    out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
}

/// The integer head of a key: `(negative, n, value)` if `b` starts with a well-formed head.
fn int_head(b: &[u8]) -> Option<(bool, usize, u64)> {
    let h = *b.first()?;
    let (neg, n) = match h {
        0x80..=0x87 => (false, (h - 0x80) as usize + 1),
        0x78..=0x7f => (true, (0x80 - h) as usize),
        _ => return None,
    };
    let digits = b.get(1..1 + n)?;
    let mut v = 0u64;
    for d in digits {
        v = (v << 8) | u64::from(*d);
    }
    Some((neg, n, v))
}

fn int_stem(neg: bool, n: usize, v: u64) -> Stem {
    let mut out = Stem::new();
    out.push(if neg {
        0x80 - n as u8
    } else {
        0x80 + (n as u8 - 1)
    });
    out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
    out
}

fn max_for(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// A stem `s > a` (so `s‖x > a` for any `x`).
fn after_stem(a: &[u8]) -> Stem {
    match int_head(a) {
        // Positive integer: increment, widening when the width is exhausted.
        Some((false, n, v)) if v < max_for(n) => return int_stem(false, n, v + 1),
        Some((false, n, _)) if n < 8 => return int_stem(false, n + 1, 0),
        // Negative side: step towards zero; from the narrowest negative width go to `0`.
        Some((true, n, v)) if v < max_for(n) => return int_stem(true, n, v + 1),
        Some((true, 1, _)) => return int_stem(false, 1, 0),
        Some((true, n, _)) => return int_stem(true, n - 1, 0),
        _ => {}
    }
    generic_after(a)
}

/// Shortest-prefix increment: `a[..i] ‖ a[i]+1` for the first byte below `0xff`, else `a ‖ 80`.
fn generic_after(a: &[u8]) -> Stem {
    match a.iter().position(|&c| c < 0xff) {
        Some(i) => {
            let mut s = Stem::from_slice(&a[..i]);
            s.push(a[i] + 1);
            s
        }
        None => {
            let mut s = Stem::from_slice(a);
            s.push(0x80);
            s
        }
    }
}

/// A stem `s < b` that is not a prefix of `b` (so `s‖x < b` for any `x`).
fn before_stem(b: &[u8]) -> Stem {
    match int_head(b) {
        Some((false, n, v)) if v > 0 => return int_stem(false, n, v - 1),
        Some((false, 1, 0)) => return int_stem(true, 1, 0xff),
        Some((false, n, 0)) => return int_stem(false, n - 1, max_for(n - 1)),
        Some((true, n, v)) if v > 0 => return int_stem(true, n, v - 1),
        Some((true, n, 0)) if n < 8 => return int_stem(true, n + 1, max_for(n + 1)),
        _ => {}
    }
    generic_before(b)
}

/// `b[..i] ‖ b[i]−1` for the first non-zero byte (one exists: valid keys do not end in zero).
fn generic_before(b: &[u8]) -> Stem {
    match b.iter().position(|&c| c != 0) {
        Some(i) => {
            let mut s = Stem::from_slice(&b[..i]);
            s.push(b[i] - 1);
            s
        }
        // Only reachable with invalid input (all zero bytes); any stem below it is as good.
        None => Stem::new(),
    }
}

/// A stem `s` with `a < s < b`, `s` not a prefix of `b`. Requires `a < b`.
fn between_stem(a: &[u8], b: &[u8]) -> Stem {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if i == a.len() {
        // `a` is a proper prefix of `b`: go below the rest of `b`.
        let mut s = Stem::from_slice(a);
        s.extend_from_slice(generic_before(&b[i..]).as_slice());
        return s;
    }
    let (x, y) = (a[i], b[i]);
    let mut s = Stem::from_slice(&a[..i]);
    if y - x >= 2 {
        s.push(x + (y - x) / 2);
    } else {
        s.push(x);
        s.extend_from_slice(generic_after(&a[i + 1..]).as_slice());
    }
    s
}

impl PartialEq for Position {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Position {}
impl PartialOrd for Position {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Position {
    /// Lexicographic byte order. Inline positions compare their zero-padded first 16 bytes as one
    /// big-endian integer first (sibling indexes compare positions a lot): if those differ, that
    /// is the lexicographic answer, because zero padding sorts a prefix before its extensions.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        if let (Repr::Inline { buf: a, .. }, Repr::Inline { buf: b, .. }) = (&self.0, &other.0) {
            let head = |x: &[u8; INLINE]| {
                let mut w = [0u8; 16];
                w.copy_from_slice(&x[..16]);
                u128::from_be_bytes(w)
            };
            match head(a).cmp(&head(b)) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        self.as_bytes().cmp(other.as_bytes())
    }
}
impl Hash for Position {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Position(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(b: u8) -> ReplicaId {
        ReplicaId::from_bytes([b; 32])
    }

    #[test]
    fn appends_and_prepends_stay_short() {
        let me = r(7);
        let mut last = Position::first(&me);
        let mut first = last.clone();
        for _ in 0..3000 {
            let next = Position::after(&last, &me).unwrap();
            assert!(next > last);
            last = next;
        }
        for _ in 0..1000 {
            let next = Position::before(&first, &me).unwrap();
            assert!(next < first);
            first = next;
        }
        assert!(last.len() <= 6 && first.len() <= 6, "{last:?} {first:?}");
    }

    #[test]
    fn validation() {
        assert_eq!(Position::try_from_bytes(&[]), Err(PositionError::Empty));
        assert_eq!(
            Position::try_from_bytes(&[1, 0]),
            Err(PositionError::TrailingZero)
        );
        assert_eq!(
            Position::try_from_bytes(&[1; 65]),
            Err(PositionError::TooLong { len: 65 })
        );
        assert!(Position::try_from_bytes(&[1; 64]).is_ok());
        let p = Position::from_bytes(&[9; 40]);
        assert_eq!(p.clone().as_bytes(), &[9; 40][..]);
    }

    #[test]
    fn concurrent_inserts_get_distinct_keys_ordered_by_replica() {
        let base = Position::first(&r(1));
        let a = Position::after(&base, &r(2)).unwrap();
        let b = Position::after(&base, &r(3)).unwrap();
        assert!(a != b && a < b);
    }

    #[test]
    fn trash_positions_follow_lamport() {
        let a = Position::trash(Lamport::new(255), &r(9));
        let b = Position::trash(Lamport::new(256), &r(1));
        assert!(a < b);
        assert!(a.validate().is_ok() && b.validate().is_ok());
    }

    fn valid_key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..=20).prop_map(|mut v| {
            if *v.last().unwrap() == 0 {
                *v.last_mut().unwrap() = 1;
            }
            v
        })
    }

    proptest! {
        #[test]
        fn generated_keys_respect_bounds(a in valid_key(), b in valid_key(), rep in any::<u8>()) {
            let me = r(rep);
            let pa = Position::try_from_bytes(&a).unwrap();
            let pb = Position::try_from_bytes(&b).unwrap();
            let k = Position::after(&pa, &me).unwrap();
            prop_assert!(k > pa && k.validate().is_ok());
            let k = Position::before(&pa, &me).unwrap();
            prop_assert!(k < pa && k.validate().is_ok());
            let (lo, hi) = if pa < pb { (pa, pb) } else { (pb, pa) };
            if lo != hi {
                let k = Position::between(&lo, &hi, &me).unwrap();
                prop_assert!(lo < k && k < hi && k.validate().is_ok(), "{:?} {:?} {:?}", lo, k, hi);
            } else {
                prop_assert_eq!(Position::between(&lo, &hi, &me), Err(PositionError::NotOrdered));
            }
        }

        #[test]
        fn repeated_between_stays_ordered(steps in proptest::collection::vec(any::<bool>(), 1..60)) {
            let me = r(5);
            let mut lo = Position::first(&me);
            let mut hi = Position::after(&lo, &me).unwrap();
            for left in steps {
                let mid = Position::between(&lo, &hi, &me).unwrap();
                prop_assert!(lo < mid && mid < hi);
                if left { hi = mid } else { lo = mid }
            }
        }
    }
}
