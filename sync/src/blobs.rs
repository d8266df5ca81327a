//! Content-addressed results (screenshots, produced files, long outputs), served by the desktop
//! over iroh-blobs to paired phones only.
//!
//! The document holds only a [`BlobRef`](deskhand_core::schema::BlobRef) (BLAKE3 hash, size,
//! media type). The bytes live in an iroh-blobs file store in the desktop's data directory and
//! travel with iroh-blobs' verified streaming (BLAKE3/bao): every chunk is checked against the
//! hash as it arrives, and the phone checks the whole blob once more before handing it out.
//!
//! The store and the serving side (`BlobStore`, the desktop's blob protocol) need the
//! `blob-store` feature (on by default); without it only fetching is left, which is all a phone
//! does.

use std::time::Duration;

use iroh::endpoint::Connection;
use iroh_blobs::Hash;
#[cfg(feature = "blob-store")]
pub use store::BlobStore;
#[cfg(feature = "blob-store")]
pub(crate) use store::GatedBlobs;

/// ALPN of the blob protocol (iroh-blobs' own, versioned by iroh-blobs).
pub const BLOB_ALPN: &[u8] = iroh_blobs::ALPN;

/// The largest blob a phone accepts.
pub const MAX_BLOB_BYTES: u64 = 256 * 1024 * 1024;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The blob store could not be opened or written.
    #[error("blob store in {path}: {reason}")]
    Store {
        /// The store's directory.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The text is not a BLAKE3 hash.
    #[error("{0:?} is not a blob hash (64 hex characters)")]
    BadHash(String),
    /// This desktop does not hold the blob.
    #[error("blob {0} is not held by this desktop")]
    NotFound(String),
    /// The phone has no home desktop.
    #[error("this phone is not paired with a desktop")]
    NotPaired,
    /// The desktop could not be reached or refused.
    #[error("cannot fetch blob {hash} from the desktop: {reason}")]
    Unreachable {
        /// The blob.
        hash: String,
        /// Why.
        reason: String,
    },
    /// The bytes received do not hash to what was asked for.
    #[error("blob {0} failed verification: the bytes received do not match its hash")]
    Corrupt(String),
    /// The blob is larger than a phone accepts.
    #[error("blob {hash} is {size} bytes, more than the {max} a phone accepts")]
    TooLarge {
        /// The blob.
        hash: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// The requests the desktop serves on the blob protocol, for iroh-blobs' provider: a paired
/// phone fetches one blob (`get` of a single blob's ranges: `GetRequest::blob` for the bytes,
/// `get_verified_size`'s last chunk for the size — all a phone ever asks). Everything else is
/// refused, each found by fuzzing (`fuzz/src/blob_harness.rs`, inputs kept in
/// `fuzz/regressions/blob_protocol/`):
/// - a `get` whose ranges reach past the blob itself (into the children of a hash sequence):
///   iroh-blobs walks such a range spec child by child, so one with a huge offset kept a core
///   busy for as long as the fuzzer would wait (10 s and more) — refused with `Permission`;
/// - `observe` (a subscription to a blob's state, which made the store create an entry for any
///   hash asked about) — refused with `Permission`;
/// - `get_many` and `push` (which would write into the desktop's store) — disabled.
///
/// The `get` and `observe` checks run in a task that answers iroh-blobs' intercept events
/// (iroh-blobs has no switch for observing and no range limit). Needs a tokio runtime; the task
/// ends when the provider is dropped.
pub fn desktop_blob_events() -> iroh_blobs::provider::events::EventSender {
    use iroh_blobs::provider::events::{
        AbortReason, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
    };
    let mask = EventMask {
        get: RequestMode::Intercept,
        get_many: RequestMode::Disabled,
        push: RequestMode::Disabled,
        observe: ObserveMode::Intercept,
        ..EventMask::DEFAULT
    };
    let (events, mut rx) = EventSender::channel(16, mask);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::GetRequestReceived(msg) => {
                    let verdict = if msg.inner.request.ranges.is_blob() {
                        Ok(())
                    } else {
                        Err(AbortReason::Permission)
                    };
                    msg.tx.send(verdict).await.ok();
                }
                ProviderMessage::ObserveRequestReceived(msg) => {
                    msg.tx.send(Err(AbortReason::Permission)).await.ok();
                }
                _ => {}
            }
        }
    });
    events
}

/// Parses a blob hash from its hex form.
pub fn parse_hash(text: &str) -> Result<Hash, BlobError> {
    let bytes = deskhand_core::schema::parse_blob_hash(text)
        .ok_or_else(|| BlobError::BadHash(text.to_owned()))?;
    Ok(Hash::from_bytes(bytes))
}

/// The BLAKE3 hash of `bytes`, as stored in a [`BlobRef`].
pub fn hash_hex(bytes: &[u8]) -> String {
    Hash::new(bytes).to_hex().to_string()
}

#[cfg(feature = "blob-store")]
mod store {
    use std::path::Path;
    use std::sync::Arc;

