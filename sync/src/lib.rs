//! Deskhand's networking and storage.
//!
//! The only crate that knows tokio, iroh and redb. [`Node`] is a device (the desktop hub or a
//! phone): it owns the redb store, the workspace document, the iroh endpoint and one sync driver
//! per connected peer.

#![deny(missing_docs)]

pub mod blobs;
mod driver;
pub mod endpoint;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
mod gate;
mod migrations;
pub mod node;
pub mod pairing;
pub mod phone;
pub mod presence;
mod protocol;
pub mod store;
mod tables;

pub use blobs::BlobError;
#[cfg(feature = "blob-store")]
pub use blobs::BlobStore;
pub use endpoint::{NetConfig, RelaySetting};
pub use node::{Node, NodeConfig, NodeError, NodeRole, PeerRecord};
pub use pairing::PairError;
pub use phone::{
    FileKeyProvider, KeyProvider, Phone, PhoneConfig, PhoneError, PhoneListener, PhoneSnapshot,
    Subscription,
};
pub use presence::Presence;
pub use store::StoreError;
