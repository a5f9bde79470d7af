//! Authentication at the WebSocket handshake: the `Authorization: Bearer` credential
//! (`spec/sync.md` §Transport, "Handshake credential").
//!
//! A client proves that it holds a DID by signing a short-lived UCAN invocation for the
//! document it connects to; it sends the delegations its chain names beside it, and (when it
//! may have to create the document on the server) the document's genesis nonce. The server
//! checks the invocation's signature, its expiry window, that its nonce was not seen before
//! within the window, that it is bound to this document, and that the chain is well-formed
//! from the document owner to the invoker for a sync command. What the chain grants node by
//! node is decided later, per read and per op, against the replica's current state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use canopy_caps::{
    Ability, Cid, Command, Delegation, Did, Document, DocumentId, Entry, Invocation,
    InvocationFields, Ipld, Proofs, Verifier, VerifyError, MAX_CHAIN_DEPTH,
};

/// Version byte of the credential encoding.
pub const CREDENTIAL_VERSION: u8 = 1;

/// Longest accepted invocation lifetime (`exp - now`), in seconds.
pub const MAX_WINDOW_SECS: u64 = 300;

/// How far in the future an invocation's `iat` may be (clock skew), in seconds.
pub const MAX_SKEW_SECS: u64 = 60;

/// Largest accepted credential, in bytes before base64 (8 delegations of up to 1 KiB and an
/// invocation fit).
pub const MAX_CREDENTIAL_BYTES: usize = 12 << 10;

/// Most invocations remembered for replay detection at once (each for its remaining window).
pub const MAX_REMEMBERED: usize = 1 << 20;

/// The `args` key binding an invocation to a document.
const DOC_ARG: &str = "doc";

/// What a client presents at the handshake.
#[derive(Debug, Clone)]
pub struct Credential {
    invocation: Invocation,
    delegations: Vec<Delegation>,
    genesis: Option<[u8; 16]>,
}

/// The invocation a client signs to connect to `doc` (owned by `owner`) with the chain
/// `proofs` (delegation CIDs, root first; empty for the owner), as `command` (`/tree/read` or
/// `/tree/write`), valid from `now` for `lifetime` seconds (at most [`MAX_WINDOW_SECS`]).
/// Sign it with [`Invocation::issue`] (which adds a fresh nonce).
pub fn invocation_fields(
    doc: DocumentId,
    owner: Did,
    command: SyncCommand,
    proofs: Vec<Cid>,
    now: u64,
    lifetime: u64,
) -> InvocationFields {
    let mut args = BTreeMap::new();
    args.insert(DOC_ARG.to_owned(), Ipld::Bytes(doc.as_bytes().to_vec()));
    InvocationFields {
        subject: owner,
        audience: None,
        command: command.command(),
        args,
        proofs,
        expiration: Some(now.saturating_add(lifetime.min(MAX_WINDOW_SECS))),
        issued_at: Some(now),
    }
}

/// The commands a sync connection may invoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncCommand {
    /// `/tree/read`: read what the chain grants (and push ops, each checked on its own).
    Read,
    /// `/tree/write`: push ops (each checked on its own); reads still need a read grant.
    Write,
}

impl SyncCommand {
    /// The UCAN command.
    pub fn command(self) -> Command {
        match self {
            Self::Read => Ability::Read.command(),
            Self::Write => Ability::Write.command(),
        }
    }

    fn of(command: &Command) -> Option<Self> {
        [Self::Read, Self::Write]
            .into_iter()
            .find(|c| c.command() == *command)
    }
}

/// Bytes that are not a credential (sent as 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialDecodeError {
    /// Not base64url without padding.
    #[error("not base64url")]
    Base64,
    /// Larger than [`MAX_CREDENTIAL_BYTES`].
    #[error("credential of {len} bytes exceeds the limit")]
    TooLarge {
        /// Decoded length.
        len: usize,
    },
    /// Ends early.
    #[error("truncated credential")]
    Truncated,
    /// Unknown version byte.
    #[error("unknown credential version {0}")]
    Version(u8),
    /// Unknown flag bits.
    #[error("unknown credential flags {0:#04x}")]
    Flags(u8),
    /// More delegations than a chain may have.
    #[error("{count} delegations exceed the chain depth limit")]
    TooManyDelegations {
        /// The count.
        count: usize,
    },
    /// A delegation envelope does not decode.
    #[error("delegation {index}: {source}")]
    Delegation {
        /// Its place in the credential.
        index: usize,
        /// Why.
        source: canopy_caps::DecodeError,
    },
    /// The invocation envelope does not decode.
    #[error("invocation: {0}")]
    Invocation(canopy_caps::DecodeError),
}

