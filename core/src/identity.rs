//! Device identity: one ed25519 key pair per device.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::DeviceId;

/// Why key material was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Stored key material has the wrong length.
    #[error("device key must be 32 bytes, found {0}")]
    BadLength(usize),
    /// A public key is not a valid ed25519 point.
    #[error("not a valid ed25519 public key")]
    BadPublicKey,
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A device's secret key. Its public half is the [`DeviceId`]. Never printed.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// Builds the key from 32 secret bytes (from a keystore or fresh randomness).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&bytes))
    }
    /// Builds the key from a stored slice, checking its length.
    pub fn from_secret_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadLength(bytes.len()))?;
        Ok(Self::from_secret_bytes(arr))
    }
    /// The 32 secret bytes, for the keystore only.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_bytes(self.0.verifying_key().to_bytes())
    }
    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({}, secret hidden)", self.device_id().short())
    }
}

/// Verifies `signature` over `msg` by `device`.
pub fn verify(device: &DeviceId, msg: &[u8], signature: &[u8; 64]) -> Result<(), KeyError> {
    let key = VerifyingKey::from_bytes(device.as_bytes()).map_err(|_| KeyError::BadPublicKey)?;
    key.verify(msg, &Signature::from_bytes(signature))
        .map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = DeviceKey::from_secret_bytes([3; 32]);
        let sig = key.sign(b"approve");
        assert!(verify(&key.device_id(), b"approve", &sig).is_ok());
        assert!(verify(&key.device_id(), b"deny", &sig).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode([3u8; 32])));
    }
}
