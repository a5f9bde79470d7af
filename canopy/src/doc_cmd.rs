//! `canopy doc create|add|ls`: an owner's (or a writer's) local authorized replica of a document.
//!
//! A document's local replica is the SQLite file `DATA/replicas/ID.canopy` (an authorized store:
//! its first document entry is the genesis, `spec/caps.md` §11). Local ops are signed with the
//! given key under the given chain and decided like any other op; `canopy sync` sends them.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use canopy_caps::{chain_ref, Authz, ChainRef, Delegation, Document, DocumentId, Entry, SecretKey};
use canopy_tree::{NodeId, Outcome, Place, ReplicaId, SqliteStore};
use clap::Subcommand;
use rand_core::OsRng;

use crate::caps_cmd::{load_key, read_chain};
use crate::net_cmd::data_dir;
use crate::partial_cmd;

#[derive(Debug, Subcommand)]
pub enum DocCmd {
    /// Create a document owned by a key: writes its local replica and prints its id.
    Create {
        /// The owner's key file.
        #[arg(long)]
        key: PathBuf,
        /// Data directory (default: $XDG_DATA_HOME/canopy, else ~/.local/share/canopy).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Create a node in the local replica (a signed op); prints its id.
    Add {
        /// The document id.
        #[arg(long)]
        doc: DocumentId,
        /// The writer's key file.
        #[arg(long)]
        key: PathBuf,
        /// The writer's chain file (omit for the owner).
        #[arg(long)]
        token: Option<PathBuf>,
        /// The parent node (32 hex digits, or `root`).
        #[arg(long, default_value = "root")]
        parent: String,
        /// The node's payload (UTF-8 text).
        #[arg(long)]
        text: Option<String>,
        /// Data directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// List the children of a node of the local replica (full, or partial with --subtree).
    Ls {
        /// The document id.
        #[arg(long)]
        doc: DocumentId,
        /// The node (32 hex digits, or `root`: with --subtree, the subtree's root).
        #[arg(long, default_value = "root")]
        node: String,
        /// Read the partial replica of this subtree (as synced by `canopy sync --subtree`).
        #[arg(long)]
        subtree: Option<NodeId>,
        /// The partial replica file (default: the one file DATA/replicas/*/DOC.SUBTREE.partial).
        #[arg(long, requires = "subtree")]
        replica: Option<PathBuf>,
        /// Data directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// The local full replica of `doc`.
pub(crate) fn replica_path(data: &Path, doc: &DocumentId) -> PathBuf {
    data.join("replicas").join(format!("{doc}.canopy"))
}

/// A key's replica id (its ops are signed by it, so the two are the same bytes).
pub(crate) fn key_replica(key: &SecretKey) -> ReplicaId {
    ReplicaId::from_bytes(*key.did().public_key())
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn parse_node(s: &str) -> anyhow::Result<NodeId> {
    if s == "root" {
        return Ok(NodeId::ROOT);
    }
    s.parse()
        .map_err(|_| anyhow::anyhow!("a node id is 32 hex digits or `root`: {s}"))
}

/// The delegations of a chain file, root first.
pub(crate) fn load_chain(path: &Path) -> anyhow::Result<Vec<Delegation>> {
    read_chain(path)?
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Delegation::decode(b)
                .with_context(|| format!("{} token {i} is not a delegation", path.display()))
        })
        .collect()
}

/// Opens the local replica of `doc` (it must exist).
fn open(data: &Path, doc: &DocumentId, key: &SecretKey) -> anyhow::Result<Authz<SqliteStore>> {
    let path = replica_path(data, doc);
    if !path.exists() {
        bail!(
            "no local replica of {doc} ({} does not exist): `canopy doc create`, or `canopy sync` it first",
            path.display()
        );
    }
    let store = SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let a = Authz::open_stored(store, key_replica(key))
        .with_context(|| format!("opening {} as an authorized replica", path.display()))?;
    if a.state().document().id() != *doc {
        bail!("{} holds another document", path.display());
    }
    Ok(a)
}

/// Registers a writer's chain in its replica (so its local ops can be decided) and signs with
/// it from now on.
pub(crate) fn set_writer(
    a: &mut Authz<SqliteStore>,
    key: SecretKey,
    chain: &[Delegation],
) -> anyhow::Result<ChainRef> {
    let cids: Vec<_> = chain.iter().map(Delegation::cid).collect();
    if !chain.is_empty() {
        let mut items: Vec<Vec<u8>> = chain
            .iter()
            .map(|d| Entry::Delegation(d.clone()).encode())
            .collect();
        items.push(Entry::Chain(cids.clone()).encode());
        let report = a.ingest(items).context("storing the chain")?;
        for r in &report.items {
            if let Err(e) = r {
                bail!("the chain was refused: {e}");
            }
        }
    }
    let r = chain_ref(&cids);
    a.state_mut().set_signer(key, r, now());
    Ok(r)
}

pub fn run(cmd: DocCmd) -> anyhow::Result<()> {
    match cmd {
        DocCmd::Create { key, data } => {
            let key = load_key(&key)?;
            let data = data_dir(data)?;
            let doc = Document::create(&key, &mut OsRng);
            let path = replica_path(&data, &doc.id());
            std::fs::create_dir_all(path.parent().expect("a replica path has a parent"))
                .with_context(|| format!("creating {}", data.display()))?;
            let store =
                SqliteStore::open(&path).with_context(|| format!("creating {}", path.display()))?;
            Authz::new(store, doc, key_replica(&key))
                .with_context(|| format!("writing the genesis to {}", path.display()))?;
            println!("{}", doc.id());
            eprintln!(
                "document {} owned by {} (local replica {})",
                doc.id(),
                doc.owner(),
                path.display()
            );
        }
        DocCmd::Add {
            doc,
            key,
            token,
            parent,
            text,
            data,
        } => {
            let key = load_key(&key)?;
            let data = data_dir(data)?;
            let chain = match &token {
                Some(t) => load_chain(t)?,
                None => Vec::new(),
            };
            let parent = parse_node(&parent)?;
            let mut a = open(&data, &doc, &key)?;
            set_writer(&mut a, key, &chain)?;
            let local = a
                .tree_mut()
                .create(parent, Place::Last, text.map(String::into_bytes))
                .context("creating the node")?;
            match &local.outcome {
                Outcome::Applied => println!("{}", local.node()),
                other => bail!("the op was not applied: {other:?}"),
            }
        }
        DocCmd::Ls {
            doc,
            node,
            subtree: Some(x),
            replica,
            data,
        } => {
            let path = match replica {
                Some(p) => p,
                None => partial_cmd::find(&data_dir(data)?, &doc.to_string(), x)?,
            };
            let node = match node.as_str() {
                "root" => None,
                n => Some(parse_node(n)?),
            };
            partial_cmd::ls(&path, x, node)?;
        }
        DocCmd::Ls {
            doc, node, data, ..
        } => {
            let data = data_dir(data)?;
            let node = parse_node(&node)?;
            let path = replica_path(&data, &doc);
            if !path.exists() {
                bail!("no local replica of {doc} ({})", path.display());
            }
            let store =
                SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let a = Authz::open_stored(store, ReplicaId::from_bytes([0; 32]))
                .with_context(|| format!("opening {}", path.display()))?;
            let tree = a.tree();
            let mut after = None;
            loop {
                let page = tree.children(node, after.as_ref(), 256)?;
                for c in &page {
                    let text = tree
                        .payload(c.node)?
                        .map(|p| String::from_utf8_lossy(&p[..]).into_owned())
                        .unwrap_or_default();
                    println!(
                        "{}  {}  ({} children)",
                        c.node,
                        text,
                        tree.child_count(c.node)?
                    );
                }
                match page.last() {
                    Some(last) if page.len() == 256 => after = Some(last.clone()),
                    _ => break,
                }
            }
        }
    }
    Ok(())
}