impl Credential {
    /// A credential: a signed invocation (see [`invocation_fields`]), the delegations its `prf`
    /// names, and the document's genesis nonce if the server may not have the document yet.
    pub fn new(
        invocation: Invocation,
        delegations: Vec<Delegation>,
        genesis: Option<[u8; 16]>,
    ) -> Self {
        Self {
            invocation,
            delegations,
            genesis,
        }
    }

    /// The invocation.
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    /// The delegations sent with it.
    pub fn delegations(&self) -> &[Delegation] {
        &self.delegations
    }

    /// The genesis nonce, if sent.
    pub fn genesis(&self) -> Option<&[u8; 16]> {
        self.genesis.as_ref()
    }

    /// The binary encoding: `version:u8 flags:u8 [nonce:16] count:u8 (len:u16be
    /// delegation){count} invocation`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CREDENTIAL_VERSION, u8::from(self.genesis.is_some())];
        if let Some(n) = &self.genesis {
            out.extend_from_slice(n);
        }
        out.push(self.delegations.len() as u8);
        for d in &self.delegations {
            let b = d.to_bytes();
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(b);
        }
        out.extend_from_slice(self.invocation.to_bytes());
        out
    }

    /// The `Authorization` header value: `Bearer ` and the encoding in base64url without
    /// padding.
    pub fn to_header(&self) -> String {
        format!("Bearer {}", URL_SAFE_NO_PAD.encode(self.encode()))
    }

    /// Decodes the binary encoding (untrusted input: never panics). Signatures are not checked
    /// here.
    pub fn decode(bytes: &[u8]) -> Result<Self, CredentialDecodeError> {
        use CredentialDecodeError as E;
        if bytes.len() > MAX_CREDENTIAL_BYTES {
            return Err(E::TooLarge { len: bytes.len() });
        }
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], E> {
            if r.len() < n {
                return Err(E::Truncated);
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        let version = take(1)?[0];
        if version != CREDENTIAL_VERSION {
            return Err(E::Version(version));
        }
        let flags = take(1)?[0];
        if flags > 1 {
            return Err(E::Flags(flags));
        }
        let genesis = if flags == 1 {
            let mut n = [0u8; 16];
            n.copy_from_slice(take(16)?);
            Some(n)
        } else {
            None
        };
        let count = usize::from(take(1)?[0]);
        if count > MAX_CHAIN_DEPTH {
            return Err(E::TooManyDelegations { count });
        }
        let mut delegations = Vec::with_capacity(count);
        for index in 0..count {
            let len = take(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let d =
                Delegation::decode(take(len)?).map_err(|source| E::Delegation { index, source })?;
            delegations.push(d);
        }
        let invocation = Invocation::decode(r).map_err(E::Invocation)?;
        Ok(Self {
            invocation,
            delegations,
            genesis,
        })
    }

    /// Decodes an `Authorization` header value (`Bearer …`).
    pub fn from_bearer(token: &str) -> Result<Self, CredentialDecodeError> {
        // base64 of the limit, rounded up
        if token.len() > MAX_CREDENTIAL_BYTES / 3 * 4 + 4 {
            return Err(CredentialDecodeError::TooLarge {
                len: token.len() / 4 * 3,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| CredentialDecodeError::Base64)?;
        Self::decode(&bytes)
    }
}

/// Why a credential was refused at the handshake. [`AuthError::status`] is the HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header: 401.
    #[error("credentials required (Authorization: Bearer)")]
    Missing,
    /// The credential does not decode: 401.
    #[error("malformed credential: {0}")]
    Malformed(#[from] CredentialDecodeError),
    /// The invocation's signature does not verify: 401.
    #[error("invocation signature does not verify")]
    BadSignature,
    /// The invocation has no expiry, or one more than [`MAX_WINDOW_SECS`] away: 401.
    #[error("invocation must expire within {MAX_WINDOW_SECS} s")]
    Window,
    /// The invocation expired: 401.
    #[error("invocation expired at {exp} (now {now})")]
    Expired {
        /// Its expiry.
        exp: u64,
        /// The server's time.
        now: u64,
    },
    /// The invocation was issued in the future (beyond [`MAX_SKEW_SECS`]): 401.
    #[error("invocation issued at {iat}, in the future (now {now})")]
    NotYetValid {
        /// Its `iat`.
        iat: u64,
        /// The server's time.
        now: u64,
    },
    /// This invocation was presented before: 401.
    #[error("invocation replayed")]
    Replayed,
    /// The invocation is not a sync invocation for this document (command, `args.doc`, or an
    /// audience): 401.
    #[error("invocation is not for syncing this document")]
    WrongInvocation,
    /// The chain names a delegation that was not sent: 401.
    #[error("delegation {cid} was not sent")]
    MissingProof {
        /// The delegation.
        cid: Cid,
    },
    /// A delegation's signature does not verify: 401.
    #[error("delegation {cid} signature does not verify")]
    BadDelegation {
        /// The delegation.
        cid: Cid,
    },
    /// The genesis nonce sent does not give this document id for the invocation's subject: 401.
    #[error("genesis does not match the document id")]
    BadGenesis,
    /// The server does not have the document and no genesis was sent: 404.
    #[error("unknown document")]
    UnknownDocument,
    /// The invocation's subject is not the document owner: 403.
    #[error("subject {subject} does not own this document")]
    NotOwner {
        /// The invocation's subject.
        subject: Did,
    },
    /// The chain does not delegate the command from the owner to the invoker now: 403.
    #[error("chain grants nothing here: {0}")]
    NotGranted(Box<VerifyError>),
    /// Too many invocations are remembered for replay detection: 503.
    #[error("too many recent invocations")]
    Busy,
}

impl AuthError {
    /// The HTTP status the handshake is refused with.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownDocument => 404,
            Self::NotOwner { .. } | Self::NotGranted(_) => 403,
            Self::Busy => 503,
            _ => 401,
        }
    }
}

/// An authenticated client: who it is, the chain it acts under, and what the document needs to
/// know to judge it (the entries to ingest before its session starts).
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The invoker (the reader of every read filter, the signer of its ops).
    pub reader: Did,
    /// Its sync command.
    pub command: SyncCommand,
    /// Its chain (delegation CIDs, root first; empty for the owner).
    pub chain: Vec<Cid>,
    /// The document, when the credential carried its genesis (the server may create it).
    pub genesis: Option<Document>,
    /// Document entries that make the chain known: each delegation, then the chain list.
    pub entries: Vec<Entry>,
}

