//! Scenario files: the TOML form (`spec/policy-tests.md`), its parser, and the resolved model the
//! runner executes. Every name a scenario uses (principal, node, delegation, revocation, op) is
//! resolved here, so the runner never meets a dangling reference.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use canopy_caps::{Ability, Command, CommandError, UnknownAbility};
use serde::Deserialize;

use crate::outline::{is_name, Outline, OutlineError};

/// The principal every scenario has: the document owner (root subject of every chain).
pub const OWNER: &str = "owner";
/// The name of the tree root in `parent` fields.
pub const ROOT: &str = "ROOT";
/// The default op time (Unix seconds) when a scenario sets none.
pub const DEFAULT_TIME: u64 = 1_000;

/// A scenario that does not parse or refers to something it does not define. Names the file,
/// the case (the scenario's name, once known) and the field (a TOML path such as `op[2].parent`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{field}: {kind}", file.display(), case.as_ref().map(|c| format!("case {c}: ")).unwrap_or_default())]
pub struct ScenarioError {
    /// The scenario file.
    pub file: PathBuf,
    /// The scenario's name, when the error is past the point where it is known.
    pub case: Option<String>,
    /// Where in the file (`op[2].parent`; `-` for the whole file).
    pub field: String,
    /// What is wrong.
    pub kind: Box<ScenarioErrorKind>,
}

