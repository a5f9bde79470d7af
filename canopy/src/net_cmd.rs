//! `canopy serve` (an authorized sync server on SQLite) and `canopy sync` (sync a local replica
//! with it, authenticating with a key and a capability chain).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::partial_cmd;
use anyhow::{bail, Context};
use canopy_caps::{Ability, Authz, Delegation, Did, Document, DocumentId, Invocation, SecretKey};
use canopy_sync::memory::{FullPeer, PartialPeer};
use canopy_sync::net::{self, AuthzDocuments, Credential, Flow, ServerConfig, SyncCommand};
use canopy_sync::{AllowAll, Event, PartialSession, Phase, Progress, Session};
use canopy_tree::{NodeId, ReplicaId, SqliteStore, Store};

use crate::caps_cmd::load_key;
use crate::doc_cmd::{self, load_chain};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand_core::{OsRng, RngCore};

/// `canopy serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Data directory (documents go in DATA/docs, one SQLite file each). Default:
    /// $XDG_DATA_HOME/canopy, else ~/.local/share/canopy.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// `canopy sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The server, e.g. ws://127.0.0.1:7070
    url: String,
    /// The document id (64 hex digits, as printed by `canopy doc create`).
    #[arg(long)]
    doc: DocumentId,
    /// Your key file: the connection authenticates as its DID (a signed UCAN invocation).
    #[arg(long)]
    key: PathBuf,
    /// Your chain file (root first), as written by `canopy token delegate` or `canopy share
    /// claim`; omit when you are the document's owner.
    #[arg(long)]
    token: Option<PathBuf>,
    /// Sync only the subtree under this node (32 hex digits): a partial replica.
    #[arg(long)]
    subtree: Option<NodeId>,
    /// Stay connected after syncing and receive new ops until interrupted.
    #[arg(long)]
    live: bool,
    /// The local replica: a SQLite file (full, or partial with --subtree). Default:
    /// DATA/replicas/DOC.canopy (the file `canopy doc` uses), or
    /// DATA/replicas/HOST_PORT/DOC.SUBTREE.partial.
    #[arg(long)]
    replica: Option<PathBuf>,
    /// Data directory for the default replica path.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The default data directory: `$XDG_DATA_HOME/canopy`, else `~/.local/share/canopy`.
pub(crate) fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("canopy"));
    }
    let home =
        std::env::var_os("HOME").context("neither XDG_DATA_HOME nor HOME is set: use --data")?;
    Ok(PathBuf::from(home).join(".local/share/canopy"))
}

fn random_replica() -> ReplicaId {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    ReplicaId::from_bytes(b)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs the server until interrupted.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = data_dir(args.data)?.join("docs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let docs = AuthzDocuments::new(&dir, random_replica());
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "canopy serve: ws://{addr}/DOC_ID (documents in {}; every connection authenticates with a signed UCAN invocation, reads are filtered and writes decided by its capabilities)",
            dir.display()
        );
        net::serve(listener, docs.clone(), docs, ServerConfig::default())
            .await
            .context("accepting connections")
    })
}

/// A progress bar fed by the protocol's progress events.
struct Bar {
    bar: ProgressBar,
    first_view: Option<Duration>,
    start: Instant,
    last: Option<Progress>,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:12} [{bar:30}] {pos}/{len} items  {elapsed_precise}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            first_view: None,
            start: Instant::now(),
            last: None,
        }
    }

    fn event(&mut self, ev: &Event) {
        match ev {
            Event::Progress(p) => {
                let phase = match p.phase {
                    Phase::Connecting => "connecting",
                    Phase::Reconciling => "reconciling",
                    Phase::Downloading => "downloading",
                    Phase::Applying => "applying",
                    Phase::Live => "live",
                    _ => "done",
                };
                self.bar.set_message(phase);
                if let Some(t) = p.total {
                    self.bar.set_length(t);
                }
                self.bar.set_position(p.done);
                self.last = Some(*p);
            }
            Event::FirstViewReady if self.first_view.is_none() => {
                self.first_view = Some(self.start.elapsed());
            }
            Event::Refused { op, code } => {
                self.bar
                    .println(format!("the server refused op {op}: {code:?}"));
            }
            Event::Changed(c) if self.last.is_some_and(|p| p.phase == Phase::Live) => {
                self.bar.println(format!("live: {} change(s)", c.len()));
            }
            _ => {}
        }
    }

    fn finish(&self, report: &net::SyncReport) {
        self.bar.finish_and_clear();
        let (total, done) = self.last.map_or((None, 0), |p| (p.total, p.done));
        println!(
            "in sync: {done} of {} items received; {} frames / {} bytes sent, {} frames / {} bytes received; {:.0} ms{}",
            total.map_or("?".to_string(), |t| t.to_string()),
            report.frames_sent,
            report.bytes_sent,
            report.frames_received,
            report.bytes_received,
            self.start.elapsed().as_secs_f64() * 1e3,
            self.first_view
                .map(|d| format!(" (first view after {:.0} ms)", d.as_secs_f64() * 1e3))
                .unwrap_or_default()
        );
    }
}

