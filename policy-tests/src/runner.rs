//! Runs a [`Scenario`]: mints its keys, delegations, revocations and signed ops, delivers them to
//! fresh replicas ([`canopy_caps::Authz`], the verified ingest and authorized apply) in several
//! orders and on both stores, checks that every replica converged, and checks the expectations.

use std::collections::BTreeMap;
use std::fmt;

use canopy_caps::{
    chain_ref, sign_op, subtree_policy, Accepted, Authz, ChainRef, Cid, Delegation,
    DelegationFields, Denial, Document, Entry, IngestError, Policy, Revocation, SecretKey, Verdict,
};
use canopy_tree::{
    Effect, Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Outcome, Position, ReplicaId, Store,
    VersionVector,
};
use sha2::{Digest, Sha256};

use crate::outline::{Outline, OutlineNode};
use crate::scenario::{ChainSpec, Cutoff, Item, OpExpect, OpSpecKind, Scenario, Tamper};

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// How many (store, delivery order) replicas were compared.
    pub replicas: usize,
    /// Every expectation that did not hold (empty: passed).
    pub failures: Vec<String>,
}

impl CaseResult {
    /// True when every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            write!(f, "ok    {} ({} replicas agree)", self.name, self.replicas)
        } else {
            write!(f, "FAIL  {}", self.name)?;
            for m in &self.failures {
                for (i, line) in m.lines().enumerate() {
                    let lead = if i == 0 { "  - " } else { "    " };
                    write!(f, "\n{lead}{line}")?;
                }
            }
            Ok(())
        }
    }
}

fn digest(domain: &str, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"canopy/policy-tests/");
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    h.finalize().into()
}

/// The key of a principal: derived from its name, so CIDs and ids are stable across runs.
pub fn principal_key(name: &str) -> SecretKey {
    SecretKey::from_bytes(&digest("principal", name))
}

/// The node id of a scenario node name.
pub fn node_id(name: &str) -> NodeId {
    let d = digest("node", name);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    NodeId::from_bytes(b)
}

/// Everything minted for a scenario, before delivery.
struct Minted {
    document: Document,
    nodes: Vec<NodeId>,
    delegations: Vec<Delegation>,
    /// Encoded chain entries (every chain an op uses), delivered up front.
    chains: Vec<Vec<u8>>,
    /// Encoded setup ops (the starting tree).
    setup: Vec<Vec<u8>>,
    ops: Vec<Op>,
    revocations: Vec<Revocation>,
}

fn cids(s: &Scenario, delegations: &[Delegation], chain: &ChainSpec) -> Vec<Cid> {
    s.chain_of(chain)
        .into_iter()
        .map(|d| delegations[d].cid())
        .collect()
}