/// What is wrong with a scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioErrorKind {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// Not valid TOML, a missing or unknown field, or a value of the wrong type.
    #[error("{0}")]
    Toml(Box<toml::de::Error>),
    /// An outline (`tree`, `expect.tree`, `expect.trash`) that does not parse.
    #[error("outline: {0}")]
    Outline(#[from] OutlineError),
    /// A command that is not a valid UCAN command.
    #[error("command: {0}")]
    Command(#[from] CommandError),
    /// A read ability that is not a tree ability.
    #[error("{0}")]
    Ability(#[from] UnknownAbility),
    /// A read expectation for an ability that is not a read ability.
    #[error("{0} is not a read ability (/tree/read, /tree/read/structure, /tree/read/payload)")]
    NotRead(Ability),
    /// A name that is not `[A-Za-z0-9_.-]+`.
    #[error("{0:?} is not a valid name ([A-Za-z0-9_.-]+)")]
    BadName(String),
    /// A name defined twice (names share one namespace per kind).
    #[error("{what} {name:?} is defined twice")]
    Duplicate {
        /// Principal, node, delegation, revocation or op.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A reference to something the scenario does not define.
    #[error("unknown {what} {name:?}")]
    Unknown {
        /// Principal, node, delegation, revocation or op.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An op must say exactly one of `create`, `move`, `delete`, `restore`, `set_payload`.
    #[error(
        "an op needs exactly one of create, move, delete, restore, set_payload (found {found})"
    )]
    OpKind {
        /// How many were given.
        found: usize,
    },
    /// A field this kind of op needs is missing (e.g. `parent` of a move).
    #[error("missing field for this op")]
    Missing,
    /// A field this kind of op does not take (e.g. `parent` of a delete).
    #[error("this op does not take the field")]
    Unexpected,
    /// A `tamper` value outside `signature`, `other-document`, `unsigned`.
    #[error("{0:?}: expected signature, other-document or unsigned")]
    BadTamper(String),
    /// An `expect` value outside `allow`, `deny[:<Class>]`, `pending`, `skip`, `reject[:<Class>]`.
    #[error("{0:?}: expected allow, deny, deny:<Class>, pending, skip, reject or reject:<Class>")]
    BadExpect(String),
    /// An op marked concurrent with an op listed after it, or with its author's own op.
    #[error("{op:?} cannot be concurrent with {other:?} (listed later, or by the same principal)")]
    BadConcurrency {
        /// The op.
        op: String,
        /// The op named in its `concurrent` list.
        other: String,
    },
    /// A revocation cutoff naming an op by another principal than the cutoff's.
    #[error("cutoff for {principal:?} names op {op:?}, which {principal:?} did not make")]
    CutoffForeignOp {
        /// The principal of the cutoff entry.
        principal: String,
        /// The op named.
        op: String,
    },
    /// A delivery order must name every op and revocation exactly once (delegations optional).
    #[error("delivery order must name every op and revocation exactly once: {problem}")]
    BadDelivery {
        /// What is wrong (missing or repeated name).
        problem: String,
    },
    /// A delegation's `proof` chain loops back to itself.
    #[error("delegation {0:?} is its own proof (through its proof chain)")]
    ProofLoop(String),
    /// An op's `twin` must name an earlier, untampered op by the same principal that is not a
    /// twin itself, and a twin cannot be tampered.
    #[error("{op:?} cannot be a twin of {other:?} (needs an earlier, untampered op by the same principal that is not a twin)")]
    BadTwin {
        /// The op.
        op: String,
        /// The op named in its `twin` field.
        other: String,
    },
}

// ------------------------------------------------------------------ raw TOML form

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: String,
    #[serde(default)]
    rules: Vec<String>,
    time: Option<u64>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    tree: String,
    #[serde(default)]
    delegation: Vec<RawDelegation>,
    #[serde(default)]
    revocation: Vec<RawRevocation>,
    #[serde(default)]
    op: Vec<RawOp>,
    #[serde(default)]
    delivery: Vec<Vec<String>>,
    #[serde(default)]
    withhold: Vec<String>,
    #[serde(default)]
    expect: RawExpect,
    #[serde(default)]
    read: Vec<RawRead>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelegation {
    name: String,
    issuer: String,
    audience: String,
    command: String,
    subject: Option<String>,
    #[serde(default)]
    powerline: bool,
    root: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
    expiry: Option<u64>,
    not_before: Option<u64>,
    proof: Option<String>,
    #[serde(default)]
    forged: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    name: String,
    issuer: String,
    delegation: String,
    #[serde(default)]
    cutoff: BTreeMap<String, RawCutoff>,
    #[serde(default)]
    keep: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCutoff {
    Seq(u64),
    Op(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawChain {
    Named(String),
    Explicit(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    name: String,
    by: String,
    chain: Option<RawChain>,
    create: Option<String>,
    #[serde(rename = "move")]
    move_: Option<String>,
    delete: Option<String>,
    restore: Option<String>,
    set_payload: Option<String>,
    tamper: Option<String>,
    twin: Option<String>,
    parent: Option<String>,
    payload: Option<String>,
    time: Option<u64>,
    #[serde(default)]
    concurrent: Vec<String>,
    expect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    tree: Option<String>,
    trash: Option<String>,
    #[serde(default)]
    payload: BTreeMap<String, String>,
    #[serde(default)]
    no_payload: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRead {
    principal: String,
    chain: Option<RawChain>,
    ability: Option<String>,
    time: Option<u64>,
    visible: Vec<String>,
}

// ------------------------------------------------------------------ resolved model

/// A parsed, fully resolved scenario. Indexes point into the scenario's own vectors.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The case name (the file stem unless `name` is given).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The spec rules it exercises (free text such as `caps§5.5`, for coverage listings).
    pub rules: Vec<String>,
    /// Default op and read time.
    pub time: u64,
    /// Principal names; index 0 is [`OWNER`].
    pub principals: Vec<String>,
    /// Node names; each node's index is its identity within the scenario.
    pub nodes: Vec<String>,
    /// The starting tree, made by the owner before everything else: `(node, parent)` in
    /// pre-order (`None` = ROOT).
    pub tree: Vec<(usize, Option<usize>)>,
    /// Delegations, minted at run time.
    pub delegations: Vec<DelegationSpec>,
    /// Revocations, minted at run time.
    pub revocations: Vec<RevocationSpec>,
    /// Ops in listing order.
    pub ops: Vec<OpSpec>,
    /// Extra delivery orders given by the file.
    pub deliveries: Vec<Vec<Item>>,
    /// Delegations never delivered (their ops stay held).
    pub withheld: Vec<usize>,
    /// Expectations on the final state.
    pub expect: Expectations,
    /// Read expectations.
    pub reads: Vec<ReadSpec>,
}

/// A delegation to mint.
#[derive(Debug, Clone)]
pub struct DelegationSpec {
    /// Its name.
    pub name: String,
    /// Issuer principal.
    pub issuer: usize,
    /// Audience principal.
    pub audience: usize,
    /// Subject principal; `None` = powerline (null subject).
    pub subject: Option<usize>,
    /// The command granted.
    pub command: Command,
    /// Subtree root (`None`: no scope statement, the empty policy).
    pub root: Option<usize>,
    /// Excluded subtrees.
    pub exclude: Vec<usize>,
    /// `exp`.
    pub expiry: Option<u64>,
    /// `nbf`.
    pub not_before: Option<u64>,
    /// The delegation this one re-delegates (its chain is the proof's chain plus this one).
    pub proof: Option<usize>,
    /// Delivered with one signature bit flipped (chains name the forged bytes' CID).
    pub forged: bool,
}

/// A revocation to mint.
#[derive(Debug, Clone)]
pub struct RevocationSpec {
    /// Its name.
    pub name: String,
    /// The revoker.
    pub issuer: usize,
    /// The revoked delegation.
    pub delegation: usize,
    /// Per-principal cutoffs.
    pub cutoffs: Vec<(usize, Cutoff)>,
    /// Exempted child delegations.
    pub keep: Vec<usize>,
}

/// A per-replica revocation cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// A raw sequence number.
    Seq(u64),
    /// The sequence number of this op (which must be by the cutoff's principal).
    Op(usize),
}

/// Which chain an op or read uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainSpec {
    /// The empty chain (the owner acts).
    Empty,
    /// A delegation and its proofs: root first.
    Named(usize),
    /// An explicit list of delegations, root first (may be ill-formed on purpose).
    Explicit(Vec<usize>),
}

/// What an op does, in scenario names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpSpecKind {
    /// Create a node under a parent (`None` = ROOT).
    Create {
        /// The new node.
        node: usize,
        /// Its parent.
        parent: Option<usize>,
        /// Optional payload.
        payload: Option<String>,
    },
    /// Move a node.
    Move {
        /// The node.
        node: usize,
        /// The new parent.
        parent: Option<usize>,
    },
    /// Delete a node (to TRASH).
    Delete {
        /// The node.
        node: usize,
    },
    /// Restore a node from TRASH (a move out of it).
    Restore {
        /// The node.
        node: usize,
        /// The new parent.
        parent: Option<usize>,
    },
    /// Replace a node's payload.
    SetPayload {
        /// The node.
        node: usize,
        /// The payload.
        payload: String,
    },
}

/// An op by a principal.
#[derive(Debug, Clone)]
pub struct OpSpec {
    /// Its name.
    pub name: String,
    /// The author.
    pub by: usize,
    /// The chain it invokes.
    pub chain: ChainSpec,
    /// What it does.
    pub kind: OpSpecKind,
    /// Its signed time.
    pub time: u64,
    /// Earlier-listed ops its author had *not* seen (closed: also every op that had seen one).
    pub unseen: Vec<usize>,
    /// Deliver a corrupted form of the op instead (adversarial cases).
    pub tamper: Option<Tamper>,
    /// This op is a second version of that earlier op by the same author: same `(replica,
    /// seq)` and Lamport time, different content (an equivocation, `spec/caps.md` §11.6).
    pub twin: Option<usize>,
    /// The expected final outcome.
    pub expect: Option<OpExpect>,
}

/// How an adversarial op is corrupted before delivery. A tampered op takes its author's next
/// `seq` without using it up (it is never accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// One bit of the signature flipped (a forged signature).
    Signature,
    /// Correctly signed, but for another document of the same owner (a replay).
    OtherDocument,
    /// The signature removed.
    Unsigned,
}

/// The expected final outcome of an op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpExpect {
    /// It took effect.
    Allow,
    /// The policy denied it; optionally with this reason class (`Revoked`, `MatchError`, …).
    Deny(Option<String>),
    /// It is held pending (a proof or predecessor never arrived).
    Pending,
    /// Logged as a structural no-op (cycle, or a delete that had not seen new content).
    Skip,
    /// Rejected by verified ingest, never logged; optionally with this class (`BadSignature`,
    /// `WrongDocument`, `Unsigned`, `Equivocation`, …).
    Reject(Option<String>),
    /// One version of an equivocated op (it or its `twin`): logged and denied for the
    /// equivocation, or refused as the conflicting version — which one depends on the order a
    /// replica received them in.
    Equivocated,
}

impl fmt::Display for OpExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpExpect::Allow => f.write_str("allow"),
            OpExpect::Deny(None) => f.write_str("deny"),
            OpExpect::Deny(Some(c)) => write!(f, "deny:{c}"),
            OpExpect::Pending => f.write_str("pending"),
            OpExpect::Skip => f.write_str("skip"),
            OpExpect::Reject(None) => f.write_str("reject"),
            OpExpect::Reject(Some(c)) => write!(f, "reject:{c}"),
            OpExpect::Equivocated => f.write_str("equivocated"),
        }
    }
}

