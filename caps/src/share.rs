//! Share links (`spec/caps.md` §Share links): a URL whose fragment carries a delegation to a fresh
//! ephemeral key, that key's secret, and the issuer's proof chain. Claiming re-delegates to the
//! claimer's own key and revokes every other use of the link's delegation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ipld_core::ipld::Ipld;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::envelope::{decode_ipld, encode_ipld, Fields};
use crate::{
    Command, DecodeError, Delegation, DelegationFields, Did, Policy, Proofs, Revocation, SecretKey,
    Verifier, VerifyError,
};

/// The fragment starts with this; the rest is `base64url(DAG-CBOR payload)` without padding.
pub const FRAGMENT_PREFIX: &str = "canopy-share-v1.";

/// Error reading or claiming a share link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// No `#canopy-share-v1.` fragment.
    #[error("not a canopy share link (no #{FRAGMENT_PREFIX} fragment)")]
    NotAShareLink,
    /// The fragment is not valid unpadded base64url.
    #[error("share link fragment is not valid base64url")]
    Base64,
    /// The payload or one of its tokens does not decode.
    #[error("share link payload does not decode")]
    Decode(#[from] DecodeError),
    /// The delegation in the link is not addressed to the key in the link (tampered or spliced).
    #[error("the link's delegation is addressed to {audience}, not to the link's key {key}")]
    ForeignKey {
        /// The delegation's audience.
        audience: Did,
        /// The key carried by the link.
        key: Did,
    },
    /// The link's delegation is not signed by its issuer.
    #[error("the link's delegation signature does not verify")]
    InvalidSignature,
    /// The link has expired.
    #[error("the link expired at {exp} (time is {now})")]
    Expired {
        /// Its expiry.
        exp: u64,
        /// The time of the claim.
        now: u64,
    },
    /// The link is for another document (its subject is not the expected owner).
    #[error("the link is for the document of {}, expected {expected}", found.map_or_else(|| "any subject (powerline)".to_owned(), |d| d.to_string()))]
    ForeignDocument {
        /// The expected owner.
        expected: Did,
        /// The link's subject (`None`: powerline).
        found: Option<Did>,
    },
    /// The link's chain does not validate.
    #[error("the link's chain is invalid: {0}")]
    Chain(VerifyError),
}

/// A share link: a delegation to an ephemeral key, plus that key and the issuer's proofs.
#[derive(Clone)]
pub struct ShareLink {
    key: SecretKey,
    delegation: Delegation,
    proofs: Vec<Vec<u8>>,
}

/// The result of claiming a link.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delegation bytes from the root to the new delegation for the claimer.
    pub chain: Vec<Vec<u8>>,
    /// The new delegation: ephemeral key → claimer.
    pub delegation: Delegation,
    /// Revokes the link's delegation for every chain except the claimer's.
    pub revocation: Revocation,
}

impl ShareLink {
    /// Issues a link: `issuer` delegates `command` under `policy` on `subject`'s document to a fresh
    /// ephemeral key, until `expiration`. `proofs` is the issuer's own chain (root first; empty
    /// when the issuer is the owner).
    #[allow(clippy::too_many_arguments)]
    pub fn create<R: CryptoRngCore + ?Sized>(
        issuer: &SecretKey,
        subject: Did,
        proofs: Vec<Vec<u8>>,
        command: Command,
        policy: Policy,
        expiration: u64,
        rng: &mut R,
    ) -> Self {
        let key = SecretKey::generate(rng);
        let delegation = Delegation::issue(
            issuer,
            DelegationFields {
                audience: key.did(),
                subject: Some(subject),
                command,
                policy,
                expiration: Some(expiration),
                not_before: None,
                meta: None,
            },
            rng,
        );
        ShareLink {
            key,
            delegation,
            proofs,
        }
    }

    /// A link from its parts: the ephemeral key, the delegation to it, and the issuer's proofs.
    /// Fails like [`ShareLink::parse`] when the delegation is not addressed to the key or its
    /// signature does not verify.
    pub fn from_parts(
        key: SecretKey,
        delegation: Delegation,
        proofs: Vec<Vec<u8>>,
    ) -> Result<Self, ShareError> {
        if delegation.audience() != &key.did() {
            return Err(ShareError::ForeignKey {
                audience: *delegation.audience(),
                key: key.did(),
            });
        }
        if !delegation.signature_valid() {
            return Err(ShareError::InvalidSignature);
        }
        Ok(ShareLink {
            key,
            delegation,
            proofs,
        })
    }

    /// The link's delegation (to the ephemeral key).
    pub fn delegation(&self) -> &Delegation {
        &self.delegation
    }

    /// The ephemeral key's DID.
    pub fn ephemeral(&self) -> Did {
        self.key.did()
    }

    /// The issuer's proofs, root first.
    pub fn proofs(&self) -> &[Vec<u8>] {
        &self.proofs
    }