fn mint(s: &Scenario) -> Minted {
    let keys: Vec<SecretKey> = s.principals.iter().map(|p| principal_key(p)).collect();
    let replicas: Vec<ReplicaId> = keys
        .iter()
        .map(|k| ReplicaId::from_bytes(*k.did().public_key()))
        .collect();
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&digest("document", &s.name)[..16]);
    let document = Document::new(keys[0].did(), nonce);
    let doc = document.id();
    let nodes: Vec<NodeId> = s.nodes.iter().map(|n| node_id(n)).collect();
    let node_bytes = |i: Option<usize>| i.map_or([0u8; 16], |i| *nodes[i].as_bytes());

    let mut delegations: Vec<Delegation> = Vec::with_capacity(s.delegations.len());
    for d in &s.delegations {
        // No root and no exclusions: the empty policy (the whole document). Otherwise a
        // subtree scope (ROOT when only exclusions are given).
        let policy = if d.root.is_none() && d.exclude.is_empty() {
            Policy::new(Vec::new())
        } else {
            let ex: Vec<[u8; 16]> = d.exclude.iter().map(|&x| node_bytes(Some(x))).collect();
            subtree_policy(&node_bytes(d.root), &ex)
        };
        let fields = DelegationFields {
            audience: keys[d.audience].did(),
            subject: d.subject.map(|p| keys[p].did()),
            command: d.command.clone(),
            policy,
            expiration: d.expiry,
            not_before: d.not_before,
            meta: None,
        };
        let nonce = digest("nonce", &d.name)[..16].to_vec();
        let issued = Delegation::issue_with_nonce(&keys[d.issuer], fields, nonce);
        delegations.push(if d.forged {
            // The envelope starts `82 58 40` (array of 2, 64-byte signature): flip a bit of
            // the signature. It still decodes; its CID is the forged bytes'.
            let mut bytes = issued.to_bytes().to_vec();
            bytes[10] ^= 0x01;
            Delegation::decode(&bytes).expect("only the signature changed")
        } else {
            issued
        });
    }

    let mut chains: Vec<Vec<Cid>> = Vec::new();
    let mut add_chain = |c: Vec<Cid>| {
        if !c.is_empty() && !chains.contains(&c) {
            chains.push(c);
        }
    };
    for o in &s.ops {
        add_chain(cids(s, &delegations, &o.chain));
    }
    for r in &s.reads {
        add_chain(cids(s, &delegations, &r.chain));
    }

    // Ops: seq per principal, Lamport above everything the author had seen, positions in
    // listing order.
    let mut next_seq = vec![1u64; keys.len()];
    let mut position: Option<Position> = None;
    let mut next_position = |replica: &ReplicaId| {
        let p = match &position {
            None => Position::first(replica),
            Some(prev) => Position::after(prev, replica).expect("scenario positions fit"),
        };
        position = Some(p.clone());
        p
    };
    let empty = chain_ref(&[]);
    let mut setup = Vec::new();
    let mut setup_lamport = 0u64;
    for &(node, parent) in &s.tree {
        setup_lamport += 1;
        let seq = next_seq[0];
        next_seq[0] += 1;
        let op = Op::new(
            OpId::new(replicas[0], seq),
            Lamport::new(setup_lamport),
            OpKind::Create {
                node: nodes[node],
                parent: parent.map_or(NodeId::ROOT, |p| nodes[p]),
                position: next_position(&replicas[0]),
                payload: None,
            },
        );
        let signed = sign_op(&keys[0], &doc, s.time, &empty, op).expect("own replica");
        setup.push(signed.encode());
    }
    let setup_seq = next_seq[0] - 1;

    let mut ops: Vec<Op> = Vec::with_capacity(s.ops.len());
    for (i, o) in s.ops.iter().enumerate() {
        let by = o.by;
        let seen: Vec<usize> = (0..i).filter(|j| !o.unseen.contains(j)).collect();
        let lamport = 1 + seen
            .iter()
            .map(|&j| ops[j].lamport().get())
            .max()
            .unwrap_or(0)
            .max(setup_lamport);
        // A twin is a second version of an earlier op: same seq and Lamport time.
        let (seq, lamport) = match o.twin {
            Some(t) => (ops[t].id().seq(), ops[t].lamport().get()),
            None => (next_seq[by], lamport),
        };
        if o.tamper.is_none() && o.twin.is_none() {
            next_seq[by] += 1;
        }
        let kind = match &o.kind {
            OpSpecKind::Create {
                node,
                parent,
                payload,
            } => OpKind::Create {
                node: nodes[*node],
                parent: parent.map_or(NodeId::ROOT, |p| nodes[p]),
                position: next_position(&replicas[by]),
                payload: payload.as_ref().map(|p| p.as_bytes().to_vec()),
            },
            OpSpecKind::Move { node, parent } | OpSpecKind::Restore { node, parent } => {
                OpKind::Move {
                    node: nodes[*node],
                    parent: parent.map_or(NodeId::ROOT, |p| nodes[p]),
                    position: next_position(&replicas[by]),
                }
            }
            OpSpecKind::Delete { node } => {
                let mut vv: VersionVector = seen
                    .iter()
                    .filter(|&&j| s.ops[j].tamper.is_none())
                    .map(|&j| (ops[j].id().replica(), ops[j].id().seq()))
                    .collect();
                if setup_seq > vv.get(&replicas[0]) {
                    vv.set(replicas[0], setup_seq);
                }
                OpKind::Delete {
                    node: nodes[*node],
                    seen: vv,
                }
            }
            OpSpecKind::SetPayload { node, payload } => OpKind::SetPayload {
                node: nodes[*node],
                payload: payload.as_bytes().to_vec(),
            },
        };
        let op = Op::new(OpId::new(replicas[by], seq), Lamport::new(lamport), kind);
        let chain = chain_ref(&cids(s, &delegations, &o.chain));
        let signed = match o.tamper {
            Some(Tamper::OtherDocument) => {
                let other = Document::new(keys[0].did(), [0xee; 16]).id();
                sign_op(&keys[by], &other, o.time, &chain, op)
            }
            _ => sign_op(&keys[by], &doc, o.time, &chain, op),
        }
        .expect("own replica");
        let signed = match o.tamper {
            Some(Tamper::Signature) => {
                let a = signed.attestation().expect("signed");
                let mut sig = *a.signature();
                sig[7] ^= 0x01;
                let a = canopy_tree::Attestation::new(*a.doc(), a.time(), *a.chain(), sig);
                signed.unsigned().with_attestation(a)
            }
            Some(Tamper::Unsigned) => signed.unsigned(),
            _ => signed,
        };
        ops.push(signed);
    }

    let revocations = s
        .revocations
        .iter()
        .map(|r| {
            let cut: BTreeMap<[u8; 32], u64> = r
                .cutoffs
                .iter()
                .map(|&(p, c)| {
                    let seq = match c {
                        Cutoff::Seq(n) => n,
                        Cutoff::Op(j) => ops[j].id().seq(),
                    };
                    (*replicas[p].as_bytes(), seq)
                })
                .collect();
            let keep = r.keep.iter().map(|&k| delegations[k].cid()).collect();
            Revocation::issue(&keys[r.issuer], delegations[r.delegation].cid(), cut, keep)
        })
        .collect();

    Minted {
        document,
        nodes,
        chains: chains
            .into_iter()
            .map(|c| Entry::Chain(c).encode())
            .collect(),
        delegations,
        setup,
        ops,
        revocations,
    }
}

