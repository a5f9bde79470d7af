//! `canopy key|token|share|ucan`: capability commands.
//!
//! File formats (see `spec/caps.md` §CLI files): a key file is the JSON object of
//! [`SecretKey::to_key_file`]; a chain file holds one token per line (standard padded base64 of
//! the envelope bytes), root first, `#` comments allowed; a revocation file holds one such line.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use canopy_caps::ipld_json::ipld_to_json;
use canopy_caps::{
    fixtures, subtree_policy, tree_args, Cid, Command, Context, Delegation, DelegationFields, Did,
    Invocation, Ipld, NodeBytes, Policy, Proofs, Request, Revocation, Revocations, SecretKey,
    ShareLink, Verifier,
};
use clap::{Args, Subcommand};
use rand_core::OsRng;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create a new Ed25519 key file and print its did:key.
    New {
        /// Where to write the key file (must not exist; mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the did:key of a key file (never the secret).
    Show {
        /// The key file.
        file: PathBuf,
    },
}

/// What a new delegation grants.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The command, e.g. /tree/write or /tree/read/payload.
    #[arg(long)]
    cmd: String,
    /// Limit the grant to this subtree (node id, 32 hex characters).
    #[arg(long)]
    subtree: Option<String>,
    /// Exclude this subtree (repeatable; needs --subtree, or applies below ROOT).
    #[arg(long)]
    exclude: Vec<String>,
    /// Lifetime in seconds from now.
    #[arg(long, conflicts_with = "exp")]
    expires_in: Option<u64>,
    /// Absolute expiry (Unix seconds).
    #[arg(long)]
    exp: Option<u64>,
    /// The document owner (root subject); defaults to the proof chain's subject, or the issuer.
    #[arg(long)]
    subject: Option<String>,
    /// The issuer's own chain file (root first); omit when the issuer is the owner.
    #[arg(long)]
    proof: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Delegate from a key (and its proof chain) to a DID; prints or writes the new chain file.
    Delegate {
        /// The issuer's key file.
        #[arg(long)]
        key: PathBuf,
        /// The audience's did:key.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        grant: GrantArgs,
        /// Not valid before (Unix seconds).
        #[arg(long)]
        nbf: Option<u64>,
        /// Write the chain file here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Decode every token of a file (delegations, invocations, revocations) to JSON.
    Inspect {
        /// Chain file (or a file with a single token).
        file: PathBuf,
    },
    /// Validate a chain file at a time, for a command on a node.
    Verify {
        /// Chain file, root first.
        file: PathBuf,
        /// Validation time (Unix seconds); default now.
        #[arg(long)]
        at: Option<u64>,
        /// The document owner; default the root delegation's subject.
        #[arg(long)]
        subject: Option<String>,
        /// Who acts; default the last delegation's audience.
        #[arg(long)]
        invoker: Option<String>,
        /// The command requested; default the last delegation's command.
        #[arg(long)]
        cmd: Option<String>,
        /// Target node (32 hex characters); with --ancestors builds the tree arguments.
        #[arg(long)]
        node: Option<String>,
        /// The node's ancestors, parent first up to ROOT, comma-separated hex ids.
        #[arg(long, value_delimiter = ',')]
        ancestors: Vec<String>,
        /// Revocation files to take into account (repeatable).
        #[arg(long)]
        revocation: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShareCmd {
    /// Create a share link for a subtree; prints the URL (the secret is in the fragment).
    Create {
        /// The issuer's key file.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        grant: GrantArgs,
        /// The URL the fragment is appended to.
        #[arg(long, default_value = "canopy://share")]
        base: String,
    },
    /// Claim a link for your key: writes your chain file and the link's revocation.
    Claim {
        /// The share link.
        link: String,
        /// The claimer's key file.
        #[arg(long)]
        key: PathBuf,
        /// Expected document owner (rejects links for other documents).
        #[arg(long)]
        owner: Option<String>,
        /// Where to write the resulting chain file.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the revocation that makes the link single-use.
        #[arg(long)]
        revocation_out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UcanCmd {
    /// Run UCAN spec fixture files (delegation.json, policy.json, invocation.json formats).
    Fixtures {
        /// Fixture files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Validation time for invocation fixtures (Unix seconds); default now.
        #[arg(long)]
        at: Option<u64>,
    },
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    SecretKey::from_key_file(&read(path)?).with_context(|| format!("key file {}", path.display()))
}

fn parse_did(s: &str) -> anyhow::Result<Did> {
    s.parse().with_context(|| format!("not a did:key: {s}"))
}

fn parse_node(s: &str) -> anyhow::Result<NodeBytes> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out)
        .with_context(|| format!("node id must be 32 hex characters: {s}"))?;
    Ok(out)
}

/// Token lines of a chain file, decoded from base64.
pub(crate) fn read_chain(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    read(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            STANDARD
                .decode(l)
                .with_context(|| format!("{} token {i}: not base64", path.display()))
        })
        .collect()
}

fn chain_text(tokens: &[Vec<u8>]) -> String {
    tokens.iter().map(|t| STANDARD.encode(t) + "\n").collect()
}

fn write_new(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let _ = secret;
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::New { out } => {
            let key = SecretKey::generate_os();
            write_new(&out, &key.to_key_file(), true)?;
            println!("{}", key.did());
        }
        KeyCmd::Show { file } => println!("{}", load_key(&file)?.did()),
    }
    Ok(())
}