/// Checks credentials for one server: remembers the invocations it accepted until they expire.
#[derive(Debug, Default)]
pub struct Authenticator {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    by_cid: HashMap<Cid, u64>,
    /// Smallest expiry in `by_cid` (prune only when something can be dropped).
    next_expiry: u64,
}

impl Authenticator {
    /// No invocation seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `bearer` (the header value after `Bearer `) for a connection to `doc` at `now`
    /// (Unix seconds). `owner` is the owner of the server's copy of the document, `None` if the
    /// server does not have it.
    ///
    /// An accepted invocation is remembered until it expires; the same one is refused as
    /// [`AuthError::Replayed`] after that.
    pub fn check(
        &self,
        doc: DocumentId,
        owner: Option<&Did>,
        bearer: Option<&str>,
        now: u64,
    ) -> Result<Authenticated, AuthError> {
        let cred = Credential::from_bearer(bearer.ok_or(AuthError::Missing)?)?;
        let inv = &cred.invocation;
        if !inv.signature_valid() {
            return Err(AuthError::BadSignature);
        }
        let exp = inv.expiration().ok_or(AuthError::Window)?;
        if exp <= now {
            return Err(AuthError::Expired { exp, now });
        }
        if exp - now > MAX_WINDOW_SECS {
            return Err(AuthError::Window);
        }
        if let Some(iat) = inv.issued_at() {
            if iat > now + MAX_SKEW_SECS {
                return Err(AuthError::NotYetValid { iat, now });
            }
        }
        let command = SyncCommand::of(inv.command()).ok_or(AuthError::WrongInvocation)?;
        if inv.audience().is_some() || !bound_to(inv.args(), &doc) {
            return Err(AuthError::WrongInvocation);
        }
        // the document's owner: the server's copy, else the genesis sent
        let subject = inv.subject();
        let genesis = match cred.genesis {
            Some(nonce) => {
                let d = Document::new(*subject, nonce);
                if d.id() != doc {
                    return Err(AuthError::BadGenesis);
                }
                Some(d)
            }
            None => None,
        };
        match (owner, &genesis) {
            (Some(o), _) if o != subject => return Err(AuthError::NotOwner { subject: *subject }),
            (None, None) => return Err(AuthError::UnknownDocument),
            _ => {}
        }
        // the chain, from the delegations sent
        let mut proofs = Proofs::new();
        let mut sent = Vec::with_capacity(cred.delegations.len());
        for d in &cred.delegations {
            sent.push(proofs.insert(d.to_bytes().to_vec()));
        }
        if let Some(cid) = inv.proofs().iter().find(|c| !sent.contains(c)) {
            return Err(AuthError::MissingProof { cid: *cid });
        }
        let mut verifier = Verifier::new();
        match verifier.check_shape(
            inv.proofs(),
            &proofs,
            subject,
            inv.issuer(),
            inv.command(),
            now,
        ) {
            Ok(_) => {}
            Err(VerifyError::InvalidSignature { cid: Some(cid), .. }) => {
                return Err(AuthError::BadDelegation { cid })
            }
            Err(VerifyError::MalformedProof { cid, .. }) => {
                return Err(AuthError::BadDelegation { cid })
            }
            Err(e) => return Err(AuthError::NotGranted(Box::new(e))),
        }
        self.remember(inv.cid(), exp, now)?;
        let mut entries: Vec<Entry> = cred
            .delegations
            .iter()
            .filter(|d| inv.proofs().contains(&d.cid()))
            .cloned()
            .map(Entry::Delegation)
            .collect();
        if !inv.proofs().is_empty() {
            entries.push(Entry::Chain(inv.proofs().to_vec()));
        }
        Ok(Authenticated {
            reader: *inv.issuer(),
            command,
            chain: inv.proofs().to_vec(),
            genesis,
            entries,
        })
    }