/// What became of one op on a replica, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Allow,
    /// Denied; the reason class when this replica's reports gave it.
    Deny(Option<String>),
    Skip,
    Pending,
    Reject(String),
    /// One version of an equivocated op: logged and denied for the equivocation, or refused as
    /// the conflicting version (which one depends on the delivery order).
    Equivocated,
    Lost,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Allow => f.write_str("allow"),
            Fate::Deny(Some(c)) => write!(f, "deny:{c}"),
            Fate::Deny(None) => f.write_str("deny"),
            Fate::Skip => f.write_str("skip"),
            Fate::Pending => f.write_str("pending"),
            Fate::Reject(c) => write!(f, "reject:{c}"),
            Fate::Equivocated => f.write_str("equivocated"),
            Fate::Lost => f.write_str("lost (neither logged, pending nor rejected)"),
        }
    }
}

/// The reason class of a denial: the chain rule's class (`spec/caps.md` §5), or `Unsigned` /
/// `Unknown` / `Equivocation`.
pub fn denial_class(d: &Denial) -> String {
    match d {
        Denial::Chain { error, .. } => error.class().to_owned(),
        Denial::Unsigned => "Unsigned".to_owned(),
        Denial::Unknown(_) => "Unknown".to_owned(),
        Denial::Equivocation { .. } => "Equivocation".to_owned(),
        _ => format!("{d}"),
    }
}

/// The class of an ingest rejection (its variant name).
pub fn ingest_class(e: &IngestError) -> &'static str {
    match e {
        IngestError::Decode(_) => "Decode",
        IngestError::Unsigned { .. } => "Unsigned",
        IngestError::WrongDocument { .. } => "WrongDocument",
        IngestError::BadSignature { .. } => "BadSignature",
        IngestError::BadReplicaKey { .. } => "BadReplicaKey",
        IngestError::BadDelegation { .. } => "BadDelegation",
        IngestError::MalformedDelegation { .. } => "MalformedDelegation",
        IngestError::Invalid { .. } => "Invalid",
        IngestError::Equivocation(_) => "Equivocation",
        _ => "Unclassified",
    }
}

/// The converged state of one replica, in scenario names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Final {
    tree: String,
    trash: String,
    payloads: Vec<Option<String>>,
    fates: Vec<Fate>,
    reads: Vec<Vec<String>>,
}

/// A failure of the machinery itself (store error, a scenario the engine cannot take).
#[derive(Debug)]
struct Broken(String);