/// A grant's command, policy, subject and expiry, plus the issuer's proof tokens.
type GrantParts = (Command, Policy, Did, Option<u64>, Vec<Vec<u8>>);

fn grant_parts(issuer: &SecretKey, g: &GrantArgs) -> anyhow::Result<GrantParts> {
    let command: Command = g
        .cmd
        .parse()
        .with_context(|| format!("bad command {}", g.cmd))?;
    let excluded = g
        .exclude
        .iter()
        .map(|x| parse_node(x))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let policy = match &g.subtree {
        Some(root) => subtree_policy(&parse_node(root)?, &excluded),
        None if excluded.is_empty() => Policy::default(),
        None => subtree_policy(&[0; 16], &excluded),
    };
    let proofs = match &g.proof {
        Some(p) => read_chain(p)?,
        None => Vec::new(),
    };
    let chain_subject = match proofs.first() {
        Some(root) => Delegation::decode(root)
            .context("proof chain root")?
            .subject()
            .copied(),
        None => None,
    };
    let subject = match (&g.subject, chain_subject) {
        (Some(s), _) => parse_did(s)?,
        (None, Some(s)) => s,
        (None, None) => issuer.did(),
    };
    let exp = g.exp.or(g.expires_in.map(|s| now().saturating_add(s)));
    Ok((command, policy, subject, exp, proofs))
}

pub fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Delegate {
            key,
            to,
            grant,
            nbf,
            out,
        } => {
            let issuer = load_key(&key)?;
            let (command, policy, subject, exp, mut proofs) = grant_parts(&issuer, &grant)?;
            let d = Delegation::issue(
                &issuer,
                DelegationFields {
                    audience: parse_did(&to)?,
                    subject: Some(subject),
                    command,
                    policy,
                    expiration: exp,
                    not_before: nbf,
                    meta: None,
                },
                &mut OsRng,
            );
            proofs.push(d.to_bytes().to_vec());
            let text = chain_text(&proofs);
            match out {
                Some(path) => {
                    write_new(&path, &text, false)?;
                    eprintln!("{}", d.cid());
                }
                None => print!("{text}"),
            }
        }
        TokenCmd::Inspect { file } => {
            let mut out = Vec::new();
            for (i, bytes) in read_chain(&file)?.iter().enumerate() {
                // A delegation, else an invocation, else a revocation record.
                let entry = match Delegation::decode(bytes) {
                    Ok(d) => json!({
                        "kind": "delegation",
                        "cid": d.cid().to_string(),
                        "version": d.version(),
                        "signature_valid": d.signature_valid(),
                        "payload": ipld_to_json(&Ipld::Map(d.payload().clone())),
                    }),
                    Err(dlg_err) => {
                        if let Ok(inv) = Invocation::decode(bytes) {
                            json!({
                                "kind": "invocation",
                                "cid": inv.cid().to_string(),
                                "signature_valid": inv.signature_valid(),
                                "payload": ipld_to_json(&Ipld::Map(inv.payload().clone())),
                            })
                        } else if let Ok(rev) = Revocation::decode(bytes) {
                            json!({
                                "kind": "revocation",
                                "cid": rev.cid().to_string(),
                                "signature_valid": true,
                                "issuer": rev.issuer().to_string(),
                                "delegation": rev.delegation().to_string(),
                                "cutoffs": rev.cutoffs().iter().map(|(r, s)| json!([hex::encode(r), s])).collect::<Vec<_>>(),
                                "keep": rev.keep().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                            })
                        } else {
                            return Err(dlg_err).with_context(|| format!("token {i}"));
                        }
                    }
                };
                out.push(entry);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        TokenCmd::Verify {
            file,
            at,
            subject,
            invoker,
            cmd,
            node,
            ancestors,
            revocation,
        } => {
            let tokens = read_chain(&file)?;
            let mut proofs = Proofs::new();
            let chain: Vec<Cid> = tokens.iter().map(|t| proofs.insert(t.clone())).collect();
            let decoded = tokens
                .iter()
                .map(|t| Delegation::decode(t))
                .collect::<Result<Vec<_>, _>>()
                .context("decoding the chain")?;
            let (root, leaf) = match (decoded.first(), decoded.last()) {
                (Some(r), Some(l)) => (r, l),
                _ => bail!("{}: no tokens", file.display()),
            };
            let subject = match subject {
                Some(s) => parse_did(&s)?,
                None => *root
                    .subject()
                    .ok_or_else(|| anyhow!("root delegation has no subject; pass --subject"))?,
            };
            let invoker = match invoker {
                Some(s) => parse_did(&s)?,
                None => *leaf.audience(),
            };
            let command: Command = match cmd {
                Some(c) => c.parse().with_context(|| format!("bad command {c}"))?,
                None => leaf.command().clone(),
            };
            let args = match node {
                Some(n) => {
                    let ancestors = ancestors
                        .iter()
                        .map(|a| parse_node(a))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    tree_args(&parse_node(&n)?, &ancestors)
                }
                None => Ipld::Map(Default::default()),
            };
            let mut revs = Revocations::new();
            for r in &revocation {
                let text = read(r)?;
                let bytes = STANDARD
                    .decode(text.trim())
                    .with_context(|| format!("{}: not base64", r.display()))?;
                revs.insert(
                    Revocation::decode(&bytes)
                        .with_context(|| format!("revocation {}", r.display()))?,
                );
            }
            let time = at.unwrap_or_else(now);
            let ctx = Context {
                time,
                revocations: &revs,
                op: None,
            };
            let req = Request {
                subject: &subject,
                invoker: &invoker,
                command: &command,
                args: &args,
            };
            match Verifier::new().check(&chain, &proofs, &req, &ctx) {
                Ok(ok) => println!(
                    "valid: {invoker} may {command} on {subject}'s document at {time} (chain of {}, expires {})",
                    ok.chain().len(),
                    ok.expiration().map_or("never".to_owned(), |e| e.to_string())
                ),
                Err(e) => bail!("invalid: {e}"),
            }
        }
    }
    Ok(())
}