fn doc_url(base: &str, doc: &DocumentId) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("ws://") || base.starts_with("wss://")) {
        bail!("the server URL must start with ws:// (got {base})");
    }
    Ok(format!("{base}/{doc}"))
}

/// A file name for the server part of the URL.
fn host_dir(base: &str) -> String {
    base.trim_start_matches("wss://")
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Who connects, and how it proves it: a fresh credential per connection (the server refuses a
/// replayed invocation).
struct Identity {
    key: SecretKey,
    chain: Vec<Delegation>,
    owner: Did,
    command: SyncCommand,
}

impl Identity {
    fn load(key: &Path, token: Option<&Path>) -> anyhow::Result<Self> {
        let key = load_key(key)?;
        let chain = match token {
            Some(t) => load_chain(t)?,
            None => Vec::new(),
        };
        // the owner is the root delegation's subject (or issuer); without a chain, the key
        let owner = match chain.first() {
            Some(root) => *root.subject().unwrap_or(root.issuer()),
            None => key.did(),
        };
        // read unless the chain only grants writes
        let read = Ability::Read.command();
        let command = match chain.last() {
            Some(leaf) if !leaf.command().proves(&read) => SyncCommand::Write,
            _ => SyncCommand::Read,
        };
        Ok(Self {
            key,
            chain,
            owner,
            command,
        })
    }

    /// A handshake request for `url` on `doc` (sending the genesis nonce when known, so the
    /// server can create the document).
    fn request(
        &self,
        url: &str,
        doc: &DocumentId,
        genesis: Option<&Document>,
    ) -> anyhow::Result<net::Request> {
        let owner = genesis.map_or(self.owner, |d| *d.owner());
        let fields = net::invocation_fields(
            *doc,
            owner,
            self.command,
            self.chain.iter().map(Delegation::cid).collect(),
            doc_cmd::now(),
            60,
        );
        let inv = Invocation::issue(&self.key, fields, &mut OsRng);
        let cred = Credential::new(inv, self.chain.clone(), genesis.map(|d| *d.nonce()));
        Ok(net::request(url, &cred)?)
    }
}

/// Syncs the local replica, then exits (or stays live).
pub fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let url = doc_url(&args.url, &args.doc)?;
    let me = Identity::load(&args.key, args.token.as_deref())?;
    let data = data_dir(args.data)?;
    let path = match args.replica {
        Some(p) => p,
        None => match args.subtree {
            None => doc_cmd::replica_path(&data, &args.doc),
            Some(x) => data
                .join("replicas")
                .join(host_dir(&args.url))
                .join(format!("{}.{x}.partial", args.doc)),
        },
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let options = net::transport_options(args.live);
    let rt = runtime()?;
    let mut bar = Bar::new();
    match args.subtree {
        None => {
            // its ops are signed by the key, so the replica id is the key's
            let replica = doc_cmd::key_replica(&me.key);
            let open = || {
                SqliteStore::open(&path)
                    .with_context(|| format!("opening the replica {}", path.display()))
            };
            let stored = if path.exists() {
                match Authz::open_stored(open()?, replica) {
                    Ok(a) => Some(a),
                    Err(canopy_caps::OpenError::NoDocument) => None,
                    Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
                }
            } else {
                None
            };
            let mut authz = match stored {
                Some(a) => a,
                None => {
                    // a new replica: learn the document's owner and nonce from the server
                    // (checked against the id)
                    let doc = rt
                        .block_on(net::fetch_genesis(
                            me.request(&url, &args.doc, None)?,
                            &args.doc,
                        ))
                        .with_context(|| format!("fetching the document from {url}"))?;
                    Authz::new(open()?, doc, replica)
                        .with_context(|| format!("creating {}", path.display()))?
                }
            };
            let doc = *authz.state().document();
            if doc.id() != args.doc {
                bail!(
                    "{} holds document {}, not {}",
                    path.display(),
                    doc.id(),
                    args.doc
                );
            }
            let req = me.request(&url, &args.doc, Some(&doc))?;
            let mut peer = FullPeer::new(&mut authz, Session::new(AllowAll, options));
            let report = rt
                .block_on(net::sync(req, &mut peer, |_, ev| {
                    bar.event(ev);
                    Flow::Continue
                }))
                .with_context(|| format!("syncing with {url}"))?;
            bar.finish(&report);
            let tree = authz.tree();
            println!(
                "replica {}: {} ops, {} nodes",
                path.display(),
                tree.store().log_len()?,
                tree.node_count()?
            );
        }
        Some(x) => {
            // a SQLite file: every applied batch is committed as it arrives
            let mut replica = partial_cmd::open(&path, x, random_replica)?;
            let result = {
                let mut peer = PartialPeer::new(&mut replica, PartialSession::new(options));
                rt.block_on(net::sync(
                    me.request(&url, &args.doc, None)?,
                    &mut peer,
                    |_, ev| {
                        bar.event(ev);
                        Flow::Continue
                    },
                ))
            };
            // whatever was completed is committed, even if the connection failed
            let report = result.with_context(|| format!("syncing with {url}"))?;
            bar.finish(&report);
            println!(
                "partial replica {}: {} nodes under {x}",
                path.display(),
                replica.count()?
            );
        }
    }
    Ok(())
}
