//! `did:key` identifiers for Ed25519 public keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Multicodec `ed25519-pub` (0xed) as an unsigned varint.
const ED25519_PUB: [u8; 2] = [0xed, 0x01];
const PREFIX: &str = "did:key:z";

/// Error parsing a `did:key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DidError {
    /// The text does not start with `did:key:z` (base58btc multibase).
    #[error("not a did:key with a base58btc key (expected prefix `did:key:z`)")]
    NotDidKey,
    /// The key part is not valid base58btc.
    #[error("the key part is not valid base58btc")]
    Base58,
    /// The multicodec prefix is not `ed25519-pub` (0xed).
    #[error("unsupported key type: only ed25519-pub (0xed 0x01) keys are accepted")]
    UnsupportedKeyType,
    /// The decoded key does not have 32 bytes.
    #[error("ed25519 public key must be 32 bytes, got {len}")]
    WrongLength {
        /// Number of key bytes found.
        len: usize,
    },
}

/// A `did:key` principal holding an Ed25519 public key (multicodec `0xed`, base58btc).
///
/// Only Ed25519 keys are supported; the text form round-trips through [`Display`](fmt::Display)
/// and [`FromStr`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Did([u8; 32]);

impl Did {
    /// The principal for a 32-byte Ed25519 public key.
    pub const fn from_public_key(key: [u8; 32]) -> Self {
        Did(key)
    }

    /// The 32 public-key bytes (also the replica id of a replica signing with this key).
    pub const fn public_key(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 34];
        raw[..2].copy_from_slice(&ED25519_PUB);
        raw[2..].copy_from_slice(&self.0);
        write!(f, "{PREFIX}{}", bs58::encode(raw).into_string())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.to_string();
        // did:key:z6Mk + 8 characters is enough to tell principals apart in logs.
        write!(f, "Did({}…)", &s[..s.len().min(20)])
    }
}

impl FromStr for Did {
    type Err = DidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(PREFIX).ok_or(DidError::NotDidKey)?;
        if rest.len() > 64 {
            return Err(DidError::WrongLength { len: rest.len() });
        }
        let raw = bs58::decode(rest)
            .into_vec()
            .map_err(|_| DidError::Base58)?;
        if raw.len() < 2 || raw[..2] != ED25519_PUB {
            return Err(DidError::UnsupportedKeyType);
        }
        let key: [u8; 32] = raw[2..]
            .try_into()
            .map_err(|_| DidError::WrongLength { len: raw.len() - 2 })?;
        Ok(Did(key))
    }
}

impl Serialize for Did {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_did_parses() {
        let did: Did = "did:key:z6MkmT9j6fVZqzXV8u2wVVSu49gYSRYGSQnduWXF6foAJrqz"
            .parse()
            .unwrap();
        assert_eq!(
            did.to_string(),
            "did:key:z6MkmT9j6fVZqzXV8u2wVVSu49gYSRYGSQnduWXF6foAJrqz"
        );
    }

    #[test]
    fn rejects_bad_dids() {
        assert_eq!(
            "did:web:example.com".parse::<Did>(),
            Err(DidError::NotDidKey)
        );
        assert_eq!("did:key:z0OIl".parse::<Did>(), Err(DidError::Base58));
        // secp256k1 key (0xe7)
        assert_eq!(
            "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme".parse::<Did>(),
            Err(DidError::UnsupportedKeyType)
        );
        assert!(matches!(
            "did:key:z6Mk".parse::<Did>(),
            Err(DidError::WrongLength { .. } | DidError::UnsupportedKeyType)
        ));
    }

    proptest! {
        #[test]
        fn round_trip(key in any::<[u8; 32]>()) {
            let did = Did::from_public_key(key);
            prop_assert_eq!(did.to_string().parse::<Did>().unwrap(), did);
        }

        #[test]
        fn random_text_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Did>();
            let _ = format!("did:key:z{s}").parse::<Did>();
        }
    }
}