/// One entry of a delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    /// An op.
    Op(usize),
    /// A revocation record.
    Revocation(usize),
    /// A delegation (by default delivered before everything).
    Delegation(usize),
}

/// Expectations on the converged final state.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The live tree under ROOT, exactly.
    pub tree: Option<Outline>,
    /// The nodes under TRASH, exactly.
    pub trash: Option<Outline>,
    /// Payloads: node → expected text (`None`: no payload).
    pub payloads: Vec<(usize, Option<String>)>,
}

/// What a principal may read.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// The reader.
    pub principal: usize,
    /// The chain it presents.
    pub chain: ChainSpec,
    /// The read ability asked for.
    pub ability: Ability,
    /// The time of the request.
    pub time: u64,
    /// Exactly the live nodes it may read.
    pub visible: Vec<usize>,
}

// ------------------------------------------------------------------ parsing

struct Ctx<'a> {
    file: &'a Path,
    case: Option<String>,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, kind: impl Into<ScenarioErrorKind>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_owned(),
            case: self.case.clone(),
            field: field.into(),
            kind: Box::new(kind.into()),
        }
    }
}

struct Names {
    what: &'static str,
    list: Vec<String>,
    index: HashMap<String, usize>,
}

impl Names {
    fn new(what: &'static str) -> Self {
        Names {
            what,
            list: Vec::new(),
            index: HashMap::new(),
        }
    }
    fn define(&mut self, name: &str) -> Result<usize, ScenarioErrorKind> {
        if !is_name(name) {
            return Err(ScenarioErrorKind::BadName(name.to_owned()));
        }
        if self.index.contains_key(name) {
            return Err(ScenarioErrorKind::Duplicate {
                what: self.what,
                name: name.to_owned(),
            });
        }
        self.list.push(name.to_owned());
        self.index.insert(name.to_owned(), self.list.len() - 1);
        Ok(self.list.len() - 1)
    }
    fn get(&self, name: &str) -> Result<usize, ScenarioErrorKind> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| ScenarioErrorKind::Unknown {
                what: self.what,
                name: name.to_owned(),
            })
    }
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_owned(),
            case: None,
            field: "-".to_owned(),
            kind: Box::new(e.into()),
        })?;
        Self::parse(path, &text)
    }

    /// Parses scenario text; `file` names it in errors and gives the default case name.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ScenarioError> {
        let mut cx = Ctx { file, case: None };
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| cx.err("-", ScenarioErrorKind::Toml(Box::new(e))))?;
        let name = raw.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        cx.case = Some(name.clone());
        let time = raw.time.unwrap_or(DEFAULT_TIME);

        // principals
        let mut principals = Names::new("principal");
        principals.define(OWNER).expect("valid");
        for (i, p) in raw.principals.iter().enumerate() {
            if p == OWNER {
                continue;
            }
            principals
                .define(p)
                .map_err(|k| cx.err(format!("principals[{i}]"), k))?;
        }

        // nodes: the starting tree, then created nodes
        let mut nodes = Names::new("node");
        let outline = Outline::parse(&raw.tree).map_err(|e| cx.err("tree", e))?;
        let mut tree = Vec::new();
        for (parent, n) in outline.preorder() {
            let id = nodes.define(n).map_err(|k| cx.err("tree", k))?;
            let parent = parent.map(|p| nodes.get(p).expect("defined before its children"));
            tree.push((id, parent));
        }
        for (i, op) in raw.op.iter().enumerate() {
            if let Some(n) = &op.create {
                nodes
                    .define(n)
                    .map_err(|k| cx.err(format!("op[{i}].create"), k))?;
            }
        }
        let node = |field: String, n: &str| nodes.get(n).map_err(|k| cx.err(field, k));
        let parent = |field: String, n: &str| -> Result<Option<usize>, ScenarioError> {
            if n == ROOT {
                Ok(None)
            } else {
                node(field, n).map(Some)
            }
        };

        // delegations
        let mut dnames = Names::new("delegation");
        for (i, d) in raw.delegation.iter().enumerate() {
            dnames
                .define(&d.name)
                .map_err(|k| cx.err(format!("delegation[{i}].name"), k))?;
        }
        let principal = |field: String, p: &str| principals.get(p).map_err(|k| cx.err(field, k));
        let mut delegations = Vec::new();
        for (i, d) in raw.delegation.iter().enumerate() {
            let f = |s: &str| format!("delegation[{i}].{s}");
            let subject = if d.powerline {
                if d.subject.is_some() {
                    return Err(cx.err(f("subject"), ScenarioErrorKind::Unexpected));
                }
                None
            } else {
                Some(principal(
                    f("subject"),
                    d.subject.as_deref().unwrap_or(OWNER),
                )?)
            };
            delegations.push(DelegationSpec {
                name: d.name.clone(),
                issuer: principal(f("issuer"), &d.issuer)?,
                audience: principal(f("audience"), &d.audience)?,
                subject,
                command: d
                    .command
                    .parse()
                    .map_err(|e: CommandError| cx.err(f("command"), e))?,
                root: d
                    .root
                    .as_deref()
                    .map(|r| parent(f("root"), r))
                    .transpose()?
                    .flatten(),
                exclude: d
                    .exclude
                    .iter()
                    .map(|x| node(f("exclude"), x))
                    .collect::<Result<_, _>>()?,
                expiry: d.expiry,
                not_before: d.not_before,
                proof: d
                    .proof
                    .as_deref()
                    .map(|p| dnames.get(p).map_err(|k| cx.err(f("proof"), k)))
                    .transpose()?,
                forged: d.forged,
            });
        }
        for (i, d) in delegations.iter().enumerate() {
            let mut seen = vec![false; delegations.len()];
            let mut at = d.proof;
            while let Some(p) = at {
                if p == i || seen[p] {
                    return Err(cx.err(
                        format!("delegation[{i}].proof"),
                        ScenarioErrorKind::ProofLoop(d.name.clone()),
                    ));
                }
                seen[p] = true;
                at = delegations[p].proof;
            }
        }
        let chain = |field: String, c: &Option<RawChain>| -> Result<ChainSpec, ScenarioError> {
            Ok(match c {
                None => ChainSpec::Empty,
                Some(RawChain::Named(n)) => {
                    ChainSpec::Named(dnames.get(n).map_err(|k| cx.err(field, k))?)
                }
                Some(RawChain::Explicit(list)) => ChainSpec::Explicit(
                    list.iter()
                        .map(|n| dnames.get(n).map_err(|k| cx.err(field.clone(), k)))
                        .collect::<Result<_, _>>()?,
                ),
            })
        };

        // ops
        let mut onames = Names::new("op");
        for (i, o) in raw.op.iter().enumerate() {
            onames
                .define(&o.name)
                .map_err(|k| cx.err(format!("op[{i}].name"), k))?;
        }
        let mut ops = Vec::new();
        for (i, o) in raw.op.iter().enumerate() {
            let f = |s: &str| format!("op[{i}].{s}");
            let by = principal(f("by"), &o.by)?;
            let kinds = [&o.create, &o.move_, &o.delete, &o.restore, &o.set_payload];
            let found = kinds.iter().filter(|k| k.is_some()).count();
            if found != 1 {
                return Err(cx.err(format!("op[{i}]"), ScenarioErrorKind::OpKind { found }));
            }
            let need_parent = || -> Result<Option<usize>, ScenarioError> {
                let p = o
                    .parent
                    .as_deref()
                    .ok_or_else(|| cx.err(f("parent"), ScenarioErrorKind::Missing))?;
                parent(f("parent"), p)
            };
            let no = |field: &str, present: bool| -> Result<(), ScenarioError> {
                if present {
                    Err(cx.err(f(field), ScenarioErrorKind::Unexpected))
                } else {
                    Ok(())
                }
            };
            let kind = if let Some(n) = &o.create {
                OpSpecKind::Create {
                    node: node(f("create"), n)?,
                    parent: need_parent()?,
                    payload: o.payload.clone(),
                }
            } else if let Some(n) = &o.move_ {
                no("payload", o.payload.is_some())?;
                OpSpecKind::Move {
                    node: node(f("move"), n)?,
                    parent: need_parent()?,
                }
            } else if let Some(n) = &o.restore {
                no("payload", o.payload.is_some())?;
                OpSpecKind::Restore {
                    node: node(f("restore"), n)?,
                    parent: need_parent()?,
                }
            } else if let Some(n) = &o.delete {
                no("payload", o.payload.is_some())?;
                no("parent", o.parent.is_some())?;
                OpSpecKind::Delete {
                    node: node(f("delete"), n)?,
                }
            } else {
                let n = o.set_payload.as_deref().expect("exactly one kind");
                no("parent", o.parent.is_some())?;
                OpSpecKind::SetPayload {
                    node: node(f("set_payload"), n)?,
                    payload: o
                        .payload
                        .clone()
                        .ok_or_else(|| cx.err(f("payload"), ScenarioErrorKind::Missing))?,
                }
            };
            let mut unseen = Vec::new();
            for c in &o.concurrent {
                let j = onames.get(c).map_err(|k| cx.err(f("concurrent"), k))?;
                let other_by = principals.get(&raw.op[j].by).ok();
                if j >= i || other_by == Some(by) {
                    return Err(cx.err(
                        f("concurrent"),
                        ScenarioErrorKind::BadConcurrency {
                            op: o.name.clone(),
                            other: c.clone(),
                        },
                    ));
                }
                unseen.push(j);
            }
            let tamper = match o.tamper.as_deref() {
                None => None,
                Some("signature") => Some(Tamper::Signature),
                Some("other-document") => Some(Tamper::OtherDocument),
                Some("unsigned") => Some(Tamper::Unsigned),
                Some(t) => {
                    return Err(cx.err(f("tamper"), ScenarioErrorKind::BadTamper(t.to_owned())))
                }
            };
            let twin = match &o.twin {
                None => None,
                Some(t) => {
                    let j = onames.get(t).map_err(|k| cx.err(f("twin"), k))?;
                    let bad = j >= i
                        || principals.get(&raw.op[j].by).ok() != Some(by)
                        || raw.op[j].tamper.is_some()
                        || raw.op[j].twin.is_some()
                        || tamper.is_some();
                    if bad {
                        return Err(cx.err(
                            f("twin"),
                            ScenarioErrorKind::BadTwin {
                                op: o.name.clone(),
                                other: t.clone(),
                            },
                        ));
                    }
                    Some(j)
                }
            };
            ops.push(OpSpec {
                tamper,
                twin,
                name: o.name.clone(),
                by,
                chain: chain(f("chain"), &o.chain)?,
                kind,
                time: o.time.unwrap_or(time),
                unseen,
                expect: o
                    .expect
                    .as_deref()
                    .map(|e| parse_expect(e).map_err(|k| cx.err(f("expect"), k)))
                    .transpose()?,
            });
        }
        if let Err((i, j)) = close_unseen(&mut ops) {
            return Err(cx.err(
                format!("op[{i}].concurrent"),
                ScenarioErrorKind::BadConcurrency {
                    op: ops[i].name.clone(),
                    other: ops[j].name.clone(),
                },
            ));
        }

        // revocations
        let mut rnames = Names::new("revocation");
        let mut revocations = Vec::new();
        for (i, r) in raw.revocation.iter().enumerate() {
            let f = |s: &str| format!("revocation[{i}].{s}");
            rnames.define(&r.name).map_err(|k| cx.err(f("name"), k))?;
            let issuer = principal(f("issuer"), &r.issuer)?;
            let mut cutoffs = Vec::new();
            for (p, c) in &r.cutoff {
                let who = principal(f("cutoff"), p)?;
                let c = match c {
                    RawCutoff::Seq(s) => Cutoff::Seq(*s),
                    RawCutoff::Op(o) => {
                        let j = onames.get(o).map_err(|k| cx.err(f("cutoff"), k))?;
                        if ops[j].by != who {
                            return Err(cx.err(
                                f("cutoff"),
                                ScenarioErrorKind::CutoffForeignOp {
                                    principal: p.clone(),
                                    op: o.clone(),
                                },
                            ));
                        }
                        Cutoff::Op(j)
                    }
                };
                cutoffs.push((who, c));
            }
            revocations.push(RevocationSpec {
                name: r.name.clone(),
                issuer,
                delegation: dnames
                    .get(&r.delegation)
                    .map_err(|k| cx.err(f("delegation"), k))?,
                cutoffs,
                keep: r
                    .keep
                    .iter()
                    .map(|k| dnames.get(k).map_err(|e| cx.err(f("keep"), e)))
                    .collect::<Result<_, _>>()?,
            });
        }

        // delivery orders
        let mut deliveries = Vec::new();
        for (i, order) in raw.delivery.iter().enumerate() {
            let f = format!("delivery[{i}]");
            let mut items = Vec::new();
            for n in order {
                let item = if let Ok(j) = onames.get(n) {
                    Item::Op(j)
                } else if let Ok(j) = rnames.get(n) {
                    Item::Revocation(j)
                } else if let Ok(j) = dnames.get(n) {
                    Item::Delegation(j)
                } else {
                    return Err(cx.err(
                        f,
                        ScenarioErrorKind::Unknown {
                            what: "op, revocation or delegation",
                            name: n.clone(),
                        },
                    ));
                };
                if items.contains(&item) {
                    return Err(cx.err(
                        f,
                        ScenarioErrorKind::BadDelivery {
                            problem: format!("{n:?} appears twice"),
                        },
                    ));
                }
                items.push(item);
            }
            let missing = (0..ops.len())
                .map(Item::Op)
                .chain((0..revocations.len()).map(Item::Revocation))
                .find(|it| !items.contains(it));
            if let Some(it) = missing {
                let n = match it {
                    Item::Op(j) => &ops[j].name,
                    Item::Revocation(j) => &revocations[j].name,
                    Item::Delegation(j) => &delegations[j].name,
                };
                return Err(cx.err(
                    f,
                    ScenarioErrorKind::BadDelivery {
                        problem: format!("{n:?} is missing"),
                    },
                ));
            }
            deliveries.push(items);
        }

        let withheld = raw
            .withhold
            .iter()
            .map(|n| dnames.get(n).map_err(|k| cx.err("withhold", k)))
            .collect::<Result<Vec<_>, _>>()?;
        for item in deliveries.iter().flatten() {
            if let Item::Delegation(d) = item {
                if withheld.contains(d) {
                    return Err(cx.err(
                        "withhold",
                        ScenarioErrorKind::BadDelivery {
                            problem: format!(
                                "withheld delegation {:?} is delivered",
                                delegations[*d].name
                            ),
                        },
                    ));
                }
            }
        }

        // expectations
        let expect = Expectations {
            tree: raw
                .expect
                .tree
                .as_deref()
                .map(|t| check_outline(&cx, "expect.tree", t, &nodes))
                .transpose()?,
            trash: raw
                .expect
                .trash
                .as_deref()
                .map(|t| check_outline(&cx, "expect.trash", t, &nodes))
                .transpose()?,
            payloads: raw
                .expect
                .payload
                .iter()
                .map(|(n, v)| Ok((node("expect.payload".into(), n)?, Some(v.clone()))))
                .chain(
                    raw.expect
                        .no_payload
                        .iter()
                        .map(|n| Ok((node("expect.no_payload".into(), n)?, None))),
                )
                .collect::<Result<_, ScenarioError>>()?,
        };
        let mut reads = Vec::new();
        for (i, r) in raw.read.iter().enumerate() {
            let f = |s: &str| format!("read[{i}].{s}");
            let ability: Ability = r
                .ability
                .as_deref()
                .unwrap_or("/tree/read/structure")
                .parse()
                .map_err(|e: UnknownAbility| cx.err(f("ability"), e))?;
            if !matches!(
                ability,
                Ability::Read | Ability::ReadStructure | Ability::ReadPayload
            ) {
                return Err(cx.err(f("ability"), ScenarioErrorKind::NotRead(ability)));
            }
            reads.push(ReadSpec {
                principal: principal(f("principal"), &r.principal)?,
                chain: chain(f("chain"), &r.chain)?,
                ability,
                time: r.time.unwrap_or(time),
                visible: r
                    .visible
                    .iter()
                    .map(|n| node(f("visible"), n))
                    .collect::<Result<_, _>>()?,
            });
        }

        Ok(Scenario {
            name,
            description: raw.description,
            rules: raw.rules,
            time,
            principals: principals.list,
            nodes: nodes.list,
            tree,
            delegations,
            revocations,
            ops,
            deliveries,
            withheld,
            expect,
            reads,
        })
    }

    /// The chain of delegation indexes (root first) a [`ChainSpec`] stands for.
    pub fn chain_of(&self, chain: &ChainSpec) -> Vec<usize> {
        match chain {
            ChainSpec::Empty => Vec::new(),
            ChainSpec::Explicit(list) => list.clone(),
            ChainSpec::Named(d) => {
                let mut out = vec![*d];
                let mut at = self.delegations[*d].proof;
                while let Some(p) = at {
                    out.push(p);
                    at = self.delegations[p].proof;
                }
                out.reverse();
                out
            }
        }
    }
}