    use deskhand_core::schema::BlobRef;
    use deskhand_core::session::close_code;
    use iroh::endpoint::Connection;
    use iroh::protocol::{AcceptError, ProtocolHandler};
    use iroh_blobs::BlobsProtocol;
    use iroh_blobs::store::fs::FsStore;

    use super::{BlobError, parse_hash};
    use crate::endpoint::device_id;
    use crate::gate::PeerGate;

    /// The desktop's blob store.
    #[derive(Clone, Debug)]
    pub struct BlobStore {
        store: FsStore,
        path: String,
    }

    impl BlobStore {
        /// Opens (or creates) the store in `dir`.
        pub async fn open(dir: &Path) -> Result<Self, BlobError> {
            let path = dir.display().to_string();
            let store = FsStore::load(dir).await.map_err(|e| BlobError::Store {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Ok(Self { store, path })
        }

        /// Adds bytes; returns the reference to put in the document.
        pub async fn add(
            &self,
            bytes: Vec<u8>,
            media_type: &str,
            name: Option<&str>,
        ) -> Result<BlobRef, BlobError> {
            let size = bytes.len() as u64;
            let info = self
                .store
                .add_bytes(bytes)
                .await
                .map_err(|e| self.err(e.to_string()))?;
            Ok(BlobRef {
                hash: info.hash.to_hex().to_string(),
                size,
                media_type: media_type.to_owned(),
                name: name.map(str::to_owned),
            })
        }

        /// The bytes of a blob held here.
        pub async fn get(&self, hash: &str) -> Result<Vec<u8>, BlobError> {
            let h = parse_hash(hash)?;
            if !self
                .store
                .has(h)
                .await
                .map_err(|e| self.err(e.to_string()))?
            {
                return Err(BlobError::NotFound(hash.to_owned()));
            }
            let bytes = self
                .store
                .get_bytes(h)
                .await
                .map_err(|e| self.err(e.to_string()))?;
            Ok(bytes.to_vec())
        }

        pub(crate) async fn shutdown(&self) {
            if let Err(e) = self.store.shutdown().await {
                tracing::warn!("blob store did not shut down cleanly: {e}");
            }
        }

        fn err(&self, reason: String) -> BlobError {
            BlobError::Store {
                path: self.path.clone(),
                reason,
            }
        }
    }

    /// The blob protocol as the desktop mounts it: the registry decides who may fetch.
    #[derive(Clone)]
    pub(crate) struct GatedBlobs {
        gate: Arc<dyn PeerGate>,
        inner: BlobsProtocol,
    }

    impl std::fmt::Debug for GatedBlobs {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("GatedBlobs")
        }
    }

    impl GatedBlobs {
        pub(crate) fn new(gate: Arc<dyn PeerGate>, store: &BlobStore) -> Self {
            Self {
                gate,
                inner: BlobsProtocol::new(&store.store, Some(super::desktop_blob_events())),
            }
        }
    }

    impl ProtocolHandler for GatedBlobs {
        async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
            let peer = device_id(&conn.remote_id());
            if !self.gate.is_allowed(&peer) {
                tracing::warn!(peer = %peer.short(), "refused a blob request from a device that is not paired");
                self.gate
                    .audit("refused_blob_request", &peer, "not in the registry");
                conn.close(
                    u32::from(close_code::NOT_ALLOWED).into(),
                    b"this device is not paired with this desktop",
                );
                return Ok(());
            }
            self.inner.accept(conn).await
        }
        // The store is shut down by the node, after the router.
    }
}

/// Fetches a blob from the desktop over `conn` and verifies it.
pub(crate) async fn fetch_over(
    conn: Connection,
    hash: &str,
    timeout: Duration,
) -> Result<Vec<u8>, BlobError> {
    let h = parse_hash(hash)?;
    let unreachable = |reason: String| BlobError::Unreachable {
        hash: hash.to_owned(),
        reason,
    };
    let (size, _) = tokio::time::timeout(
        timeout,
        iroh_blobs::get::request::get_verified_size(&conn, &h),
    )
    .await
    .map_err(|_| unreachable("the desktop did not answer in time".into()))?
    .map_err(|e| unreachable(not_found_or(e.to_string(), &conn)))?;
    if size > MAX_BLOB_BYTES {
        return Err(BlobError::TooLarge {
            hash: hash.to_owned(),
            size,
            max: MAX_BLOB_BYTES,
        });
    }
    let (bytes, _) = iroh_blobs::get::request::get_blob(conn.clone(), h)
        .bytes_and_stats()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    conn.close(0u32.into(), b"done");
    // iroh-blobs verified every chunk against the hash; check the whole once more.
    if Hash::new(&bytes) != h || bytes.len() as u64 != size {
        return Err(BlobError::Corrupt(hash.to_owned()));
    }
    Ok(bytes.to_vec())
}

fn not_found_or(reason: String, conn: &Connection) -> String {
    match conn.close_reason() {
        Some(r) => format!("{reason} ({r})"),
        None if reason.contains("NotFound") || reason.to_lowercase().contains("not found") => {
            "the desktop does not hold this blob".into()
        }
        None => reason,
    }
}
