//! The UCAN 1.0 policy language: statements over an invocation's arguments.
//!
//! A policy is a list of statements that must all hold (`spec/caps.md` §Policy). Statements are
//! `==`, `!=`, `<`, `<=`, `>`, `>=`, `like`, `and`, `or`, `not`, `all`, `any`; selectors are jq-style
//! with optional `?`.

mod selector;

use std::cmp::Ordering;

use ipld_core::ipld::Ipld;

pub use selector::Selector;

/// Error parsing a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy is not a list of statements.
    #[error("a policy is a list of statements")]
    NotAList,
    /// A statement is not a list starting with a known operator.
    #[error("statement {index}: not `[op, …]` with a known operator")]
    UnknownOperator {
        /// Position of the statement inside its enclosing list.
        index: usize,
    },
    /// A statement has the wrong number or kind of operands.
    #[error("statement `{op}`: wrong operands")]
    BadOperands {
        /// The operator.
        op: &'static str,
    },
    /// A selector does not parse.
    #[error("invalid selector {selector:?}")]
    InvalidSelector {
        /// The selector text.
        selector: String,
    },
    /// Statements nest too deeply.
    #[error("policy nests deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
}

const MAX_DEPTH: usize = 32;

/// One policy statement.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Statement {
    /// `["==", selector, value]`: deep equality (integers equal floats of the same value).
    Eq(Selector, Ipld),
    /// `["!=", selector, value]`.
    Ne(Selector, Ipld),
    /// `["<", selector, number]` and friends: numeric comparison; non-numbers never match.
    Cmp(Selector, Comparison, Ipld),
    /// `["like", selector, glob]`: `*` matches any run of characters, `\*` a literal star.
    Like(Selector, String),
    /// `["not", statement]`.
    Not(Box<Statement>),
    /// `["and", [statements]]`: true for an empty list.
    And(Vec<Statement>),
    /// `["or", [statements]]`: true for an empty list (as the UCAN 1.0 fixtures require: an empty
    /// disjunction places no constraint).
    Or(Vec<Statement>),
    /// `["all", selector, statement]`: every element of a list (or value of a map) matches.
    All(Selector, Box<Statement>),
    /// `["any", selector, statement]`: some element of a list (or value of a map) matches.
    Any(Selector, Box<Statement>),
}

/// The numeric comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Comparison {
    fn op(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// A selector found no value where one was required: the statement cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unresolved;

/// A policy: a list of statements, all of which must hold. The empty policy allows everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy(Vec<Statement>);

impl Policy {
    /// A policy of these statements.
    pub fn new(statements: Vec<Statement>) -> Self {
        Policy(statements)
    }

    /// The statements.
    pub fn statements(&self) -> &[Statement] {
        &self.0
    }

    /// True when there are no statements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses a policy from its IPLD form (a list of statements).
    pub fn from_ipld(value: &Ipld) -> Result<Self, PolicyError> {
        let Ipld::List(items) = value else {
            return Err(PolicyError::NotAList);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, s)| Statement::from_ipld(s, i, 0))
            .collect::<Result<_, _>>()
            .map(Policy)
    }

    /// The IPLD form.
    pub fn to_ipld(&self) -> Ipld {
        Ipld::List(self.0.iter().map(Statement::to_ipld).collect())
    }

    /// True when every statement holds for `args`.
    ///
    /// A selector that finds nothing makes its statement fail; that failure propagates through
    /// `not`, `and` and `or` (so `not` of a missing path is still a failure), and makes only that
    /// element fail inside `all`/`any`.
    pub fn matches(&self, args: &Ipld) -> bool {
        self.0.iter().all(|s| s.eval(args) == Ok(true))
    }
}