impl<E: std::error::Error> From<E> for Broken {
    fn from(e: E) -> Self {
        Broken(e.to_string())
    }
}

fn deliver<S: Store>(s: &Scenario, m: &Minted, store: S, order: &[Item]) -> Result<Final, Broken> {
    let observer = ReplicaId::from_bytes(*principal_key("observer").did().public_key());
    let mut replica = Authz::new(store, m.document, observer)?;
    // The ingest result of each delivered op, by op index (a tampered op shares its id).
    let mut last: BTreeMap<usize, Result<Accepted, IngestError>> = BTreeMap::new();
    // The last reported denial reason of each op (exact for the total-order replica, where
    // nothing is ever redone).
    let mut reasons: BTreeMap<OpId, Option<String>> = BTreeMap::new();
    fn note(reasons: &mut BTreeMap<OpId, Option<String>>, id: OpId, outcome: &Outcome<Denial>) {
        match outcome {
            Outcome::Denied { reason } => {
                reasons.insert(id, Some(denial_class(reason)));
            }
            Outcome::Duplicate | Outcome::Pending { .. } => {}
            _ => {
                reasons.insert(id, None);
            }
        }
    }

    // Up front: delegations not named by the order, every chain list, the starting tree.
    let mut first: Vec<Vec<u8>> = Vec::new();
    for (i, d) in m.delegations.iter().enumerate() {
        if !order.contains(&Item::Delegation(i)) && !s.withheld.contains(&i) {
            first.push(Entry::Delegation(d.clone()).encode());
        }
    }
    first.extend(m.chains.iter().cloned());
    first.extend(m.setup.iter().cloned());
    let report = replica.ingest(&first)?;
    for r in &report.items {
        match r {
            Err(IngestError::BadDelegation { cid })
                if s.delegations
                    .iter()
                    .zip(&m.delegations)
                    .any(|(spec, d)| spec.forged && d.cid() == *cid) => {}
            Err(e) => return Err(Broken(format!("setup entry rejected: {e}"))),
            Ok(_) => {}
        }
    }
    for item in order {
        let bytes = match *item {
            Item::Op(j) => Entry::Op(m.ops[j].clone()).encode(),
            Item::Revocation(j) => Entry::Revocation(m.revocations[j].clone()).encode(),
            Item::Delegation(j) => Entry::Delegation(m.delegations[j].clone()).encode(),
        };
        let report = replica.ingest([bytes])?;
        for r in report.released.iter().chain(&report.redecided) {
            note(&mut reasons, r.id, &r.outcome);
        }
        if let (Item::Op(j), Some(r)) = (item, report.items.into_iter().next()) {
            if let Ok(Accepted::Op { id, outcome }) = &r {
                note(&mut reasons, *id, outcome);
            }
            last.insert(*j, r);
        }
    }

    // Re-deciding the whole converged log must change nothing.
    let redo = replica.tree_mut().redecide_from(Lamport::new(1))?;
    if !redo.events.is_empty() || !redo.ops.is_empty() {
        return Err(Broken(format!(
            "re-deciding the converged log changed it: {:?} {:?}",
            redo.ops, redo.events
        )));
    }

    let tree = replica.tree();
    tree.check_invariants()
        .map_err(|e| Broken(format!("tree invariants: {e}")))?;
    let names: BTreeMap<NodeId, &str> = m
        .nodes
        .iter()
        .zip(&s.nodes)
        .map(|(id, n)| (*id, n.as_str()))
        .collect();
    let outline = |root: NodeId| -> Result<Outline, Broken> {
        fn walk<S: Store, P: canopy_tree::Policy>(
            tree: &canopy_tree::Tree<S, P>,
            names: &BTreeMap<NodeId, &str>,
            parent: NodeId,
        ) -> Result<Vec<OutlineNode>, Broken> {
            let mut out = Vec::new();
            for c in tree.children(parent, None, usize::MAX)? {
                out.push(OutlineNode {
                    name: names
                        .get(&c.node)
                        .map_or_else(|| format!("?{}", c.node), |n| (*n).to_owned()),
                    children: walk(tree, names, c.node)?,
                });
            }
            Ok(out)
        }
        Ok(Outline {
            roots: walk(tree, &names, root)?,
        })
    };
    let live = outline(NodeId::ROOT)?;
    let trash = outline(NodeId::TRASH)?;

    let mut payloads = Vec::with_capacity(m.nodes.len());
    for id in &m.nodes {
        payloads.push(
            tree.payload(*id)?
                .map(|p| String::from_utf8_lossy(&p).into_owned()),
        );
    }

    let mut fates = Vec::with_capacity(m.ops.len());
    for (j, op) in m.ops.iter().enumerate() {
        let id = op.id();
        let fate = match tree.store().entry(id)? {
            Some(e) if e.op == *op => match e.effect {
                Effect::Applied => Fate::Allow,
                Effect::Denied => Fate::Deny(reasons.get(&id).cloned().flatten()),
                _ => Fate::Skip,
            },
            // Another op holds this id (a tampered op shares its author's next seq).
            Some(_) | None => match last.get(&j) {
                Some(Err(e)) => Fate::Reject(ingest_class(e).to_owned()),
                _ if tree.store().pending_get(id)?.as_ref() == Some(op) => Fate::Pending,
                Some(Ok(Accepted::Held { .. })) => Fate::Pending,
                _ => Fate::Lost,
            },
        };
        // Either version of an equivocated op: the same fate whichever one this replica logged.
        let twinned = s.ops[j].twin.is_some() || s.ops.iter().any(|o| o.twin == Some(j));
        let refused = matches!(&fate, Fate::Reject(c) if c == "Equivocation");
        let fate = if twinned && (refused || equivocation_denial(&fate)) {
            Fate::Equivocated
        } else {
            fate
        };
        fates.push(fate);
    }

    let mut reads = Vec::with_capacity(s.reads.len());
    let live_nodes: Vec<&str> = live.preorder().into_iter().map(|(_, n)| n).collect();
    for r in &s.reads {
        let reader = principal_key(&s.principals[r.principal]).did();
        let chain: ChainRef = chain_ref(&cids(s, &m.delegations, &r.chain));
        let mut visible = Vec::new();
        for name in &live_nodes {
            let Some(i) = s.nodes.iter().position(|n| n == name) else {
                continue;
            };
            let verdict = replica.authorize_read(&reader, &chain, r.ability, m.nodes[i], r.time)?;
            if matches!(verdict, Verdict::Allow) {
                visible.push((*name).to_owned());
            }
        }
        visible.sort();
        reads.push(visible);
    }

    Ok(Final {
        tree: live.render(),
        trash: trash.render(),
        payloads,
        fates,
        reads,
    })
}

