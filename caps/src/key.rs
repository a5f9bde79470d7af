//! Ed25519 secret keys, their multicodec text form and the CLI key file.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::Did;

/// Multicodec `ed25519-priv` (0x1300) as an unsigned varint.
const ED25519_PRIV: [u8; 2] = [0x80, 0x26];
const KEY_FILE_KIND: &str = "canopy-key/ed25519";

/// Error reading a secret key or key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The secret is not valid base64 (standard alphabet, padded).
    #[error("secret key is not valid padded base64")]
    Base64,
    /// The secret does not start with the `ed25519-priv` multicodec (0x1300).
    #[error("secret key is not an ed25519-priv (0x1300) multicodec key")]
    UnsupportedKeyType,
    /// The secret does not have 32 bytes after the multicodec prefix.
    #[error("ed25519 secret key must be 32 bytes, got {len}")]
    WrongLength {
        /// Number of key bytes found.
        len: usize,
    },
    /// The key file is not the JSON object described in `spec/caps.md`.
    #[error("not a canopy key file (JSON object with kind `canopy-key/ed25519`, did, secret)")]
    NotAKeyFile,
    /// The key file's `did` does not belong to its secret.
    #[error("key file did {stated} does not match its secret (which is {actual})")]
    DidMismatch {
        /// The DID written in the file.
        stated: String,
        /// The DID of the secret key.
        actual: Did,
    },
}

/// An Ed25519 signing key. Zeroized on drop; `Debug` shows only its public DID.
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    did: Did,
}

impl SecretKey {
    /// A fresh key from the given cryptographic RNG.
    pub fn generate<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        Self::from_signing_key(SigningKey::generate(rng))
    }

    /// A fresh key from the operating system's RNG (`getrandom`; in browsers `crypto.getRandomValues`).
    pub fn generate_os() -> Self {
        Self::generate(&mut rand_core::OsRng)
    }

    /// The key with these 32 secret bytes (the Ed25519 seed).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(bytes))
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let did = Did::from_public_key(key.verifying_key().to_bytes());
        SecretKey { key, did }
    }

    /// The public principal of this key.
    pub fn did(&self) -> Did {
        self.did
    }

    /// The 32 secret bytes, in a buffer that is zeroized when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// An Ed25519 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// `base64pad(varint(0x1300) ‖ secret)`, the form the UCAN fixtures use for principals.
    pub fn to_multicodec_base64(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 34]);
        raw[..2].copy_from_slice(&ED25519_PRIV);
        raw[2..].copy_from_slice(&self.key.to_bytes());
        Zeroizing::new(STANDARD.encode(&raw[..]))
    }

    /// Parses `base64pad(varint(0x1300) ‖ secret)`.
    pub fn from_multicodec_base64(text: &str) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KeyError::Base64)?);
        if raw.len() < 2 || raw[..2] != ED25519_PRIV {
            return Err(KeyError::UnsupportedKeyType);
        }
        let mut seed: [u8; 32] = raw[2..]
            .try_into()
            .map_err(|_| KeyError::WrongLength { len: raw.len() - 2 })?;
        let key = Self::from_bytes(&seed);
        seed.zeroize();
        Ok(key)
    }

    /// The CLI key file: a one-line JSON object
    /// `{"kind":"canopy-key/ed25519","did":"did:key:…","secret":"<base64pad(0x1300 ‖ seed)>"}`.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let secret = self.to_multicodec_base64();
        Zeroizing::new(format!(
            "{{\"kind\":\"{KEY_FILE_KIND}\",\"did\":\"{}\",\"secret\":\"{}\"}}\n",
            self.did,
            secret.as_str()
        ))
    }

    /// Reads a key file written by [`SecretKey::to_key_file`]; checks that `did` matches the secret.
    pub fn from_key_file(text: &str) -> Result<Self, KeyError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            kind: String,
            did: String,
            secret: String,
        }
        let File { kind, did, secret } =
            serde_json::from_str(text).map_err(|_| KeyError::NotAKeyFile)?;
        let secret = Zeroizing::new(secret);
        if kind != KEY_FILE_KIND {
            return Err(KeyError::NotAKeyFile);
        }
        let key = Self::from_multicodec_base64(&secret)?;
        if did != key.did.to_string() {
            return Err(KeyError::DidMismatch {
                stated: did,
                actual: key.did,
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.did)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_principal_decodes() {
        // "carol" from the UCAN 1.0 delegation fixture.
        let key =
            SecretKey::from_multicodec_base64("gCZC43QGw7ZvYQuKTtBwBy+tdjYrKf0hXU3dd+J0HON5dw==")
                .unwrap();
        assert_eq!(
            key.to_multicodec_base64().as_str(),
            "gCZC43QGw7ZvYQuKTtBwBy+tdjYrKf0hXU3dd+J0HON5dw=="
        );
    }

    #[test]
    fn key_file_round_trip_and_checks() {
        let key = SecretKey::from_bytes(&[7; 32]);
        let file = key.to_key_file();
        let back = SecretKey::from_key_file(&file).unwrap();
        assert_eq!(back.did(), key.did());
        let other = SecretKey::from_bytes(&[8; 32]).did().to_string();
        let forged = file.replace(&key.did().to_string(), &other);
        assert!(matches!(
            SecretKey::from_key_file(&forged),
            Err(KeyError::DidMismatch { .. })
        ));
        assert!(matches!(
            SecretKey::from_key_file("{}"),
            Err(KeyError::NotAKeyFile)
        ));
        assert_eq!(
            SecretKey::from_multicodec_base64("AAAA").map(|k| k.did()),
            Err(KeyError::UnsupportedKeyType)
        );
        assert_eq!(
            SecretKey::from_multicodec_base64("gCYBAg==").map(|k| k.did()),
            Err(KeyError::WrongLength { len: 2 })
        );
    }

    #[test]
    fn debug_hides_secret() {
        let key = SecretKey::from_bytes(&[0xab; 32]);
        let dbg = format!("{key:?}");
        assert!(dbg.starts_with("SecretKey(did:key:z6Mk"));
        assert!(!dbg.contains(key.to_multicodec_base64().as_str()));
        assert!(!dbg.to_lowercase().contains("abab"));
    }
}
