//! UCAN 1.0 delegations (`ucan/dlg@1.0.0`).

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;
use rand_core::CryptoRngCore;

use crate::envelope::{Envelope, Fields, Tag, MAX_SAFE_INT};
use crate::{Command, DecodeError, Did, Policy, SecretKey};

pub(crate) const DLG: &str = "ucan/dlg";

/// What a new delegation says; [`Delegation::issue`] signs it.
#[derive(Debug, Clone)]
pub struct DelegationFields {
    /// Who receives the capability.
    pub audience: Did,
    /// The resource owner, or `None` for a powerline delegation (any subject the issuer holds).
    pub subject: Option<Did>,
    /// The command granted (and every command below it).
    pub command: Command,
    /// Conditions on the invocation arguments.
    pub policy: Policy,
    /// Expiry (Unix seconds), or `None` for no expiry.
    pub expiration: Option<u64>,
    /// Not valid before (Unix seconds).
    pub not_before: Option<u64>,
    /// Free-form metadata.
    pub meta: Option<BTreeMap<String, Ipld>>,
}

/// A decoded delegation. Decoding checks the envelope and fields; the signature is checked by
/// [`Delegation::signature_valid`] (and once per CID by [`Verifier`](crate::Verifier)).
#[derive(Debug, Clone)]
pub struct Delegation {
    envelope: Envelope,
    bytes: Vec<u8>,
    issuer: Did,
    audience: Did,
    subject: Option<Did>,
    command: Command,
    policy: Policy,
    nonce: Vec<u8>,
    meta: Option<BTreeMap<String, Ipld>>,
    not_before: Option<u64>,
    expiration: Option<u64>,
}

impl Delegation {
    /// Signs a new delegation from `issuer` with a fresh 16-byte nonce from `rng`.
    pub fn issue<R: CryptoRngCore + ?Sized>(
        issuer: &SecretKey,
        fields: DelegationFields,
        rng: &mut R,
    ) -> Self {
        let mut nonce = vec![0u8; 16];
        rng.fill_bytes(&mut nonce);
        Self::issue_with_nonce(issuer, fields, nonce)
    }

    /// Signs a new delegation with a caller-chosen nonce (deterministic: for test vectors).
    pub fn issue_with_nonce(issuer: &SecretKey, fields: DelegationFields, nonce: Vec<u8>) -> Self {
        let mut p = BTreeMap::new();
        let s = |x: String| Ipld::String(x);
        p.insert("iss".to_owned(), s(issuer.did().to_string()));
        p.insert("aud".to_owned(), s(fields.audience.to_string()));
        p.insert(
            "sub".to_owned(),
            fields.subject.map_or(Ipld::Null, |d| s(d.to_string())),
        );
        p.insert("cmd".to_owned(), s(fields.command.to_string()));
        p.insert("pol".to_owned(), fields.policy.to_ipld());
        p.insert("nonce".to_owned(), Ipld::Bytes(nonce));
        p.insert(
            "exp".to_owned(),
            fields
                .expiration
                .map_or(Ipld::Null, |t| Ipld::Integer(t.min(MAX_SAFE_INT).into())),
        );
        if let Some(nbf) = fields.not_before {
            p.insert(
                "nbf".to_owned(),
                Ipld::Integer(nbf.min(MAX_SAFE_INT).into()),
            );
        }
        if let Some(meta) = fields.meta {
            p.insert("meta".to_owned(), Ipld::Map(meta));
        }
        let bytes = Envelope::seal(
            issuer,
            Tag {
                kind: DLG,
                version: "1.0.0",
            },
            p,
        );
        Self::decode(&bytes).expect("a freshly sealed delegation decodes")
    }

    /// Decodes a delegation envelope (tags `ucan/dlg@1.0.0` and `ucan/dlg@1.0.0-rc.1`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope = Envelope::decode(bytes, DLG)?;
        let mut f = Fields::new(envelope.payload.clone());
        let issuer = f.did("iss")?;
        let audience = f.did("aud")?;
        let subject = f.nullable_did("sub")?;
        let command = f.string("cmd")?.parse()?;
        let policy = Policy::from_ipld(&f.required("pol")?)?;
        let nonce = f.bytes("nonce")?;
        let meta = f.optional_map("meta")?;
        let not_before = f.optional_time("nbf")?;
        let expiration = f.nullable_time("exp")?;
        f.finish()?;
        Ok(Delegation {
            envelope,
            bytes: bytes.to_vec(),
            issuer,
            audience,
            subject,
            command,
            policy,
            nonce,
            meta,
            not_before,
            expiration,
        })
    }

    /// The envelope bytes.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The CIDv1 (dag-cbor, sha2-256) of the envelope bytes.
    pub fn cid(&self) -> Cid {
        self.envelope.cid
    }

    /// True when the signature verifies against the issuer's key.
    pub fn signature_valid(&self) -> bool {
        self.envelope.signature_valid(&self.issuer)
    }

    /// The DAG-CBOR bytes the signature covers: `{"h": header, "ucan/dlg@…": payload}`.
    pub fn signed_payload(&self) -> &[u8] {
        &self.envelope.signed
    }

    /// The raw signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.envelope.signature
    }

    /// The spec version named by the payload tag (`1.0.0` or `1.0.0-rc.1`).
    pub fn version(&self) -> &'static str {
        self.envelope.tag.version
    }

    /// `iss`
    pub fn issuer(&self) -> &Did {
        &self.issuer
    }
    /// `aud`
    pub fn audience(&self) -> &Did {
        &self.audience
    }
    /// `sub` (`None`: powerline)
    pub fn subject(&self) -> Option<&Did> {
        self.subject.as_ref()
    }
    /// `cmd`
    pub fn command(&self) -> &Command {
        &self.command
    }
    /// `pol`
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// `nonce`
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }
    /// `meta`
    pub fn meta(&self) -> Option<&BTreeMap<String, Ipld>> {
        self.meta.as_ref()
    }
    /// `nbf`
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }
    /// `exp`
    pub fn expiration(&self) -> Option<u64> {
        self.expiration
    }

    /// The payload as IPLD (for inspection and JSON output).
    pub fn payload(&self) -> &BTreeMap<String, Ipld> {
        &self.envelope.payload
    }
}