/// The delivery orders a scenario is run in: the total order (revocations first, then the ops
/// by `(lamport, replica)`: nothing is ever redone, so every reported reason is final), listing
/// order (ops, then revocations), the reverse, every order the file gives, and
/// [`shuffles`] reproducible shuffles of the listing order.
const TOTAL: &str = "total order";

fn orders(s: &Scenario, m: &Minted) -> Vec<(String, Vec<Item>)> {
    let listing: Vec<Item> = (0..s.ops.len())
        .map(Item::Op)
        .chain((0..s.revocations.len()).map(Item::Revocation))
        .collect();
    let mut reverse = listing.clone();
    reverse.reverse();
    let mut total: Vec<(canopy_tree::LogKey, usize)> =
        (0..s.ops.len()).map(|j| (m.ops[j].key(), j)).collect();
    total.sort();
    let total: Vec<Item> = (0..s.revocations.len())
        .map(Item::Revocation)
        .chain(total.into_iter().map(|(_, j)| Item::Op(j)))
        .collect();
    let mut out = vec![
        (TOTAL.to_owned(), total),
        ("listing order".to_owned(), listing),
        ("reverse order".to_owned(), reverse),
    ];
    for (i, d) in s.deliveries.iter().enumerate() {
        out.push((format!("delivery[{i}]"), d.clone()));
    }
    for k in 0..shuffles() {
        let seed = digest("shuffle", &format!("{}/{k}", s.name));
        let mut state = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        let mut order = out[1].1.clone();
        // Fisher-Yates with splitmix64: reproducible from the case name and k.
        for i in (1..order.len()).rev() {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            order.swap(i, (z % (i as u64 + 1)) as usize);
        }
        out.push((format!("shuffle {k}"), order));
    }
    out
}