pub fn share(cmd: ShareCmd) -> anyhow::Result<()> {
    match cmd {
        ShareCmd::Create { key, grant, base } => {
            let issuer = load_key(&key)?;
            let (command, policy, subject, exp, proofs) = grant_parts(&issuer, &grant)?;
            let exp = exp.ok_or_else(|| anyhow!("a share link needs --expires-in or --exp"))?;
            // Refuse to mint a link the issuer's own chain cannot back.
            let mut store = Proofs::new();
            let chain: Vec<Cid> = proofs.iter().map(|p| store.insert(p.clone())).collect();
            Verifier::new()
                .check_shape(&chain, &store, &subject, &issuer.did(), &command, now())
                .context("the issuer's chain does not grant this command")?;
            let link =
                ShareLink::create(&issuer, subject, proofs, command, policy, exp, &mut OsRng);
            println!("{}", link.to_url(&base).as_str());
        }
        ShareCmd::Claim {
            link,
            key,
            owner,
            out,
            revocation_out,
        } => {
            let claimer = load_key(&key)?;
            let owner = owner.as_deref().map(parse_did).transpose()?;
            let link = ShareLink::parse(&link).context("reading the link")?;
            let claimed = link
                .claim(&claimer.did(), owner.as_ref(), now(), &mut OsRng)
                .context("claiming the link")?;
            write_new(&out, &chain_text(&claimed.chain), false)?;
            write_new(
                &revocation_out,
                &(STANDARD.encode(claimed.revocation.to_bytes()) + "\n"),
                false,
            )?;
            println!("{}", claimed.delegation.cid());
        }
    }
    Ok(())
}

pub fn ucan(cmd: UcanCmd) -> anyhow::Result<()> {
    match cmd {
        UcanCmd::Fixtures { files, at } => {
            let time = at.unwrap_or_else(now);
            let (mut passed, mut failed) = (0usize, 0usize);
            for file in &files {
                let results = fixtures::run(&read(file)?, time)
                    .with_context(|| format!("{}", file.display()))?;
                for r in results {
                    let mark = if r.passed { "ok  " } else { "FAIL" };
                    println!("{mark} {}: {} — {}", file.display(), r.name, r.detail);
                    if r.passed {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            if failed > 0 {
                bail!("{failed} fixture case(s) failed");
            }
        }
    }
    Ok(())
}
