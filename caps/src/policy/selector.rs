//! jq-style selectors: `.`, `.field`, `.["field"]`, `.[0]`, `.[-1]`, `.[]`, `.[1:3]`, each with an
//! optional `?`.

use std::fmt;

use ipld_core::ipld::Ipld;

use super::PolicyError;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Iterate,
}

/// A parsed selector. Selecting a missing path fails, unless the failing segment is optional
/// (`?`), in which case the result is `null`.
#[derive(Clone, PartialEq)]
pub struct Selector {
    text: String,
    segments: Vec<(Segment, bool)>,
}

/// Selection failed: the path does not exist or has the wrong shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing;

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::InvalidSelector {
            selector: text.to_owned(),
        };
        let b = text.as_bytes();
        if b.first() != Some(&b'.') {
            return Err(bad());
        }
        let mut segments = Vec::new();
        let mut i = 1;
        // "." alone is the identity; ".[" starts a bracket segment; ".name" a field.
        if i < b.len() && b[i] != b'[' {
            i = field(b, i, &mut segments).ok_or_else(bad)?;
        }
        while i < b.len() {
            match b[i] {
                b'?' => {
                    let last = segments.last_mut().ok_or_else(bad)?;
                    if last.1 {
                        return Err(bad());
                    }
                    last.1 = true;
                    i += 1;
                }
                b'.' => i = field(b, i + 1, &mut segments).ok_or_else(bad)?,
                b'[' => i = bracket(text, i + 1, &mut segments).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
        Ok(Selector {
            text: text.to_owned(),
            segments,
        })
    }

    /// The selector's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Applies the selector. `.[]` collects the results for every element into a list.
    pub(crate) fn select(&self, value: &Ipld) -> Result<Ipld, Missing> {
        apply(&self.segments, value)
    }
}

fn field(b: &[u8], start: usize, out: &mut Vec<(Segment, bool)>) -> Option<usize> {
    let mut i = start;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    if i == start || b[start].is_ascii_digit() {
        return None;
    }
    out.push((
        Segment::Field(String::from_utf8(b[start..i].to_vec()).ok()?),
        false,
    ));
    Some(i)
}

fn bracket(text: &str, start: usize, out: &mut Vec<(Segment, bool)>) -> Option<usize> {
    let b = text.as_bytes();
    let close = start + text.get(start..)?.find(']')?;
    if b.get(start) == Some(&b'"') {
        // Quoted field: a JSON string literal, which may itself contain `]`.
        let mut de = serde_json::Deserializer::from_str(&text[start..]).into_iter::<String>();
        let name = de.next()?.ok()?;
        let end = start + de.byte_offset();
        if b.get(end) != Some(&b']') {
            return None;
        }
        out.push((Segment::Field(name), false));
        return Some(end + 1);
    }
    let inner = &text[start..close];
    let seg = if inner.is_empty() {
        Segment::Iterate
    } else if let Some((lo, hi)) = inner.split_once(':') {
        let num = |s: &str| {
            if s.is_empty() {
                Some(None)
            } else {
                int(s).map(Some)
            }
        };
        Segment::Slice(num(lo)?, num(hi)?)
    } else {
        Segment::Index(int(inner)?)
    };
    out.push((seg, false));
    Some(close + 1)
}