/// How many shuffled delivery orders each case also runs: `POLICY_TESTS_SHUFFLES`, default 2.
fn shuffles() -> usize {
    std::env::var("POLICY_TESTS_SHUFFLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// A denial for an equivocation (or one whose reason this replica could not report).
fn equivocation_denial(f: &Fate) -> bool {
    matches!(f, Fate::Deny(None)) || matches!(f, Fate::Deny(Some(c)) if c == "Equivocation")
}

fn expect_matches(e: &OpExpect, f: &Fate) -> bool {
    match (e, f) {
        (OpExpect::Equivocated, Fate::Equivocated) => true,
        (OpExpect::Allow, Fate::Allow)
        | (OpExpect::Pending, Fate::Pending)
        | (OpExpect::Skip, Fate::Skip) => true,
        (OpExpect::Deny(None), Fate::Deny(_)) => true,
        (OpExpect::Deny(Some(c)), Fate::Deny(Some(got))) => c == got,
        (OpExpect::Reject(None), Fate::Reject(_)) => true,
        (OpExpect::Reject(Some(c)), Fate::Reject(got)) => c == got,
        _ => false,
    }
}

/// Runs one scenario: every delivery order on a [`MemoryStore`] replica, the listing order also
/// on a `SqliteStore` replica; all must agree, then the expectations are checked.
pub fn run(s: &Scenario) -> CaseResult {
    let m = mint(s);
    let mut failures = Vec::new();
    let mut finals: Vec<(String, Final)> = Vec::new();
    for (label, order) in orders(s, &m) {
        match deliver(s, &m, MemoryStore::new(), &order) {
            Ok(f) => finals.push((format!("memory, {label}"), f)),
            Err(Broken(e)) => failures.push(format!("memory, {label}: {e}")),
        }
        if label == "listing order" {
            match canopy_tree::SqliteStore::open_in_memory()
                .map_err(Broken::from)
                .and_then(|store| deliver(s, &m, store, &order))
            {
                Ok(f) => finals.push((format!("sqlite, {label}"), f)),
                Err(Broken(e)) => failures.push(format!("sqlite, {label}: {e}")),
            }
        }
    }
    let replicas = finals.len();
    // Only the total-order replica's reasons are exact (elsewhere a redo can change a denied
    // op's reason without a report); the others are compared on outcomes alone.
    for (label, f) in finals.iter_mut() {
        if !label.ends_with(TOTAL) {
            for fate in &mut f.fates {
                if let Fate::Deny(reason) = fate {
                    *reason = None;
                }
            }
        }
    }
    if let Some((first_label, first)) = finals.first() {
        for (label, f) in &finals[1..] {
            if !same(f, first) {
                failures.push(format!(
                    "replicas diverged: {label} differs from {first_label}\n{}",
                    diff(s, first, f)
                ));
            }
        }
        check(s, first, &mut failures);
    }
    CaseResult {
        name: s.name.clone(),
        replicas,
        failures,
    }
}

/// Equal, except that a denial reason one replica could not report is not a difference.
fn same(a: &Final, b: &Final) -> bool {
    let fates = a.fates.iter().zip(&b.fates).all(|(x, y)| match (x, y) {
        (Fate::Deny(Some(p)), Fate::Deny(Some(q))) => p == q,
        (Fate::Deny(_), Fate::Deny(_)) => true,
        _ => x == y,
    });
    fates
        && a.tree == b.tree
        && a.trash == b.trash
        && a.payloads == b.payloads
        && a.reads == b.reads
}

fn diff(s: &Scenario, a: &Final, b: &Final) -> String {
    let mut out = Vec::new();
    if a.tree != b.tree {
        out.push(format!("tree:\n{}vs\n{}", a.tree, b.tree));
    }
    if a.trash != b.trash {
        out.push(format!("trash:\n{}vs\n{}", a.trash, b.trash));
    }
    for (i, (x, y)) in a.fates.iter().zip(&b.fates).enumerate() {
        if x != y {
            out.push(format!("op {}: {x} vs {y}", s.ops[i].name));
        }
    }
    for (i, (x, y)) in a.payloads.iter().zip(&b.payloads).enumerate() {
        if x != y {
            out.push(format!("payload of {}: {x:?} vs {y:?}", s.nodes[i]));
        }
    }
    for (i, (x, y)) in a.reads.iter().zip(&b.reads).enumerate() {
        if x != y {
            out.push(format!("read[{i}]: {x:?} vs {y:?}"));
        }
    }
    out.join("\n")
}

fn check(s: &Scenario, f: &Final, failures: &mut Vec<String>) {
    for (i, o) in s.ops.iter().enumerate() {
        if let Some(e) = &o.expect {
            if !expect_matches(e, &f.fates[i]) {
                failures.push(format!("op {}: expected {e}, got {}", o.name, f.fates[i]));
            }
        }
    }
    if let Some(t) = &s.expect.tree {
        let want = t.render();
        if want != f.tree {
            failures.push(format!("tree: expected\n{want}got\n{}", f.tree));
        }
    }
    if let Some(t) = &s.expect.trash {
        let want = t.render();
        if want != f.trash {
            failures.push(format!("trash: expected\n{want}got\n{}", f.trash));
        }
    }
    for (node, want) in &s.expect.payloads {
        if f.payloads[*node] != *want {
            failures.push(format!(
                "payload of {}: expected {want:?}, got {:?}",
                s.nodes[*node], f.payloads[*node]
            ));
        }
    }
    for (i, r) in s.reads.iter().enumerate() {
        let mut want: Vec<String> = r.visible.iter().map(|&n| s.nodes[n].clone()).collect();
        want.sort();
        if want != f.reads[i] {
            failures.push(format!(
                "read[{i}] ({} with {}): expected {want:?}, got {:?}",
                s.principals[r.principal], r.ability, f.reads[i]
            ));
        }
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Cases whose every expectation held.
    pub passed: usize,
    /// Cases that failed, including files that do not parse.
    pub failed: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

/// The scenario files named by `paths`: files as given, directories as their `*.toml` files
/// (not recursive), sorted by name.
pub fn collect(paths: &[std::path::PathBuf]) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.retain(|f| f.extension().is_some_and(|x| x == "toml"));
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs scenario files, writing one line per case (failures followed by their details) and the
/// closing `N passed, M failed` line to `out`. A file that does not parse is a failed case.
pub fn run_files(
    files: &[std::path::PathBuf],
    out: &mut dyn std::io::Write,
) -> std::io::Result<Summary> {
    let mut sum = Summary::default();
    for f in files {
        match Scenario::load(f) {
            Ok(s) => {
                let r = run(&s);
                if r.passed() {
                    sum.passed += 1;
                } else {
                    sum.failed += 1;
                }
                writeln!(out, "{r}")?;
            }
            Err(e) => {
                sum.failed += 1;
                writeln!(out, "FAIL  {e}")?;
            }
        }
    }
    writeln!(out, "{sum}")?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin() -> Final {
        Final {
            tree: "docs\n".into(),
            trash: String::new(),
            payloads: vec![None],
            fates: vec![
                Fate::Allow,
                Fate::Deny(Some("Revoked".into())),
                Fate::Deny(None),
            ],
            reads: vec![vec!["docs".into()]],
        }
    }

    #[test]
    fn divergence_is_detected() {
        let a = fin();
        assert!(same(&a, &a));
        // a reason one replica could not report is not a difference
        let mut b = fin();
        b.fates[1] = Fate::Deny(None);
        b.fates[2] = Fate::Deny(Some("MatchError".into()));
        assert!(same(&a, &b));
        let changes: [fn(&mut Final); 6] = [
            |f| f.tree.push_str("  x\n"),
            |f| f.trash.push_str("x\n"),
            |f| f.payloads[0] = Some("p".into()),
            |f| f.fates[0] = Fate::Pending,
            |f| f.fates[1] = Fate::Deny(Some("Expired".into())),
            |f| f.reads[0].clear(),
        ];
        for change in changes {
            let mut b = fin();
            change(&mut b);
            assert!(!same(&a, &b), "{b:?}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(node_id("docs"), node_id("docs"));
        assert_ne!(node_id("docs"), node_id("doc"));
        assert!(!node_id("docs").is_reserved());
        assert_eq!(principal_key("alice").did(), principal_key("alice").did());
        assert_ne!(principal_key("alice").did(), principal_key("bob").did());
    }
}