fn parse_expect(s: &str) -> Result<OpExpect, ScenarioErrorKind> {
    Ok(match s {
        "allow" => OpExpect::Allow,
        "deny" => OpExpect::Deny(None),
        "pending" => OpExpect::Pending,
        "skip" => OpExpect::Skip,
        "reject" => OpExpect::Reject(None),
        "equivocated" => OpExpect::Equivocated,
        _ => {
            let class = |c: &str| {
                (!c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .then(|| c.to_owned())
            };
            if let Some(c) = s.strip_prefix("deny:").and_then(class) {
                OpExpect::Deny(Some(c))
            } else if let Some(c) = s.strip_prefix("reject:").and_then(class) {
                OpExpect::Reject(Some(c))
            } else {
                return Err(ScenarioErrorKind::BadExpect(s.to_owned()));
            }
        }
    })
}

fn check_outline(
    cx: &Ctx<'_>,
    field: &str,
    text: &str,
    nodes: &Names,
) -> Result<Outline, ScenarioError> {
    let o = Outline::parse(text).map_err(|e| cx.err(field, e))?;
    for (_, n) in o.preorder() {
        nodes.get(n).map_err(|k| cx.err(field, k))?;
    }
    Ok(o)
}

/// Makes every op's `unseen` set causally closed: an op cannot have seen an op that had itself
/// not seen something this op has not seen. Processed in listing order, so the sets of earlier
/// ops are final when a later op reads them.
/// Fails with `(op, other)` when the closure would hide an op's own earlier op from it.
fn close_unseen(ops: &mut [OpSpec]) -> Result<(), (usize, usize)> {
    for i in 0..ops.len() {
        let mut unseen = vec![false; i];
        for &j in &ops[i].unseen {
            unseen[j] = true;
        }
        for j in 0..i {
            if !unseen[j] && (0..j).any(|k| unseen[k] && !ops[j].unseen.contains(&k)) {
                unseen[j] = true;
            }
        }
        if let Some(j) = (0..i).find(|&j| unseen[j] && ops[j].by == ops[i].by) {
            return Err((i, j));
        }
        ops[i].unseen = (0..i).filter(|&j| unseen[j]).collect();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("t/sample.toml"), text)
    }

    const GOOD: &str = r#"
description = "sample"
principals = ["alice", "bob"]
tree = """
docs
  a
private
"""
[[delegation]]
name = "d1"
issuer = "owner"
audience = "alice"
command = "/tree/write"
root = "docs"
exclude = ["a"]
[[delegation]]
name = "d2"
issuer = "alice"
audience = "bob"
command = "/tree/write/create"
proof = "d1"
[[op]]
name = "c1"
by = "bob"
chain = "d2"
create = "note"
parent = "docs"
expect = "allow"
[[op]]
name = "m1"
by = "alice"
chain = "d1"
move = "note"
parent = "private"
concurrent = ["c1"]
expect = "deny:MatchError"
[[revocation]]
name = "r1"
issuer = "owner"
delegation = "d1"
cutoff = { bob = "c1", alice = 3 }
[expect]
tree = """
docs
  a
  note
private
"""
"#;

    #[test]
    fn parses_a_full_scenario() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name, "sample");
        assert_eq!(s.principals, ["owner", "alice", "bob"]);
        assert_eq!(s.nodes, ["docs", "a", "private", "note"]);
        assert_eq!(s.tree, vec![(0, None), (1, Some(0)), (2, None)]);
        assert_eq!(s.chain_of(&s.ops[0].chain), vec![0, 1]);
        assert_eq!(s.ops[1].unseen, vec![0]);
        assert_eq!(
            s.ops[1].expect,
            Some(OpExpect::Deny(Some("MatchError".into())))
        );
        assert_eq!(s.revocations[0].issuer, 0);
        assert_eq!(
            s.revocations[0].cutoffs,
            vec![(1, Cutoff::Seq(3)), (2, Cutoff::Op(0))]
        );
        assert_eq!(s.time, DEFAULT_TIME);
    }

    fn kind(text: &str) -> (String, ScenarioErrorKind) {
        let e = parse(text).unwrap_err();
        assert_eq!(e.file, Path::new("t/sample.toml"));
        (e.field, *e.kind)
    }

    #[test]
    fn typed_errors_name_the_field() {
        let (f, k) = kind(&GOOD.replace("parent = \"private\"", "parent = \"nowhere\""));
        assert_eq!(f, "op[1].parent");
        assert!(matches!(k, ScenarioErrorKind::Unknown { what: "node", .. }));

        let (f, k) = kind(&GOOD.replace("expect = \"allow\"", "expect = \"maybe\""));
        assert_eq!(f, "op[0].expect");
        assert!(matches!(k, ScenarioErrorKind::BadExpect(_)));

        let (f, k) = kind(&GOOD.replace("create = \"note\"", "create = \"note\"\ndelete = \"a\""));
        assert_eq!(f, "op[0]");
        assert!(matches!(k, ScenarioErrorKind::OpKind { found: 2 }));

        let (f, k) = kind(&GOOD.replace("cutoff = { bob = \"c1\"", "cutoff = { bob = \"m1\""));
        assert_eq!(f, "revocation[0].cutoff");
        assert!(matches!(k, ScenarioErrorKind::CutoffForeignOp { .. }));

        let (f, k) = kind(&GOOD.replace("concurrent = [\"c1\"]", "concurrent = [\"m1\"]"));
        assert_eq!(f, "op[1].concurrent");
        assert!(matches!(k, ScenarioErrorKind::BadConcurrency { .. }));

        let (_, k) = kind(&GOOD.replace("description", "descripton"));
        assert!(matches!(k, ScenarioErrorKind::Toml(_)));

        let (f, k) = kind(&GOOD.replace("proof = \"d1\"", "proof = \"d2\""));
        assert_eq!(f, "delegation[1].proof");
        assert!(matches!(k, ScenarioErrorKind::ProofLoop(_)));

        let (f, k) = kind(&GOOD.replace("  note\nprivate", "  nope\nprivate"));
        assert_eq!(f, "expect.tree");
        assert!(matches!(k, ScenarioErrorKind::Unknown { .. }));

        let (f, k) = kind(&format!(
            "{GOOD}\n[[read]]\nprincipal = \"bob\"\nability = \"/tree/write\"\nvisible = []\n"
        ));
        assert_eq!(f, "read[0].ability");
        assert!(matches!(k, ScenarioErrorKind::NotRead(Ability::Write)));

        // A twin of another principal's op, of a later op, or itself tampered.
        let (f, k) = kind(&GOOD.replace("concurrent = [\"c1\"]", "twin = \"c1\""));
        assert_eq!(f, "op[1].twin");
        assert!(matches!(k, ScenarioErrorKind::BadTwin { .. }));
        let (f, k) = kind(&GOOD.replace("create = \"note\"", "create = \"note\"\ntwin = \"m1\""));
        assert_eq!(f, "op[0].twin");
        assert!(matches!(k, ScenarioErrorKind::BadTwin { .. }));
        let twin = "[[op]]\nname = \"c2\"\nby = \"bob\"\nchain = \"d2\"\ncreate = \"x\"\nparent = \"docs\"\ntwin = \"c1\"\n";
        let s = parse(&GOOD.replace("[[revocation]]", &format!("{twin}[[revocation]]"))).unwrap();
        assert_eq!(s.ops[2].twin, Some(0));
        let (f, k) = kind(&GOOD.replace(
            "[[revocation]]",
            &format!("{twin}tamper = \"unsigned\"\n[[revocation]]"),
        ));
        assert_eq!(f, "op[2].twin");
        assert!(matches!(k, ScenarioErrorKind::BadTwin { .. }));

        let e = parse(&GOOD.replace("name = \"d2\"", "name = \"d1\"")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("t/sample.toml: case sample: delegation[1].name:"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
        ))]

        /// Mangled scenario text gives a typed error or a scenario, never a panic.
        #[test]
        fn mangled_text_never_panics(cut in 0usize..2000, junk in "[\\[\\]=\"a-z0-9 \n]{0,12}") {
            let cut = cut.min(GOOD.len()); // GOOD is ASCII: every index is a boundary
            let text = format!("{}{junk}{}", &GOOD[..cut], &GOOD[cut..]);
            let _ = parse(&text);
        }
    }

    #[test]
    fn delivery_orders_must_be_complete() {
        let (f, k) = kind(&format!("delivery = [[\"c1\", \"m1\"]]\n{GOOD}"));
        assert_eq!(f, "delivery[0]");
        assert!(matches!(k, ScenarioErrorKind::BadDelivery { .. }));
        let s = parse(&format!(
            "delivery = [[\"r1\", \"d2\", \"m1\", \"c1\"]]\n{GOOD}"
        ))
        .unwrap();
        assert_eq!(
            s.deliveries[0],
            vec![
                Item::Revocation(0),
                Item::Delegation(1),
                Item::Op(1),
                Item::Op(0)
            ]
        );
    }

    #[test]
    fn unseen_sets_are_causally_closed() {
        let text = r#"
description = "closure"
principals = ["a", "b", "c"]
[[op]]
name = "x"
by = "a"
create = "n1"
parent = "ROOT"
[[op]]
name = "y"
by = "b"
create = "n2"
parent = "n1"
[[op]]
name = "z"
by = "c"
create = "n3"
parent = "ROOT"
concurrent = ["x"]
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.ops[2].unseen, vec![0, 1]);
    }
}
