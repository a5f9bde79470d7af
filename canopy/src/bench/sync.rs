//! `canopy bench sync`: the sync figures of issue 6.
//!
//! * In memory (the sync crate's benchmarks, `canopy_sync::bench`): in-sync check, 1,000 and 1%
//!   differences, cold/warm partial sync, at each `--sizes` document size; and a cold partial
//!   sync from a SQLite file in process.
//! * Over loopback WebSocket: a cold partial sync of a 10k-node subtree X from a 1M-node document
//!   of owner-signed ops served by `canopy_sync::net::serve` over `AuthzDocuments` (an authorized
//!   replica on a SQLite file), the reader authenticating with a handshake credential and reading
//!   through a depth-2 capability chain (every node record checked); and `--clients` concurrent live
//!   clients each pushing `--ops` ops to one server until every client holds every op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use canopy_caps::{
    chain_ref, sign_op, subtree_policy, Ability, Authz, AuthzPolicy, Delegation, DelegationFields,
    Document, Entry, Invocation, SecretKey,
};
use canopy_sync::memory::{FullPeer, PartialPeer};
use canopy_sync::net::{
    self, AuthzDocuments, Documents, Flow, IntoClientRequest, MemoryDocuments, ServerConfig,
    SqliteDocuments,
};
use canopy_sync::{
    frontier_count, AllowAll, Event, PartialReplica, PartialSession, Phase, Replica, Session,
};
use canopy_tree::{MemoryStore, NodeId, OpId, Place, ReplicaId, SqliteStore, Store, Tree};
use clap::Args;
use rand_core::OsRng;

use super::sqlite::TempDir;
use super::{median, Rng};

/// `canopy bench sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Print one JSON object per figure.
    #[arg(long)]
    json: bool,
    /// Document sizes (ops) of the in-memory figures.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<usize>,
    /// Nodes in the document of the WebSocket partial sync.
    #[arg(long, default_value_t = 1_000_000)]
    doc_nodes: usize,
    /// Nodes in the subtree X it syncs.
    #[arg(long, default_value_t = 10_000)]
    subtree_nodes: usize,
    /// Concurrent clients of the push figure.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Ops each client pushes.
    #[arg(long, default_value_t = 1_000)]
    ops: usize,
    /// Ops a client makes at a time (each time it hears from the others).
    #[arg(long, default_value_t = 10)]
    chunk: usize,
    /// The push figure's server: `authz` (as `canopy serve`: an authorized replica on a SQLite
    /// file; each client signs with its own key under its own grant), `sqlite` (a plain tree on
    /// a file: no signatures, no capability checks) or `memory` (a plain tree in memory).
    #[arg(long, default_value = "sqlite")]
    push_store: String,
    /// Runs of the WebSocket partial sync (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Skip the in-memory figures (WebSocket figures only).
    #[arg(long)]
    net_only: bool,
}

fn rep(i: u64) -> ReplicaId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[31] = 0x5c;
    ReplicaId::from_bytes(b)
}

fn print(json: bool, v: serde_json::Value) {
    if json {
        println!("{v}");
    } else {
        let obj = v.as_object().expect("figures are objects");
        let line: Vec<String> = obj.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", line.join(" "));
    }
}