impl Statement {
    fn from_ipld(value: &Ipld, index: usize, depth: usize) -> Result<Self, PolicyError> {
        if depth > MAX_DEPTH {
            return Err(PolicyError::TooDeep { max: MAX_DEPTH });
        }
        let unknown = PolicyError::UnknownOperator { index };
        let Ipld::List(parts) = value else {
            return Err(unknown);
        };
        let Some(Ipld::String(op)) = parts.first() else {
            return Err(unknown);
        };
        let args = &parts[1..];
        let sel = |v: &Ipld, op| match v {
            Ipld::String(s) => Selector::parse(s),
            _ => Err(PolicyError::BadOperands { op }),
        };
        let sub = |v: &Ipld| Statement::from_ipld(v, 0, depth + 1).map(Box::new);
        Ok(match (op.as_str(), args) {
            ("==", [s, v]) => Statement::Eq(sel(s, "==")?, v.clone()),
            ("!=", [s, v]) => Statement::Ne(sel(s, "!=")?, v.clone()),
            (o @ ("<" | "<=" | ">" | ">="), [s, v]) => {
                let cmp = match o {
                    "<" => Comparison::Lt,
                    "<=" => Comparison::Le,
                    ">" => Comparison::Gt,
                    _ => Comparison::Ge,
                };
                if !matches!(v, Ipld::Integer(_) | Ipld::Float(_)) {
                    return Err(PolicyError::BadOperands { op: cmp.op() });
                }
                Statement::Cmp(sel(s, cmp.op())?, cmp, v.clone())
            }
            ("like", [s, Ipld::String(g)]) => Statement::Like(sel(s, "like")?, g.clone()),
            ("not", [s]) => Statement::Not(sub(s)?),
            (o @ ("and" | "or"), [Ipld::List(items)]) => {
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Statement::from_ipld(s, i, depth + 1))
                    .collect::<Result<_, _>>()?;
                if o == "and" {
                    Statement::And(items)
                } else {
                    Statement::Or(items)
                }
            }
            ("all", [s, st]) => Statement::All(sel(s, "all")?, sub(st)?),
            ("any", [s, st]) => Statement::Any(sel(s, "any")?, sub(st)?),
            ("==" | "!=" | "like" | "not" | "and" | "or" | "all" | "any", _) => {
                let op = ["==", "!=", "like", "not", "and", "or", "all", "any"]
                    .into_iter()
                    .find(|o| o == op)
                    .unwrap_or("?");
                return Err(PolicyError::BadOperands { op });
            }
            _ => return Err(unknown),
        })
    }

    /// The IPLD form of this statement.
    pub fn to_ipld(&self) -> Ipld {
        let s = |x: &str| Ipld::String(x.to_owned());
        Ipld::List(match self {
            Statement::Eq(sel, v) => vec![s("=="), s(sel.as_str()), v.clone()],
            Statement::Ne(sel, v) => vec![s("!="), s(sel.as_str()), v.clone()],
            Statement::Cmp(sel, c, v) => vec![s(c.op()), s(sel.as_str()), v.clone()],
            Statement::Like(sel, g) => vec![s("like"), s(sel.as_str()), s(g)],
            Statement::Not(st) => vec![s("not"), st.to_ipld()],
            Statement::And(v) => vec![s("and"), Ipld::List(v.iter().map(Self::to_ipld).collect())],
            Statement::Or(v) => vec![s("or"), Ipld::List(v.iter().map(Self::to_ipld).collect())],
            Statement::All(sel, st) => vec![s("all"), s(sel.as_str()), st.to_ipld()],
            Statement::Any(sel, st) => vec![s("any"), s(sel.as_str()), st.to_ipld()],
        })
    }

    fn eval(&self, args: &Ipld) -> Result<bool, Unresolved> {
        let get = |sel: &Selector| sel.select(args).map_err(|_| Unresolved);
        Ok(match self {
            Statement::Eq(sel, v) => equal(&get(sel)?, v),
            Statement::Ne(sel, v) => !equal(&get(sel)?, v),
            Statement::Cmp(sel, c, v) => match compare(&get(sel)?, v) {
                Some(ord) => match c {
                    Comparison::Lt => ord == Ordering::Less,
                    Comparison::Le => ord != Ordering::Greater,
                    Comparison::Gt => ord == Ordering::Greater,
                    Comparison::Ge => ord != Ordering::Less,
                },
                None => false,
            },
            Statement::Like(sel, glob) => match get(sel)? {
                Ipld::String(text) => like(glob, &text),
                _ => false,
            },
            Statement::Not(st) => !st.eval(args)?,
            Statement::And(items) => {
                for st in items {
                    if !st.eval(args)? {
                        return Ok(false);
                    }
                }
                true
            }
            Statement::Or(items) if items.is_empty() => true,
            Statement::Or(items) => {
                let mut unresolved = false;
                for st in items {
                    match st.eval(args) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(Unresolved) => unresolved = true,
                    }
                }
                if unresolved {
                    return Err(Unresolved);
                }
                false
            }
            Statement::All(sel, st) => match elements(&get(sel)?) {
                Some(items) => items.iter().all(|item| st.eval(item) == Ok(true)),
                None => false,
            },
            Statement::Any(sel, st) => match elements(&get(sel)?) {
                Some(items) => items.iter().any(|item| st.eval(item) == Ok(true)),
                None => false,
            },
        })
    }
}

fn elements(value: &Ipld) -> Option<Vec<&Ipld>> {
    match value {
        Ipld::List(l) => Some(l.iter().collect()),
        Ipld::Map(m) => Some(m.values().collect()),
        _ => None,
    }
}

/// Deep equality where an integer equals a float of exactly the same value.
fn equal(a: &Ipld, b: &Ipld) -> bool {
    match (a, b) {
        (Ipld::Integer(_) | Ipld::Float(_), Ipld::Integer(_) | Ipld::Float(_)) => {
            compare(a, b) == Some(Ordering::Equal)
        }
        (Ipld::List(x), Ipld::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Ipld::Map(x), Ipld::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && equal(v1, v2))
        }
        _ => a == b,
    }
}

fn compare(a: &Ipld, b: &Ipld) -> Option<Ordering> {
    match (a, b) {
        (Ipld::Integer(x), Ipld::Integer(y)) => Some(x.cmp(y)),
        (Ipld::Integer(x), Ipld::Float(y)) => cmp_int_float(*x, *y),
        (Ipld::Float(x), Ipld::Integer(y)) => cmp_int_float(*y, *x).map(Ordering::reverse),
        (Ipld::Float(x), Ipld::Float(y)) => x.partial_cmp(y),
        _ => None,
    }
}

fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Exact: compare against the float's integer part, then its fraction.
    if f >= 1.7e38 {
        return Some(Ordering::Less);
    }
    if f <= -1.7e38 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)),
        ord => Some(ord),
    }
}

/// Glob match: `*` is any run of characters (including none), `\*` a literal `*`, everything else
/// literal.
fn like(glob: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Star,
        Char(char),
    }
    let mut pat = Vec::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'*') => {
                chars.next();
                pat.push(Tok::Char('*'));
            }
            '*' => pat.push(Tok::Star),
            c => pat.push(Tok::Char(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with backtracking to the last star: O(len(text) * len(pat)).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(Tok::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(Tok::Star) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn like_globs() {
        assert!(like("Alice\\*, Bob*, Carol.", "Alice*, Bob, Carol."));
        assert!(like(
            "Alice\\*, Bob*, Carol.",
            "Alice*, Bob, Dan, Erin, Carol."
        ));
        assert!(!like("Alice\\*, Bob*, Carol.", "Alice*, Bob, Carol"));
        assert!(!like("Alice\\*, Bob*, Carol.", "Alice, Bob, Carol."));
        assert!(like("*@example.com", "bob@example.com"));
        assert!(!like("*@example.com", "carol@elsewhere.example.comx"));
        assert!(like("", ""));
        assert!(like("*", ""));
        assert!(!like("", "a"));
        assert!(like("a*b*c", "aXXbYYc"));
        assert!(!like("a*b*c", "aXXbYY"));
    }

    #[test]
    fn numbers() {
        assert!(equal(&Ipld::Integer(1), &Ipld::Float(1.0)));
        assert!(!equal(&Ipld::Integer(1), &Ipld::Float(1.5)));
        assert_eq!(
            compare(&Ipld::Integer(1), &Ipld::Float(1.5)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&Ipld::Float(-0.5), &Ipld::Integer(0)),
            Some(Ordering::Less)
        );
        assert_eq!(compare(&Ipld::Float(f64::NAN), &Ipld::Integer(0)), None);
        assert_eq!(compare(&Ipld::String("1".into()), &Ipld::Integer(1)), None);
    }

    #[test]
    fn missing_paths_fail_even_under_not() {
        let p = Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
            Ipld::String("not".into()),
            Ipld::List(vec![
                Ipld::String("==".into()),
                Ipld::String(".x".into()),
                Ipld::Integer(1),
            ]),
        ])]))
        .unwrap();
        assert!(!p.matches(&Ipld::Map(Default::default())));
    }

    #[test]
    fn parse_errors() {
        let s = |x: &str| Ipld::String(x.into());
        assert_eq!(Policy::from_ipld(&s("x")), Err(PolicyError::NotAList));
        assert_eq!(
            Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
                s("~"),
                s("."),
                Ipld::Null
            ])])),
            Err(PolicyError::UnknownOperator { index: 0 })
        );
        assert_eq!(
            Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![s("<"), s("."), s("a")])])),
            Err(PolicyError::BadOperands { op: "<" })
        );
        assert_eq!(
            Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![
                s("=="),
                s("x"),
                Ipld::Null
            ])])),
            Err(PolicyError::InvalidSelector {
                selector: "x".into()
            })
        );
        let mut deep = Ipld::List(vec![s("=="), s("."), Ipld::Null]);
        for _ in 0..40 {
            deep = Ipld::List(vec![s("not"), deep]);
        }
        assert_eq!(
            Policy::from_ipld(&Ipld::List(vec![deep])),
            Err(PolicyError::TooDeep { max: MAX_DEPTH })
        );
    }

    proptest! {
        #[test]
        fn like_star_matches_everything(text in "\\PC{0,20}") {
            prop_assert!(like("*", &text));
            let escaped = text.replace('*', "\\*");
            prop_assert!(like(&escaped, &text));
        }

        #[test]
        fn round_trip_through_ipld(ops in proptest::collection::vec(0usize..6, 0..6), n in -5i64..5) {
            let s = |x: &str| Ipld::String(x.into());
            let mut stmts = Vec::new();
            for op in ops {
                stmts.push(match op {
                    0 => Ipld::List(vec![s("=="), s(".a"), Ipld::Integer(n.into())]),
                    1 => Ipld::List(vec![s(">="), s(".b?"), Ipld::Float(n as f64)]),
                    2 => Ipld::List(vec![s("like"), s(".c[0]"), s("x*")]),
                    3 => Ipld::List(vec![s("and"), Ipld::List(vec![Ipld::List(vec![s("!="), s("."), Ipld::Null])])]),
                    4 => Ipld::List(vec![s("any"), s(".d[]"), Ipld::List(vec![s("<"), s("."), Ipld::Integer(3)])]),
                    _ => Ipld::List(vec![s("not"), Ipld::List(vec![s("or"), Ipld::List(vec![])])]),
                });
            }
            let ipld = Ipld::List(stmts);
            let policy = Policy::from_ipld(&ipld).unwrap();
            prop_assert_eq!(policy.to_ipld(), ipld);
        }
    }
}
