//! Newtypes for every identifier in the product.

use std::fmt;
use std::str::FromStr;

use automerge::ActorId;
use serde::{Deserialize, Serialize};

/// Why a textual id was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// The text was not hex of the expected length.
    #[error("expected {expected} hex characters, got {got:?}")]
    Malformed {
        /// Number of hex characters expected.
        expected: usize,
        /// What was given (ids are public; nothing secret is echoed here).
        got: String,
    },
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], IdError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdError::Malformed {
        expected: N * 2,
        got: s.chars().take(80).collect(),
    })?;
    Ok(out)
}

/// Length of the random part of a [`DeviceId::session_actor`], in bytes.
pub const SESSION_SUFFIX_LEN: usize = 8;

/// A device: the ed25519 public key that is also its iroh endpoint id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct DeviceId([u8; 32]);

impl DeviceId {
    /// Wraps the 32 public-key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The 32 public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The device's plain actor id: exactly its 32 key bytes (what version 1 wrote under, and
    /// what tests use). Nodes write under a fresh [`Self::session_actor`] each time they start.
    pub fn actor_id(&self) -> ActorId {
        ActorId::from(self.0.as_slice())
    }
    /// An actor id of this device for one run of a node: its 32 key bytes followed by
    /// [`SESSION_SUFFIX_LEN`] random bytes. A fresh actor per start means a device whose data
    /// directory was restored from a backup never writes a second change under a sequence
    /// number it already used before the backup's changes were lost (Automerge requires an
    /// actor's changes to form one chain); authorship is still the device's, by the prefix.
    pub fn session_actor(&self, suffix: [u8; SESSION_SUFFIX_LEN]) -> ActorId {
        let mut bytes = [0u8; 32 + SESSION_SUFFIX_LEN];
        bytes[..32].copy_from_slice(&self.0);
        bytes[32..].copy_from_slice(&suffix);
        ActorId::from(bytes.as_slice())
    }
    /// The device whose actor id this is: a plain actor (32 bytes) or a session actor (32 +
    /// [`SESSION_SUFFIX_LEN`] bytes); `None` for any other length.
    pub fn from_actor(actor: &ActorId) -> Option<Self> {
        let bytes = actor.to_bytes();
        if bytes.len() != 32 && bytes.len() != 32 + SESSION_SUFFIX_LEN {
            return None;
        }
        let key: [u8; 32] = bytes[..32].try_into().ok()?;
        Some(Self(key))
    }
    /// Whether `actor` is one of this device's actors (plain or session).
    pub fn owns_actor(&self, actor: &ActorId) -> bool {
        Self::from_actor(actor) == Some(*self)
    }
    /// First 10 hex characters, for logs and humans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..5])
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}
impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex::<32>(s).map(Self)
    }
}
impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.to_string()
    }
}
impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

/// The workspace document's id: 16 random bytes chosen by the desktop that created it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct DocId([u8; 16]);

impl DocId {
    /// Wraps 16 bytes (the caller supplies the randomness).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}
impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({self})")
    }
}
impl FromStr for DocId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex::<16>(s).map(Self)
    }
}
impl From<DocId> for String {
    fn from(id: DocId) -> String {
        id.to_string()
    }
}
impl TryFrom<String> for DocId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// An id from 16 random bytes supplied by the caller.
            pub fn from_random(bytes: [u8; 16]) -> Self {
                Self(hex::encode(bytes))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
        impl autosurgeon::Reconcile for $name {
            type Key<'a> = autosurgeon::reconcile::NoKey;
            fn reconcile<R: autosurgeon::Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
                self.0.reconcile(reconciler)
            }
        }
        impl autosurgeon::Hydrate for $name {
            fn hydrate_string(s: &'_ str) -> Result<Self, autosurgeon::HydrateError> {
                Ok(Self(s.to_owned()))
            }
        }
    };
}

text_id!(
    /// A message in the conversation.
    MessageId
);
text_id!(
    /// A task.
    TaskId
);
text_id!(
    /// An approval request.
    ApprovalId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_round_trips_through_text_and_actor() {
        let id = DeviceId::from_bytes([7; 32]);
        assert_eq!(id.to_string().parse::<DeviceId>(), Ok(id));
        assert_eq!(DeviceId::from_actor(&id.actor_id()), Some(id));
        assert!("zz".parse::<DeviceId>().is_err());
    }
}
