//! The node's side of the narrow handles its protocol handlers get (`crate::gate`): what each
//! handler may ask, answered from the node's state. The handlers never see [`Shared`].

use std::sync::Arc;

use deskhand_core::DeviceId;
use deskhand_core::schema::{DeviceEntry, Workspace};
use iroh::endpoint::{Connection, RecvStream, SendStream};

use super::{PeerRecord, Shared, write_change};
use crate::gate::PeerGate;
use crate::pairing::{Codes, PairingHost, TokenRecord};
use crate::protocol::SyncHost;
use crate::store::WriteOp;

impl PeerGate for Shared {
    fn is_allowed(&self, peer: &DeviceId) -> bool {
        Shared::is_allowed(self, peer)
    }
    fn is_revoked(&self, peer: &DeviceId) -> bool {
        Shared::is_revoked(self, peer)
    }
    fn audit(&self, event: &str, peer: &DeviceId, detail: &str) {
        Shared::audit(self, event, peer, detail);
    }
}

impl SyncHost for Shared {
    async fn run_peer(
        self: Arc<Self>,
        peer: DeviceId,
        conn: Connection,
        send: SendStream,
        recv: RecvStream,
    ) {
        // How it ended is logged, recorded in the peer's view and told to the peer.
        let _ = crate::driver::run_peer(self, peer, conn, send, recv, crate::driver::Side::Accept)
            .await;
    }
}

impl PairingHost for Shared {
    fn codes(&self) -> std::sync::MutexGuard<'_, Codes> {
        Shared::codes(self)
    }

    async fn admit(
        self: Arc<Self>,
        phone: DeviceId,
        name: String,
        platform: String,
        (hash, record): ([u8; 32], TokenRecord),
    ) -> Result<(), String> {
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        self.store()
            .write(WriteOp::PutPairingToken(hex::encode(hash), json))
            .await
            .map_err(|e| e.to_string())?;
        let now = crate::presence::now_unix_ms();
        let rec = PeerRecord {
            name: name.clone(),
            platform: platform.clone(),
            paired_at: now,
            revoked_at: None,
            last_seen: None,
            addrs: vec![],
            clock_offset_ms: None,
            relay: None,
        };
        self.put_peer(phone, rec).await.map_err(|e| e.to_string())?;
        let entry = DeviceEntry {
            name,
            platform,
            paired_at: now,
            revoked_at: None,
        };
        write_change(&self, |tx| Workspace::put_device(tx, &phone, &entry))
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn welcome(&self) -> (Option<String>, String, i64) {
        let doc_id = self.lock_doc().doc_id.map(|d| d.to_string());
        (doc_id, self.desktop_name(), self.wall_ms())
    }
}