fn int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn resolve(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if index < 0 { len + index } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

fn slice_bounds(lo: Option<i64>, hi: Option<i64>, len: usize) -> (usize, usize) {
    let clamp = |v: i64| {
        let l = len as i64;
        (if v < 0 { l + v } else { v }).clamp(0, l) as usize
    };
    let a = lo.map_or(0, clamp);
    let b = hi.map_or(len, clamp);
    (a, b.max(a))
}

fn apply(segments: &[(Segment, bool)], value: &Ipld) -> Result<Ipld, Missing> {
    let Some(((seg, optional), rest)) = segments.split_first() else {
        return Ok(value.clone());
    };
    let next = match (seg, value) {
        (Segment::Field(name), Ipld::Map(m)) => m.get(name),
        (Segment::Index(i), Ipld::List(l)) => resolve(*i, l.len()).map(|i| &l[i]),
        (Segment::Index(i), Ipld::Bytes(b)) => {
            return match resolve(*i, b.len()) {
                Some(i) => apply(rest, &Ipld::Integer(i128::from(b[i]))),
                None if *optional => Ok(Ipld::Null),
                None => Err(Missing),
            };
        }
        (Segment::Slice(lo, hi), Ipld::List(l)) => {
            let (a, b) = slice_bounds(*lo, *hi, l.len());
            return apply(rest, &Ipld::List(l[a..b].to_vec()));
        }
        (Segment::Slice(lo, hi), Ipld::Bytes(bytes)) => {
            let (a, b) = slice_bounds(*lo, *hi, bytes.len());
            return apply(rest, &Ipld::Bytes(bytes[a..b].to_vec()));
        }
        (Segment::Slice(lo, hi), Ipld::String(s)) => {
            let chars: Vec<char> = s.chars().collect();
            let (a, b) = slice_bounds(*lo, *hi, chars.len());
            return apply(rest, &Ipld::String(chars[a..b].iter().collect()));
        }
        (Segment::Iterate, Ipld::List(l)) => {
            return collect(l.iter(), rest, *optional);
        }
        (Segment::Iterate, Ipld::Map(m)) => {
            return collect(m.values(), rest, *optional);
        }
        _ => None,
    };
    match next {
        Some(v) => apply(rest, v),
        None if *optional => Ok(Ipld::Null),
        None => Err(Missing),
    }
}

fn collect<'a>(
    items: impl Iterator<Item = &'a Ipld>,
    rest: &[(Segment, bool)],
    optional: bool,
) -> Result<Ipld, Missing> {
    let mut out = Vec::new();
    for item in items {
        match apply(rest, item) {
            Ok(v) => out.push(v),
            Err(Missing) if optional => {}
            Err(Missing) => return Err(Missing),
        }
    }
    Ok(Ipld::List(out))
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({})", self.text)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    fn map(pairs: &[(&str, Ipld)]) -> Ipld {
        Ipld::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn parse_and_select() {
        let v = map(&[
            (
                "a",
                Ipld::List(vec![
                    Ipld::Integer(1),
                    Ipld::Integer(2),
                    map(&[("b", Ipld::Integer(3))]),
                ]),
            ),
            ("x y", Ipld::Bool(true)),
        ]);
        assert_eq!(sel(".").select(&v), Ok(v.clone()));
        assert_eq!(sel(".a[0]").select(&Ipld::Null), Err(Missing));
        assert_eq!(sel(".a[1]").select(&v), Ok(Ipld::Integer(2)));
        assert_eq!(sel(".a[-1].b").select(&v), Ok(Ipld::Integer(3)));
        assert_eq!(sel(".[\"x y\"]").select(&v), Ok(Ipld::Bool(true)));
        assert_eq!(
            sel(".a[0:2]").select(&v),
            Ok(Ipld::List(vec![Ipld::Integer(1), Ipld::Integer(2)]))
        );
        assert_eq!(sel(".nope").select(&v), Err(Missing));
        assert_eq!(sel(".nope?").select(&v), Ok(Ipld::Null));
        assert_eq!(sel(".a[9]?").select(&v), Ok(Ipld::Null));
        assert_eq!(
            sel(".a[]?.b").select(&v),
            Ok(Ipld::List(vec![Ipld::Integer(3)]))
        );
        assert_eq!(sel(".a[].b").select(&v), Err(Missing));
    }

    #[test]
    fn bad_selectors() {
        for s in [
            "",
            "a",
            "..",
            ".a..b",
            ".[",
            ".[x]",
            ".a??",
            ".?",
            ".[1",
            ".1a",
            ".[\"a\"x]",
        ] {
            assert!(Selector::parse(s).is_err(), "{s:?} should not parse");
        }
    }
}