    /// Records an accepted invocation; refuses one seen before (still unexpired).
    fn remember(&self, cid: Cid, exp: u64, now: u64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock().expect("poisoned");
        if seen.next_expiry <= now && !seen.by_cid.is_empty() {
            seen.by_cid.retain(|_, e| *e > now);
            seen.next_expiry = seen.by_cid.values().copied().min().unwrap_or(u64::MAX);
        }
        if seen.by_cid.contains_key(&cid) {
            return Err(AuthError::Replayed);
        }
        if seen.by_cid.len() >= MAX_REMEMBERED {
            return Err(AuthError::Busy);
        }
        seen.by_cid.insert(cid, exp);
        seen.next_expiry = seen.next_expiry.min(exp);
        Ok(())
    }
}

/// True when `args` is exactly `{doc: <the document id's 32 bytes>}`.
fn bound_to(args: &Ipld, doc: &DocumentId) -> bool {
    match args {
        Ipld::Map(m) => {
            m.len() == 1
                && matches!(m.get(DOC_ARG), Some(Ipld::Bytes(b)) if b.as_slice() == doc.as_bytes())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_caps::{subtree_policy, DelegationFields, SecretKey};
    use rand_core::OsRng;

    struct Fixture {
        owner: SecretKey,
        reader: SecretKey,
        doc: Document,
        grant: Delegation,
    }

    fn fixture() -> Fixture {
        let owner = SecretKey::from_bytes(&[1; 32]);
        let reader = SecretKey::from_bytes(&[2; 32]);
        let doc = Document::new(owner.did(), [7; 16]);
        let grant = Delegation::issue(
            &owner,
            DelegationFields {
                audience: reader.did(),
                subject: Some(owner.did()),
                command: Ability::Read.command(),
                policy: subtree_policy(&[5; 16], &[]),
                expiration: None,
                not_before: None,
                meta: None,
            },
            &mut OsRng,
        );
        Fixture {
            owner,
            reader,
            doc,
            grant,
        }
    }

    fn bearer(key: &SecretKey, f: &Fixture, proofs: Vec<Cid>, now: u64, life: u64) -> String {
        let fields = invocation_fields(
            f.doc.id(),
            f.owner.did(),
            SyncCommand::Read,
            proofs,
            now,
            life,
        );
        let inv = Invocation::issue(key, fields, &mut OsRng);
        Credential::new(inv, vec![f.grant.clone()], None)
            .to_header()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_owned()
    }

    #[test]
    fn accepts_once_then_refuses_the_replay() {
        let f = fixture();
        let auth = Authenticator::new();
        let b = bearer(&f.reader, &f, vec![f.grant.cid()], 1000, 60);
        let owner = f.owner.did();
        let ok = auth
            .check(f.doc.id(), Some(&owner), Some(&b), 1000)
            .unwrap();
        assert_eq!(ok.reader, f.reader.did());
        assert_eq!(ok.chain, vec![f.grant.cid()]);
        assert_eq!(ok.entries.len(), 2);
        assert_eq!(
            auth.check(f.doc.id(), Some(&owner), Some(&b), 1001)
                .unwrap_err(),
            AuthError::Replayed
        );
    }

    #[test]
    fn refusals_are_typed_with_their_status() {
        let f = fixture();
        let auth = Authenticator::new();
        let owner = f.owner.did();
        let doc = f.doc.id();
        let check = |b: &str, now| auth.check(doc, Some(&owner), Some(b), now).unwrap_err();
        assert_eq!(
            auth.check(doc, Some(&owner), None, 1000).unwrap_err(),
            AuthError::Missing
        );
        // expired, and too long a window
        let b = bearer(&f.reader, &f, vec![f.grant.cid()], 1000, 60);
        assert!(matches!(check(&b, 1060), AuthError::Expired { .. }));
        assert_eq!(check(&b, 700), AuthError::Window);
        // forged: the bytes of one invocation, signature of another
        let mut raw = URL_SAFE_NO_PAD.decode(&b).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let e = check(&URL_SAFE_NO_PAD.encode(&raw), 1000);
        assert!(
            matches!(e, AuthError::BadSignature | AuthError::Malformed(_)),
            "{e:?}"
        );
        assert_eq!(e.status(), 401);
        // a stranger with no chain: not the owner, so no claim
        let stranger = SecretKey::from_bytes(&[3; 32]);
        let e = check(&bearer(&stranger, &f, vec![], 1000, 60), 1000);
        assert!(matches!(e, AuthError::NotGranted(_)), "{e:?}");
        assert_eq!(e.status(), 403);
        // the reader's chain presented by someone else: audience mismatch
        let e = check(&bearer(&stranger, &f, vec![f.grant.cid()], 1000, 60), 1000);
        assert_eq!(e.status(), 403);
        // a chain naming a delegation that was not sent
        let e = check(
            &bearer(&f.reader, &f, vec![canopy_caps::cid_of(b"x")], 1000, 60),
            1000,
        );
        assert!(matches!(e, AuthError::MissingProof { .. }));
        // another document's owner
        let other = SecretKey::from_bytes(&[4; 32]).did();
        let b = bearer(&f.reader, &f, vec![f.grant.cid()], 1000, 60);
        assert_eq!(
            auth.check(doc, Some(&other), Some(&b), 1000)
                .unwrap_err()
                .status(),
            403
        );
        // unknown document without genesis
        assert_eq!(
            auth.check(doc, None, Some(&b), 1000).unwrap_err(),
            AuthError::UnknownDocument
        );
        // garbage
        assert!(matches!(
            check("!!", 1000),
            AuthError::Malformed(CredentialDecodeError::Base64)
        ));
    }

    #[test]
    fn genesis_creates_only_for_the_matching_owner() {
        let f = fixture();
        let auth = Authenticator::new();
        let fields = invocation_fields(
            f.doc.id(),
            f.owner.did(),
            SyncCommand::Write,
            vec![],
            1000,
            30,
        );
        let inv = Invocation::issue(&f.owner, fields.clone(), &mut OsRng);
        let h = Credential::new(inv, vec![], Some(*f.doc.nonce())).to_header();
        let ok = auth
            .check(f.doc.id(), None, h.strip_prefix("Bearer "), 1000)
            .unwrap();
        assert_eq!(ok.genesis, Some(f.doc));
        assert!(ok.entries.is_empty());
        let inv = Invocation::issue(&f.owner, fields, &mut OsRng);
        let h = Credential::new(inv, vec![], Some([0; 16])).to_header();
        assert_eq!(
            auth.check(f.doc.id(), None, h.strip_prefix("Bearer "), 1000)
                .unwrap_err(),
            AuthError::BadGenesis
        );
    }

    /// A deterministic nonce source for the vectors (Ed25519 signatures are deterministic).
    struct Counter(u8);
    impl rand_core::RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            self.0 = self.0.wrapping_add(1);
            dest.fill(self.0);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Counter {}

    const VECTOR_NOW: u64 = 1_700_000_000;

    /// The vectors of `spec/vectors/handshake.json`, built from fixed keys and nonces.
    fn vectors() -> serde_json::Value {
        use serde_json::json;
        let mut rng = Counter(0);
        let owner = SecretKey::from_bytes(&[0x11; 32]);
        let reader = SecretKey::from_bytes(&[0x22; 32]);
        let stranger = SecretKey::from_bytes(&[0x33; 32]);
        let doc = Document::new(owner.did(), [0x44; 16]);
        let scope = [0x55; 16];
        let grant = |to: &SecretKey, exp: Option<u64>, rng: &mut Counter| {
            Delegation::issue(
                &owner,
                DelegationFields {
                    audience: to.did(),
                    subject: Some(owner.did()),
                    command: Ability::Read.command(),
                    policy: subtree_policy(&scope, &[]),
                    expiration: exp,
                    not_before: None,
                    meta: None,
                },
                rng,
            )
        };
        let g = grant(&reader, None, &mut rng);
        let old = grant(&reader, Some(VECTOR_NOW - 1), &mut rng);
        let now = VECTOR_NOW;
        let unsent = {
            let fields = invocation_fields(
                doc.id(),
                owner.did(),
                SyncCommand::Read,
                vec![g.cid()],
                now,
                60,
            );
            let inv = Invocation::issue(&reader, fields, &mut rng);
            Credential::new(inv, vec![], None).to_header()["Bearer ".len()..].to_owned()
        };
        let mut cred = |key: &SecretKey,
                        cmd: SyncCommand,
                        dlgs: Vec<Delegation>,
                        genesis: Option<[u8; 16]>,
                        iat: u64,
                        life: u64| {
            let prf = dlgs.iter().map(Delegation::cid).collect();
            let fields = invocation_fields(doc.id(), owner.did(), cmd, prf, iat, life);
            let inv = Invocation::issue(key, fields, &mut rng);
            let h = Credential::new(inv, dlgs, genesis).to_header();
            h["Bearer ".len()..].to_owned()
        };
        let valid = vec![
            json!({"name": "reader with a depth-1 subtree read chain", "bearer":
                cred(&reader, SyncCommand::Read, vec![g.clone()], None, now, 60),
                "server_has_document": true, "reader": reader.did().to_string(),
                "command": "/tree/read", "chain": [g.cid().to_string()]}),
            json!({"name": "owner creating the document (genesis nonce, empty chain)", "bearer":
                cred(&owner, SyncCommand::Write, vec![], Some(*doc.nonce()), now, 300),
                "server_has_document": false, "reader": owner.did().to_string(),
                "command": "/tree/write", "chain": []}),
        ];
        let mut invalid = vec![
            json!({"name": "expired", "bearer":
                cred(&reader, SyncCommand::Read, vec![g.clone()], None, now - 120, 60),
                "server_has_document": true, "error": "Expired", "status": 401}),
            json!({"name": "window over 300 s", "bearer":
                cred(&reader, SyncCommand::Read, vec![g.clone()], None, now + 200, 300),
                "server_has_document": true, "error": "Window", "status": 401}),
            json!({"name": "chain delegation not sent", "bearer": unsent,
                "server_has_document": true, "error": "MissingProof", "status": 401}),
            json!({"name": "unknown document, no genesis", "bearer":
                cred(&reader, SyncCommand::Read, vec![g.clone()], None, now, 60),
                "server_has_document": false, "error": "UnknownDocument", "status": 404}),
            json!({"name": "stranger without a chain", "bearer":
                cred(&stranger, SyncCommand::Read, vec![], None, now, 60),
                "server_has_document": true, "error": "NotGranted", "status": 403}),
            json!({"name": "reader's chain presented by a stranger", "bearer":
                cred(&stranger, SyncCommand::Read, vec![g.clone()], None, now, 60),
                "server_has_document": true, "error": "NotGranted", "status": 403}),
            json!({"name": "expired delegation", "bearer":
                cred(&reader, SyncCommand::Read, vec![old], None, now, 60),
                "server_has_document": true, "error": "NotGranted", "status": 403}),
        ];
        // a forged signature: the last byte of the invocation's signature flipped
        let mut raw = URL_SAFE_NO_PAD
            .decode(cred(
                &reader,
                SyncCommand::Read,
                vec![g.clone()],
                None,
                now,
                60,
            ))
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        invalid.push(json!({"name": "forged invocation signature", "bearer":
            URL_SAFE_NO_PAD.encode(&raw), "server_has_document": true,
            "error": "BadSignature", "status": 401}));
        json!({
            "description": "Handshake credentials (spec/sync.md, Transport: WebSocket, Handshake credential). `bearer` is the Authorization header value after `Bearer `; check it for `document` at `now`, with the server holding the document (owner known) or not.",
            "now": now,
            "document": {"id": doc.id().to_string(), "owner": owner.did().to_string(),
                "nonce": hex::encode(doc.nonce())},
            "valid": valid,
            "invalid": invalid,
        })
    }

    fn error_name(e: &AuthError) -> &'static str {
        match e {
            AuthError::Missing => "Missing",
            AuthError::Malformed(_) => "Malformed",
            AuthError::BadSignature => "BadSignature",
            AuthError::Window => "Window",
            AuthError::Expired { .. } => "Expired",
            AuthError::NotYetValid { .. } => "NotYetValid",
            AuthError::Replayed => "Replayed",
            AuthError::WrongInvocation => "WrongInvocation",
            AuthError::MissingProof { .. } => "MissingProof",
            AuthError::BadDelegation { .. } => "BadDelegation",
            AuthError::BadGenesis => "BadGenesis",
            AuthError::UnknownDocument => "UnknownDocument",
            AuthError::NotOwner { .. } => "NotOwner",
            AuthError::NotGranted(_) => "NotGranted",
            AuthError::Busy => "Busy",
        }
    }

    #[test]
    fn spec_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../spec/vectors/handshake.json"
        );
        let built = vectors();
        if std::env::var_os("CANOPY_WRITE_VECTORS").is_some() {
            let text = serde_json::to_string_pretty(&built).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
        }
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            file, built,
            "the vectors are reproducible from fixed keys and nonces"
        );
        let now = file["now"].as_u64().unwrap();
        let doc: DocumentId = file["document"]["id"].as_str().unwrap().parse().unwrap();
        let owner: Did = file["document"]["owner"].as_str().unwrap().parse().unwrap();
        let has = |v: &serde_json::Value| v["server_has_document"].as_bool().unwrap();
        for v in file["valid"].as_array().unwrap() {
            let auth = Authenticator::new();
            let got = auth
                .check(doc, has(v).then_some(&owner), v["bearer"].as_str(), now)
                .unwrap_or_else(|e| panic!("{}: {e}", v["name"]));
            assert_eq!(got.reader.to_string(), v["reader"].as_str().unwrap());
            assert_eq!(
                got.command.command().to_string(),
                v["command"].as_str().unwrap()
            );
            let chain: Vec<String> = got.chain.iter().map(ToString::to_string).collect();
            assert_eq!(serde_json::json!(chain), v["chain"]);
        }
        for v in file["invalid"].as_array().unwrap() {
            let auth = Authenticator::new();
            let e = auth
                .check(doc, has(v).then_some(&owner), v["bearer"].as_str(), now)
                .unwrap_err();
            assert_eq!(
                error_name(&e),
                v["error"].as_str().unwrap(),
                "{}",
                v["name"]
            );
            assert_eq!(u64::from(e.status()), v["status"].as_u64().unwrap());
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics() {
        let f = fixture();
        let inv = Invocation::issue(
            &f.reader,
            invocation_fields(f.doc.id(), f.owner.did(), SyncCommand::Read, vec![], 0, 9),
            &mut OsRng,
        );
        let good = Credential::new(inv, vec![f.grant.clone()], Some([1; 16])).encode();
        assert!(Credential::decode(&good).is_ok());
        for cut in 0..good.len() {
            assert!(Credential::decode(&good[..cut]).is_err());
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % b.len();
                b[i] ^= (x >> 8) as u8;
            }
            let _ = Credential::decode(&b);
        }
    }
}
