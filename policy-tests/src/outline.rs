//! The compact tree outline used by scenario files: one node name per line, children indented by
//! two spaces under their parent, siblings in order (`spec/policy-tests.md` §Outline).

use std::fmt::Write as _;

/// One node of an outline: its name and its children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outline {
    /// Top-level nodes (children of ROOT, or of TRASH for a trash outline), in order.
    pub roots: Vec<OutlineNode>,
}

/// A named node with its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlineNode {
    /// The node's scenario name.
    pub name: String,
    /// Its children, in sibling order.
    pub children: Vec<OutlineNode>,
}

/// Why an outline does not parse. `line` counts from 1 within the outline text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutlineError {
    /// Indentation is not a multiple of two spaces, or uses tabs.
    #[error("line {line}: indent with a multiple of two spaces")]
    BadIndent {
        /// The line.
        line: usize,
    },
    /// A line is indented more than one level below the previous node.
    #[error("line {line}: indented more than one level below the line above")]
    Orphan {
        /// The line.
        line: usize,
    },
    /// A name that is not `[A-Za-z0-9_.-]+`.
    #[error("line {line}: {name:?} is not a node name ([A-Za-z0-9_.-]+)")]
    BadName {
        /// The line.
        line: usize,
        /// The offending text.
        name: String,
    },
}

/// True for a valid node name: non-empty, `[A-Za-z0-9_.-]`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Outline {
    /// Parses outline text. Blank lines and lines starting with `#` (after indentation) are
    /// ignored.
    pub fn parse(text: &str) -> Result<Self, OutlineError> {
        // stack[d] = path of child indexes to the last node at depth d
        let mut out = Outline::default();
        let mut path: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_start_matches(' ');
            let body = trimmed.trim_end();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let indent = raw.len() - trimmed.len();
            if indent % 2 != 0 || trimmed.starts_with('\t') {
                return Err(OutlineError::BadIndent { line });
            }
            let depth = indent / 2;
            if depth > path.len() {
                return Err(OutlineError::Orphan { line });
            }
            if !is_name(body) {
                return Err(OutlineError::BadName {
                    line,
                    name: body.to_owned(),
                });
            }
            path.truncate(depth);
            let mut siblings = &mut out.roots;
            for &k in &path {
                siblings = &mut siblings[k].children;
            }
            siblings.push(OutlineNode {
                name: body.to_owned(),
                children: Vec::new(),
            });
            path.push(siblings.len() - 1);
        }
        Ok(out)
    }

    /// Every node in pre-order with its parent's name (`None`: a top-level node).
    pub fn preorder(&self) -> Vec<(Option<&str>, &str)> {
        fn walk<'a>(
            parent: Option<&'a str>,
            nodes: &'a [OutlineNode],
            out: &mut Vec<(Option<&'a str>, &'a str)>,
        ) {
            for n in nodes {
                out.push((parent, n.name.as_str()));
                walk(Some(n.name.as_str()), &n.children, out);
            }
        }
        let mut out = Vec::new();
        walk(None, &self.roots, &mut out);
        out
    }

    /// Renders the outline in its canonical text form (two-space indent, one name per line).
    pub fn render(&self) -> String {
        fn walk(nodes: &[OutlineNode], depth: usize, out: &mut String) {
            for n in nodes {
                let _ = writeln!(out, "{:width$}{}", "", n.name, width = depth * 2);
                walk(&n.children, depth + 1, out);
            }
        }
        let mut out = String::new();
        walk(&self.roots, 0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree() -> impl Strategy<Value = Vec<OutlineNode>> {
        let leaf = "[a-z0-9_.-]{1,6}".prop_map(|name| OutlineNode {
            name,
            children: Vec::new(),
        });
        let node = leaf.prop_recursive(4, 24, 4, |inner| {
            ("[a-z0-9_.-]{1,6}", prop::collection::vec(inner, 0..4))
                .prop_map(|(name, children)| OutlineNode { name, children })
        });
        prop::collection::vec(node, 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
        ))]

        #[test]
        fn render_parse_round_trip(roots in tree()) {
            let o = Outline { roots };
            let text = o.render();
            prop_assert_eq!(Outline::parse(&text).unwrap(), o.clone());
            prop_assert_eq!(o.preorder().len(), text.lines().count());
        }

        #[test]
        fn parse_never_panics(text in "[ a-z#\t\n-]{0,60}") {
            if let Ok(o) = Outline::parse(&text) {
                prop_assert_eq!(Outline::parse(&o.render()).unwrap(), o);
            }
        }
    }

    #[test]
    fn round_trip() {
        let text = "docs\n  a\n    deep\n  b\nprivate\n";
        let o = Outline::parse(text).unwrap();
        assert_eq!(o.render(), text);
        assert_eq!(
            o.preorder(),
            vec![
                (None, "docs"),
                (Some("docs"), "a"),
                (Some("a"), "deep"),
                (Some("docs"), "b"),
                (None, "private"),
            ]
        );
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let o = Outline::parse("\n# top\ndocs\n\n  # inner\n  a\n").unwrap();
        assert_eq!(o.render(), "docs\n  a\n");
        assert_eq!(Outline::parse("").unwrap(), Outline::default());
    }

    #[test]
    fn errors() {
        assert_eq!(
            Outline::parse("a\n b"),
            Err(OutlineError::BadIndent { line: 2 })
        );
        assert_eq!(
            Outline::parse("a\n    b"),
            Err(OutlineError::Orphan { line: 2 })
        );
        assert_eq!(Outline::parse("  a"), Err(OutlineError::Orphan { line: 1 }));
        assert!(matches!(
            Outline::parse("a b"),
            Err(OutlineError::BadName { line: 1, .. })
        ));
        assert_eq!(
            Outline::parse("\ta"),
            Err(OutlineError::BadIndent { line: 1 })
        );
    }
}
