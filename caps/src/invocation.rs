//! UCAN 1.0 invocations (`ucan/inv@1.0.0`).

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;
use rand_core::CryptoRngCore;

use crate::envelope::{Envelope, Fields, Tag, MAX_SAFE_INT};
use crate::{Command, DecodeError, Did, SecretKey};

pub(crate) const INV: &str = "ucan/inv";

/// What a new invocation says; [`Invocation::issue`] signs it.
#[derive(Debug, Clone)]
pub struct InvocationFields {
    /// The resource owner the command acts on.
    pub subject: Did,
    /// Optional executor, when it differs from the subject.
    pub audience: Option<Did>,
    /// The command invoked.
    pub command: Command,
    /// The arguments the delegations' policies are evaluated over.
    pub args: BTreeMap<String, Ipld>,
    /// Delegation CIDs from the root (issued by the subject) to the leaf (to this issuer).
    pub proofs: Vec<Cid>,
    /// Expiry (Unix seconds), or `None`.
    pub expiration: Option<u64>,
    /// Issued-at (Unix seconds).
    pub issued_at: Option<u64>,
}

/// A decoded invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    envelope: Envelope,
    bytes: Vec<u8>,
    issuer: Did,
    subject: Did,
    audience: Option<Did>,
    command: Command,
    args: Ipld,
    proofs: Vec<Cid>,
    expiration: Option<u64>,
    issued_at: Option<u64>,
}

impl Invocation {
    /// Signs a new invocation with a fresh 16-byte nonce.
    pub fn issue<R: CryptoRngCore + ?Sized>(
        issuer: &SecretKey,
        fields: InvocationFields,
        rng: &mut R,
    ) -> Self {
        let mut nonce = vec![0u8; 16];
        rng.fill_bytes(&mut nonce);
        let s = |x: String| Ipld::String(x);
        let mut p = BTreeMap::new();
        p.insert("iss".to_owned(), s(issuer.did().to_string()));
        p.insert("sub".to_owned(), s(fields.subject.to_string()));
        if let Some(aud) = fields.audience {
            p.insert("aud".to_owned(), s(aud.to_string()));
        }
        p.insert("cmd".to_owned(), s(fields.command.to_string()));
        p.insert("args".to_owned(), Ipld::Map(fields.args));
        p.insert(
            "prf".to_owned(),
            Ipld::List(fields.proofs.into_iter().map(Ipld::Link).collect()),
        );
        p.insert("nonce".to_owned(), Ipld::Bytes(nonce));
        p.insert(
            "exp".to_owned(),
            fields
                .expiration
                .map_or(Ipld::Null, |t| Ipld::Integer(t.min(MAX_SAFE_INT).into())),
        );
        if let Some(iat) = fields.issued_at {
            p.insert(
                "iat".to_owned(),
                Ipld::Integer(iat.min(MAX_SAFE_INT).into()),
            );
        }
        let tag = Tag {
            kind: INV,
            version: "1.0.0",
        };
        let bytes = Envelope::seal(issuer, tag, p);
        Self::decode(&bytes).expect("a freshly sealed invocation decodes")
    }

    /// Decodes an invocation envelope (tags `ucan/inv@1.0.0` and `ucan/inv@1.0.0-rc.1`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope = Envelope::decode(bytes, INV)?;
        let mut f = Fields::new(envelope.payload.clone());
        let issuer = f.did("iss")?;
        let subject = f.did("sub")?;
        let audience = f.optional_did("aud")?;
        let command = f.string("cmd")?.parse()?;
        let args = match f.required("args")? {
            a @ Ipld::Map(_) => a,
            _ => return Err(DecodeError::InvalidField { field: "args" }),
        };
        let proofs = f.links("prf")?;
        f.bytes("nonce")?;
        f.optional_map("meta")?;
        let expiration = f.nullable_time("exp")?;
        let issued_at = f.optional_time("iat")?;
        match f.take("cause") {
            None | Some(Ipld::Link(_)) => {}
            Some(_) => return Err(DecodeError::InvalidField { field: "cause" }),
        }
        f.finish()?;
        Ok(Invocation {
            envelope,
            bytes: bytes.to_vec(),
            issuer,
            subject,
            audience,
            command,
            args,
            proofs,
            expiration,
            issued_at,
        })
    }

    /// The envelope bytes.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The CID of the envelope bytes.
    pub fn cid(&self) -> Cid {
        self.envelope.cid
    }
    /// True when the signature verifies against the issuer's key.
    pub fn signature_valid(&self) -> bool {
        self.envelope.signature_valid(&self.issuer)
    }
    /// `iss`
    pub fn issuer(&self) -> &Did {
        &self.issuer
    }
    /// `sub`
    pub fn subject(&self) -> &Did {
        &self.subject
    }
    /// `aud`
    pub fn audience(&self) -> Option<&Did> {
        self.audience.as_ref()
    }
    /// `cmd`
    pub fn command(&self) -> &Command {
        &self.command
    }
    /// `args` (always a map)
    pub fn args(&self) -> &Ipld {
        &self.args
    }
    /// `prf`, root first
    pub fn proofs(&self) -> &[Cid] {
        &self.proofs
    }
    /// `exp`
    pub fn expiration(&self) -> Option<u64> {
        self.expiration
    }
    /// `iat`
    pub fn issued_at(&self) -> Option<u64> {
        self.issued_at
    }
    /// The payload as IPLD.
    pub fn payload(&self) -> &BTreeMap<String, Ipld> {
        &self.envelope.payload
    }
}