    /// `base` followed by the secret fragment: `{base}#canopy-share-v1.{base64url(payload)}`.
    /// Browsers never send the fragment to a server.
    pub fn to_url(&self, base: &str) -> Zeroizing<String> {
        let secret = self.key.to_bytes();
        let payload = Ipld::Map(BTreeMap::from([
            ("v".to_owned(), Ipld::Integer(1)),
            ("key".to_owned(), Ipld::Bytes(secret.to_vec())),
            (
                "dlg".to_owned(),
                Ipld::Bytes(self.delegation.to_bytes().to_vec()),
            ),
            (
                "prf".to_owned(),
                Ipld::List(self.proofs.iter().cloned().map(Ipld::Bytes).collect()),
            ),
        ]));
        let bytes = Zeroizing::new(encode_ipld(&payload));
        // Wipe the payload's copy of the seed (`bytes` and the returned URL wipe themselves).
        if let Ipld::Map(mut map) = payload {
            if let Some(Ipld::Bytes(mut seed)) = map.remove("key") {
                zeroize::Zeroize::zeroize(&mut seed);
            }
        }
        let mut fragment = Zeroizing::new(String::new());
        URL_SAFE_NO_PAD.encode_string(&bytes[..], &mut fragment);
        let base = base.split('#').next().unwrap_or("");
        let mut url = Zeroizing::new(String::with_capacity(
            base.len() + 1 + FRAGMENT_PREFIX.len() + fragment.len(),
        ));
        url.push_str(base);
        url.push('#');
        url.push_str(FRAGMENT_PREFIX);
        url.push_str(&fragment);
        url
    }

    /// Parses a link and checks that its delegation is signed and addressed to its key.
    pub fn parse(url: &str) -> Result<Self, ShareError> {
        let (_, fragment) = url.split_once('#').ok_or(ShareError::NotAShareLink)?;
        let encoded = fragment
            .strip_prefix(FRAGMENT_PREFIX)
            .ok_or(ShareError::NotAShareLink)?;
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(encoded.trim())
                .map_err(|_| ShareError::Base64)?,
        );
        let Ipld::Map(map) = decode_ipld(&bytes)? else {
            return Err(DecodeError::InvalidField { field: "share" }.into());
        };
        let mut f = Fields::new(map);
        if f.required("v")? != Ipld::Integer(1) {
            return Err(DecodeError::InvalidField { field: "v" }.into());
        }
        let secret = Zeroizing::new(f.bytes("key")?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            secret
                .as_slice()
                .try_into()
                .map_err(|_| DecodeError::InvalidField { field: "key" })?,
        );
        let key = SecretKey::from_bytes(&seed);
        let delegation = Delegation::decode(&f.bytes("dlg")?)?;
        let proofs = match f.required("prf")? {
            Ipld::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Ipld::Bytes(b) => Ok(b),
                    _ => Err(DecodeError::InvalidField { field: "prf" }),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(DecodeError::InvalidField { field: "prf" }.into()),
        };
        f.finish()?;
        Self::from_parts(key, delegation, proofs)
    }

    /// Claims the link for `claimer` at time `now`: validates the whole chain (including, when
    /// given, that it belongs to `expected_owner`'s document), then signs with the ephemeral key a
    /// delegation to `claimer` and a revocation of the link's delegation that keeps only it.
    pub fn claim<R: CryptoRngCore + ?Sized>(
        &self,
        claimer: &Did,
        expected_owner: Option<&Did>,
        now: u64,
        rng: &mut R,
    ) -> Result<Claimed, ShareError> {
        let dlg = &self.delegation;
        if let Some(exp) = dlg.expiration() {
            if exp <= now {
                return Err(ShareError::Expired { exp, now });
            }
        }
        let owner = match (expected_owner, dlg.subject()) {
            (Some(expected), found) if found != Some(expected) => {
                return Err(ShareError::ForeignDocument {
                    expected: *expected,
                    found: found.copied(),
                })
            }
            (_, Some(sub)) => *sub,
            (Some(expected), None) => *expected,
            (None, None) => {
                return Err(ShareError::Chain(VerifyError::InvalidClaim(
                    crate::ClaimError::RootPowerline { cid: dlg.cid() },
                )))
            }
        };
        let mut proofs = Proofs::new();
        let mut chain: Vec<_> = self
            .proofs
            .iter()
            .map(|p| proofs.insert(p.clone()))
            .collect();
        chain.push(proofs.insert(dlg.to_bytes().to_vec()));
        Verifier::new()
            .check_shape(&chain, &proofs, &owner, &self.key.did(), dlg.command(), now)
            .map_err(ShareError::Chain)?;
        let delegation = Delegation::issue(
            &self.key,
            DelegationFields {
                audience: *claimer,
                subject: Some(owner),
                command: dlg.command().clone(),
                policy: Policy::default(),
                expiration: dlg.expiration(),
                not_before: None,
                meta: None,
            },
            rng,
        );
        let revocation = Revocation::issue(
            &self.key,
            dlg.cid(),
            BTreeMap::new(),
            BTreeSet::from([delegation.cid()]),
        );
        let mut bytes = self.proofs.clone();
        bytes.push(dlg.to_bytes().to_vec());
        bytes.push(delegation.to_bytes().to_vec());
        Ok(Claimed {
            chain: bytes,
            delegation,
            revocation,
        })
    }
}

impl fmt::Debug for ShareLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareLink")
            .field("ephemeral", &self.key.did())
            .field("delegation", &self.delegation.cid())
            .field("proofs", &self.proofs.len())
            .finish()
    }
}