/// Runs the sync figures.
pub fn run(args: SyncArgs) -> anyhow::Result<()> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        args.subtree_nodes >= 1 && args.subtree_nodes < args.doc_nodes,
        "--subtree-nodes must be below --doc-nodes"
    );
    if !args.net_only {
        for &n in &args.sizes {
            let x = 10_000.min(n / 2);
            canopy_sync::bench::run(n, x, |f| {
                if args.json {
                    println!("{}", f.to_json());
                } else {
                    println!("{f:?}");
                }
            })
            .map_err(|e| anyhow::anyhow!("in-memory sync benchmark: {e}"))?;
        }
        let n = args.sizes.iter().copied().max().unwrap_or(1_000_000);
        canopy_sync::bench::run_sqlite_partial(n, 10_000.min(n / 2), |f| {
            if args.json {
                println!("{}", f.to_json());
            } else {
                println!("{f:?}");
            }
        })
        .map_err(|e| anyhow::anyhow!("SQLite partial sync benchmark: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let v = rt.block_on(ws_partial(&args))?;
    print(args.json, v);
    let v = rt.block_on(ws_push(&args))?;
    print(args.json, v);
    Ok(())
}

/// Admits every client to read subtree(X) only (structure and payloads): the read filter a
/// `/tree/read` + `/tree/read/payload` grant on X gives.
/// Builds the document shape of the partial benchmark into `t`: X under ROOT with
/// `x_size - 1` descendants, the rest elsewhere; returns X.
fn build<S: Store, P: canopy_tree::Policy>(
    t: &mut Tree<S, P>,
    n: usize,
    x_size: usize,
) -> anyhow::Result<NodeId> {
    let mut rng = Rng(0x6e65_7473_796e_6331);
    let x = t
        .create(NodeId::ROOT, Place::Last, Some(vec![1; 16]))?
        .node();
    let mut inside = vec![x];
    let mut outside = vec![NodeId::ROOT];
    for i in 1..n {
        let in_x = i < x_size;
        let pool = if in_x { &inside } else { &outside };
        let parent = if rng.below(4) == 0 {
            pool[pool.len() - 1]
        } else {
            pool[pool.len() - 1 - rng.below(pool.len().min(64 + pool.len() / 8))]
        };
        let node = t
            .create(
                parent,
                Place::Last,
                Some((i as u64).to_le_bytes().repeat(2)),
            )?
            .node();
        if in_x {
            inside.push(node);
        } else {
            outside.push(node);
        }
    }
    Ok(x)
}

/// The benchmark's fixed keys: owner, an intermediate delegate, the reader.
fn bench_key(b: u8) -> SecretKey {
    SecretKey::from_bytes(&[b; 32])
}

fn key_replica(k: &SecretKey) -> ReplicaId {
    ReplicaId::from_bytes(*k.did().public_key())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes the owner's `n`-node document, every op signed by the owner, as the authorized
/// SQLite store at `path` (genesis first). Not timed. The ops are applied without re-deciding
/// them (the owner's empty chain allows every op, so the decisions are the ones an `Authz`
/// ingest makes); the server opens the file as an `Authz` replica.
fn signed_fixture(
    owner: &SecretKey,
    doc: &Document,
    n: usize,
    x_size: usize,
    path: &std::path::Path,
) -> anyhow::Result<(NodeId, u64)> {
    let mut t = Tree::new(MemoryStore::new(), key_replica(owner));
    let x = build(&mut t, n, x_size)?;
    let want = t.subtree(x).count() as u64;
    let store = Authz::new(SqliteStore::open(path)?, *doc, key_replica(owner))
        .map_err(|e| anyhow::anyhow!("writing the genesis: {e}"))?
        .into_store();
    let mut s = Tree::new(store, key_replica(owner));
    let (chain, time) = (chain_ref(&[]), unix_now());
    let total = t.store().log_len()?;
    let mut seq = 1u64;
    while seq <= total {
        let end = (seq + 50_000).min(total + 1);
        let mut ops = Vec::with_capacity((end - seq) as usize);
        for q in seq..end {
            let e = t
                .store()
                .entry(OpId::new(key_replica(owner), q))?
                .context("the log has a gap")?;
            ops.push(sign_op(owner, &doc.id(), time, &chain, e.op)?);
        }
        s.apply(ops)?;
        seq = end;
    }
    Ok((x, want))
}

/// A fresh handshake request for the reader (a new invocation: the server refuses replays).
fn reader_request(
    url: &str,
    reader: &SecretKey,
    doc: &Document,
    chain: &[Delegation],
) -> anyhow::Result<net::Request> {
    let fields = net::invocation_fields(
        doc.id(),
        *doc.owner(),
        net::SyncCommand::Read,
        chain.iter().map(Delegation::cid).collect(),
        unix_now(),
        60,
    );
    let inv = Invocation::issue(reader, fields, &mut OsRng);
    Ok(net::request(
        url,
        &net::Credential::new(inv, chain.to_vec(), None),
    )?)
}

async fn ws_partial(args: &SyncArgs) -> anyhow::Result<serde_json::Value> {
    let t0 = Instant::now();
    let (owner, alice, reader) = (bench_key(0xa1), bench_key(0xa2), bench_key(0xa3));
    let doc = Document::new(owner.did(), [0xd0; 16]);
    let tmp = TempDir::new("sync-ws")?;
    let docs = AuthzDocuments::new(tmp.path(), rep(3));
    let (x, want) = signed_fixture(
        &owner,
        &doc,
        args.doc_nodes,
        args.subtree_nodes,
        &docs.path(&doc.id()),
    )?;
    let build_s = t0.elapsed().as_secs_f64();
    // a depth-2 chain: owner -> alice (/tree/read on X) -> reader (/tree/read on X)
    let grant = |from: &SecretKey, to: &SecretKey| {
        Delegation::issue(
            from,
            DelegationFields {
                audience: to.did(),
                subject: Some(owner.did()),
                command: Ability::Read.command(),
                policy: subtree_policy(x.as_bytes(), &[]),
                expiration: None,
                not_before: None,
                meta: None,
            },
            &mut OsRng,
        )
    };
    let chain = vec![grant(&owner, &alice), grant(&alice, &reader)];

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/{}", listener.local_addr()?, doc.id());
    tokio::spawn(net::serve(
        listener,
        docs.clone(),
        docs,
        ServerConfig::default(),
    ));

    // a live client keeps the document open between the runs (as on a busy server)
    let held = reader_request(&url, &reader, &doc, &chain)?;
    let holder = tokio::spawn(async move {
        let mut p = PartialReplica::new(x, rep(4));
        let mut peer = PartialPeer::new(&mut p, PartialSession::new(net::transport_options(true)));
        let _ = net::sync(held, &mut peer, |_, _| Flow::Continue).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut ms = Vec::new();
    let mut first_view = Vec::new();
    let mut last = None;
    for i in 0..args.runs {
        let req = reader_request(&url, &reader, &doc, &chain)?;
        let mut p = PartialReplica::new(x, rep(10 + i as u64));
        let mut fv = None;
        let start = Instant::now();
        let report = {
            let mut peer =
                PartialPeer::new(&mut p, PartialSession::new(net::transport_options(false)));
            net::sync(req, &mut peer, |_, ev| {
                if matches!(ev, Event::FirstViewReady) && fv.is_none() {
                    fv = Some(start.elapsed().as_secs_f64() * 1e3);
                }
                Flow::Continue
            })
            .await?
        };
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        first_view.push(fv.unwrap_or(f64::NAN));
        ensure!(report.finished, "the partial sync did not finish");
        ensure!(
            p.len() as u64 == want,
            "the partial replica holds {} nodes, subtree(X) has {want}",
            p.len()
        );
        last = Some((report, p.len()));
    }
    holder.abort();
    let (report, nodes) = last.context("no run")?;
    Ok(serde_json::json!({
        "scenario": "ws_cold_partial",
        "transport": "websocket loopback",
        "server_store": "sqlite file (WAL), authorized replica (Authz), owner-signed ops",
        "read_filter": "CapsRead: depth-2 chain owner->alice->reader, /tree/read on subtree X; every node record and payload checked",
        "auth": "handshake credential (signed UCAN invocation + 2 delegations) verified per connection",
        "doc_nodes": args.doc_nodes,
        "nodes": nodes,
        "runs": args.runs,
        "ms_median": median(&mut ms),
        "ms_min": ms.iter().copied().fold(f64::INFINITY, f64::min),
        "first_view_ms_median": median(&mut first_view),
        "bytes_received": report.bytes_received,
        "bytes_sent": report.bytes_sent,
        "frames": report.frames_received + report.frames_sent,
        "build_s": build_s,
    }))
}

/// A push client's replica: a plain tree (unsigned ops) or an authorized replica that signs.
trait PushReplica: Replica + Send + 'static {
    fn local(&mut self) -> &mut Tree<Self::Store, Self::Policy>;
}

impl PushReplica for Tree<MemoryStore> {
    fn local(&mut self) -> &mut Self {
        self
    }
}

impl PushReplica for Authz<MemoryStore> {
    fn local(&mut self) -> &mut Tree<MemoryStore, AuthzPolicy> {
        self.tree_mut()
    }
}

/// One push client: waits for the start, makes `ops` ops in chunks as it hears from the
/// others, until it holds `total`.
async fn push_client<R: PushReplica>(
    mut t: R,
    req: net::Request,
    ready: Arc<tokio::sync::Barrier>,
    (ops, chunk, total): (usize, usize, u64),
) -> (R, usize, Result<net::SyncReport, String>, Option<String>) {
    let others = total - ops as u64;
    ready.wait().await;
    let mut made = 0usize;
    let mut error = None;
    let report = {
        let mut peer = FullPeer::new(&mut t, Session::new(AllowAll, net::transport_options(true)));
        net::sync(req, &mut peer, |p, ev| {
            let tree = p.replica().local();
            let held = tree.store().log_len().unwrap_or(0);
            let heard = matches!(ev, Event::Changed(_))
                || matches!(ev, Event::Progress(pr) if pr.phase == Phase::Live && made == 0);
            if heard && made < ops {
                // all the others are done: make the rest at once
                let n = if held - made as u64 >= others {
                    ops - made
                } else {
                    chunk.min(ops - made)
                };
                for _ in 0..n {
                    if let Err(e) = tree.create(NodeId::ROOT, Place::Last, Some(vec![7; 8])) {
                        error = Some(e.to_string());
                        return Flow::Stop;
                    }
                }
                made += n;
            }
            if tree.store().log_len().unwrap_or(0) == total {
                // Finish, not Stop: the ops this callback just made must still go out
                Flow::Finish
            } else {
                Flow::Continue
            }
        })
        .await
    };
    (t, made, report.map_err(|e| e.to_string()), error)
}

async fn ws_push(args: &SyncArgs) -> anyhow::Result<serde_json::Value> {
    let tmp = TempDir::new("sync-push")?;
    let total = (args.clients * args.ops) as u64;
    let ready = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let shape = (args.ops, args.chunk.max(1), total);
    let mut plain = Vec::new();
    let mut signed = Vec::new();
    let server_file;
    match args.push_store.as_str() {
        "sqlite" | "memory" => {
            let url = if args.push_store == "sqlite" {
                let docs = SqliteDocuments::new(tmp.path(), rep(3));
                server_file = Some(docs.path(&"push".parse()?));
                spawn_server(docs).await?
            } else {
                server_file = None;
                spawn_server(MemoryDocuments::new(rep(3))).await?
            };
            let url = format!("{url}/push");
            for c in 0..args.clients {
                let t = Tree::new(MemoryStore::new(), rep(100 + c as u64));
                let req = url.as_str().into_client_request()?;
                plain.push(tokio::spawn(push_client(t, req, ready.clone(), shape)));
            }
        }
        "authz" => {
            // canopy serve's server; the owner creates the document, every client has its own
            // key and a grant of /tree on the whole document (so it reads everything and
            // writes under ROOT); every replica knows every grant from the start
            let owner = bench_key(0xb0);
            let doc = Document::new(owner.did(), [0xb1; 16]);
            let docs = AuthzDocuments::new(tmp.path(), rep(3));
            server_file = Some(docs.path(&doc.id()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("ws://{}/{}", listener.local_addr()?, doc.id());
            tokio::spawn(net::serve(
                listener,
                docs.clone(),
                docs,
                ServerConfig::default(),
            ));
            let mut o = Authz::new(MemoryStore::new(), doc, key_replica(&owner))?;
            let req = authz_request(&url, &owner, &doc, &[], true)?;
            let mut peer = FullPeer::new(
                &mut o,
                Session::new(AllowAll, net::transport_options(false)),
            );
            ensure!(
                net::sync(req, &mut peer, |_, _| Flow::Continue)
                    .await?
                    .finished,
                "the owner could not create the document"
            );
            let keys: Vec<SecretKey> = (0..args.clients)
                .map(|c| {
                    let mut b = [0xc0u8; 32];
                    b[..8].copy_from_slice(&(c as u64).to_be_bytes());
                    SecretKey::from_bytes(&b)
                })
                .collect();
            let grants: Vec<Delegation> = keys
                .iter()
                .map(|k| {
                    Delegation::issue(
                        &owner,
                        DelegationFields {
                            audience: k.did(),
                            subject: Some(owner.did()),
                            command: Ability::All.command(),
                            policy: canopy_caps::Policy::new(Vec::new()),
                            expiration: None,
                            not_before: None,
                            meta: None,
                        },
                        &mut OsRng,
                    )
                })
                .collect();
            let mut proofs: Vec<Vec<u8>> = Vec::new();
            for g in &grants {
                proofs.push(Entry::Delegation(g.clone()).encode());
                proofs.push(Entry::Chain(vec![g.cid()]).encode());
            }
            for (k, g) in keys.into_iter().zip(&grants) {
                let mut a = Authz::new(MemoryStore::new(), doc, key_replica(&k))?;
                let report = a.ingest(&proofs)?;
                ensure!(
                    report.items.iter().all(Result::is_ok),
                    "a grant was refused"
                );
                let req = authz_request(&url, &k, &doc, std::slice::from_ref(g), false)?;
                a.state_mut()
                    .set_signer(k, chain_ref(&[g.cid()]), unix_now());
                signed.push(tokio::spawn(push_client(a, req, ready.clone(), shape)));
            }
        }
        other => bail!("--push-store is sqlite, memory or authz, not {other}"),
    }
    ready.wait().await;
    let start = Instant::now();
    let mut lost = 0u64;
    let mut bytes = 0u64;
    let mut frontiers = Vec::new();
    let limit = Duration::from_secs(1200);
    let mut finish = |made: usize,
                      report: Result<net::SyncReport, String>,
                      error: Option<String>,
                      f: canopy_tree::VersionVector|
     -> anyhow::Result<()> {
        if let Some(e) = error {
            bail!("a client's local op failed: {e}");
        }
        let report = report.map_err(|e| anyhow::anyhow!("a client's sync failed: {e}"))?;
        ensure!(made == args.ops, "a client made {made} ops");
        bytes += report.bytes_received + report.bytes_sent;
        lost += total - frontier_count(&f).min(total);
        frontiers.push(f);
        Ok(())
    };
    for task in plain {
        let (t, made, report, error) = tokio::time::timeout(limit, task)
            .await
            .context("a client did not get every op within 20 minutes")??;
        finish(made, report, error, t.store().frontier()?)?;
    }
    for task in signed {
        let (t, made, report, error) = tokio::time::timeout(limit, task)
            .await
            .context("a client did not get every op within 20 minutes")??;
        finish(made, report, error, t.tree().store().frontier()?)?;
    }
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        frontiers.windows(2).all(|w| w[0] == w[1]),
        "clients hold different op sets"
    );
    let server_ops = match server_file {
        Some(file) => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(SqliteStore::open(file)?.log_len()?)
        }
        None => None,
    };
    Ok(serde_json::json!({
        "scenario": "ws_push_concurrent",
        "transport": "websocket loopback",
        "server_store": args.push_store,
        "clients": args.clients,
        "ops_per_client": args.ops,
        "chunk": args.chunk,
        "ops_total": total,
        "seconds": secs,
        "ops_per_s_accepted": total as f64 / secs,
        "op_deliveries_per_s": (total * args.clients as u64) as f64 / secs,
        "lost": lost,
        "server_ops": server_ops,
        "client_bytes_total": bytes,
    }))
}

/// A fresh handshake request for `key` under `chain` (with the genesis when `genesis`).
fn authz_request(
    url: &str,
    key: &SecretKey,
    doc: &Document,
    chain: &[Delegation],
    genesis: bool,
) -> anyhow::Result<net::Request> {
    let fields = net::invocation_fields(
        doc.id(),
        *doc.owner(),
        net::SyncCommand::Read,
        chain.iter().map(Delegation::cid).collect(),
        unix_now(),
        300,
    );
    let inv = Invocation::issue(key, fields, &mut OsRng);
    let cred = net::Credential::new(inv, chain.to_vec(), genesis.then_some(*doc.nonce()));
    Ok(net::request(url, &cred)?)
}

async fn spawn_server<D: Documents>(docs: D) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("ws://{}", listener.local_addr()?);
    tokio::spawn(net::serve(
        listener,
        docs,
        net::OpenAccess,
        ServerConfig::default(),
    ));
    Ok(base)
}
