//! The `deskhand/sync/4` protocol handler, mounted on iroh's router by the desktop. Thin: it
//! checks the registry through its [`SyncHost`], then hands the connection to it.

use std::future::Future;
use std::sync::Arc;

use deskhand_core::DeviceId;
use deskhand_core::session::{REVOKED_REASON, close_code};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};

use crate::endpoint::device_id;
use crate::gate::PeerGate;

/// What the sync handler may ask of the node: the gate, and running an admitted device's
/// connection.
pub(crate) trait SyncHost: PeerGate {
    /// Runs the connection of `peer` (already admitted by [`PeerGate::is_allowed`]), whose
    /// first bi-stream is `send`/`recv`, until it ends; the connection is closed with the
    /// reason.
    fn run_peer(
        self: Arc<Self>,
        peer: DeviceId,
        conn: Connection,
        send: SendStream,
        recv: RecvStream,
    ) -> impl Future<Output = ()> + Send;
}

pub(crate) struct SyncProtocol<H> {
    host: Arc<H>,
}

impl<H> Clone for SyncProtocol<H> {
    fn clone(&self) -> Self {
        Self {
            host: self.host.clone(),
        }
    }
}

impl<H> std::fmt::Debug for SyncProtocol<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncProtocol")
    }
}

impl<H: SyncHost> SyncProtocol<H> {
    pub(crate) fn new(host: Arc<H>) -> Self {
        Self { host }
    }
}

impl<H: SyncHost> ProtocolHandler for SyncProtocol<H> {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = device_id(&conn.remote_id());
        // Deny by default: only registered, unrevoked devices get a stream accepted, so an
        // unknown peer never sees a byte of the document.
        if !self.host.is_allowed(&peer) {
            if self.host.is_revoked(&peer) {
                tracing::warn!(peer = %peer.short(), "refused a sync connection from a revoked device");
                self.host
                    .audit("refused_revoked_peer", &peer, "revoked in the registry");
                conn.close(
                    u32::from(close_code::REVOKED).into(),
                    REVOKED_REASON.as_bytes(),
                );
            } else {
                tracing::warn!(peer = %peer.short(), "refused a sync connection from a device that is not paired");
                self.host
                    .audit("refused_unknown_peer", &peer, "not in the registry");
                conn.close(
                    u32::from(close_code::NOT_ALLOWED).into(),
                    b"this device is not paired with this desktop",
                );
            }
            // Let the close reach the device (bounded) so that it hears why.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
            return Ok(());
        }
        let (send, recv) = conn.accept_bi().await?;
        self.host.clone().run_peer(peer, conn, send, recv).await;
        Ok(())
    }
}

/// The sync protocols before this one (`deskhand/sync/1`, unsigned changes; `deskhand/sync/2`,
/// one document; `deskhand/sync/3`, the workspace still in one document): a desktop accepts
/// the connection only to tell the device to update, in the close reason its user sees.
#[derive(Clone, Debug)]
pub(crate) struct OutdatedSyncProtocol;

/// What a device still speaking `deskhand/sync/1` is told.
pub(crate) const UPDATE_REASON: &str = "this desktop runs a newer Deskhand (sync protocol 4, a workspace of one document per week): update Deskhand on this device, then sync again";

impl ProtocolHandler for OutdatedSyncProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = device_id(&conn.remote_id());
        tracing::warn!(peer = %peer.short(), "refused a device that speaks an old sync protocol");
        conn.close(
            u32::from(close_code::PROTOCOL).into(),
            UPDATE_REASON.as_bytes(),
        );
        // Wait for the close to reach the peer (bounded), as `Endpoint::close` would.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        Ok(())
    }
}
