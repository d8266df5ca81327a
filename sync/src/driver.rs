//! The tokio driver of one peer's sync session: bytes from the stream into the state machine,
//! frames out to the stream, timers, local-change wake-ups and cancellation.

use std::sync::Arc;

use deskhand_core::session::{
    REVOKED_REASON, SessionError, SessionOutput, SessionStats, close_code,
};
use deskhand_core::{DeviceId, Frame, FrameDecoder, SyncSession};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio_util::sync::CancellationToken;

use crate::node::{DocHandle, DocState, Shared, lock};

const READ_CHUNK: usize = 256 * 1024;
/// How long a goodbye may take to write before the connection is closed anyway.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs a sync session with `peer` on an open bi-stream until it ends. Registers the session
/// (replacing an older one of the same peer) and records presence and byte counts.
pub(crate) async fn run_peer(
    shared: Arc<Shared>,
    peer: DeviceId,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
) -> Result<(), String> {
    let Some((conn_no, cancel)) = shared.session_started(&peer) else {
        if shared.is_revoked(&peer) {
            conn.close(
                u32::from(close_code::REVOKED).into(),
                REVOKED_REASON.as_bytes(),
            );
        } else {
            conn.close(
                u32::from(close_code::NOT_ALLOWED).into(),
                b"this device is not paired with this desktop",
            );
        }
        return Err("not allowed".into());
    };
    tracing::info!(peer = %peer.short(), "session open");
    let mut driver = Driver {
        doc: shared.main_doc(),
        shared: shared.clone(),
        peer,
        send,
        out: Vec::new(),
        owes_ack: false,
        conn: conn.clone(),
        conn_no,
    };
    let (result, stats) = driver.run(recv, &cancel).await;
    let (code, reason): (u16, String) = match &result {
        Ok(()) if cancel.is_cancelled() && shared.is_revoked(&peer) => {
            (close_code::REVOKED, REVOKED_REASON.into())
        }
        Ok(()) => (close_code::NORMAL, "bye".into()),
        Err(e) => (close_code::MALFORMED, e.chars().take(512).collect()),
    };
    let _ = driver.send.finish();
    conn.close(u32::from(code).into(), reason.as_bytes());
    let error = result.as_ref().err().cloned();
    match &error {
        Some(e) => tracing::warn!(peer = %peer.short(), "session ended: {e}"),
        None => tracing::info!(peer = %peer.short(), "session closed"),
    }
    shared.session_ended(&peer, conn_no, stats, error.clone());
    result
}

struct Driver {
    /// The document this session syncs.
    doc: DocHandle,
    conn: Connection,
    conn_no: u64,
    shared: Arc<Shared>,
    peer: DeviceId,
    send: SendStream,
    out: Vec<u8>,
    /// This peer's changes were applied and are not known durable yet: the answer waits.
    owes_ack: bool,
}

impl Driver {
    async fn run(
        &mut self,
        mut recv: RecvStream,
        cancel: &CancellationToken,
    ) -> (Result<(), String>, SessionStats) {
        let now = self.shared.now_ms();
        let mut session = {
            let ds = lock(&self.doc);
            let persisted = self.shared.sync_state(&self.peer, &ds.key);
            let mut s = SyncSession::new(self.peer, ds.doc_id, persisted.as_deref(), now)
                .with_wall_clock(self.shared.wall_ms());
            s.set_hold(!Shared::may_relay(&ds));
            let first = s.start(&ds.doc);
            drop(ds);
            self.queue(first);
            s
        };
        let result = self.main_loop(&mut session, &mut recv, cancel).await;
        let result = match result {
            Ok(()) => {
                if cancel.is_cancelled() {
                    let (code, reason) = if self.shared.is_revoked(&self.peer) {
                        (close_code::REVOKED, REVOKED_REASON.to_owned())
                    } else {
                        (close_code::NORMAL, "shutting down".to_owned())
                    };
                    Frame::Goodbye { code, reason }.encode_into(&mut self.out);
                    let _ = tokio::time::timeout(GOODBYE_GRACE, self.flush()).await;
                }
                Ok(())
            }
            Err(SessionError::ClosedByPeer {
                code: close_code::NORMAL,
                ..
            }) => Ok(()),
            Err(e) => {
                if let SessionError::ClosedByPeer {
                    code: close_code::REVOKED,
                    ..
                } = &e
                {
                    self.shared.revoked_by(&self.peer);
                }
                if let Some(bye) = e.goodbye() {
                    bye.encode_into(&mut self.out);
                    let _ = tokio::time::timeout(GOODBYE_GRACE, self.flush()).await;
                }
                if let SessionError::Refused(r) = &e {
                    self.shared.audit("refused_changes", &self.peer, &r.reason);
                }
                Err(e.to_string())
            }
        };
        (result, session.stats())
    }

    async fn main_loop(
        &mut self,
        session: &mut SyncSession,
        recv: &mut RecvStream,
        cancel: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut durable = self.shared.durable.subscribe();
        durable.mark_unchanged();
        let mut relay = self.shared.relayable.subscribe();
        relay.mark_unchanged();
        let mut probe = self.shared.probe.subscribe();
        probe.mark_unchanged();
        let mut lan = self.shared.lan_sighting.subscribe();
        lan.mark_unchanged();
        let mut decoder = FrameDecoder::with_max_len(self.shared.filter.limits().max_frame_bytes);
        self.flush().await.map_err(SessionError::Protocol)?;
        loop {
            let deadline = self.shared.instant_at(session.next_deadline());
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                chunk = recv.read_chunk(READ_CHUNK) => {
                    match chunk {
                        Ok(Some(bytes)) => {
                            decoder.push(&bytes);
                            loop {
                                let frame = decoder
                                    .next_frame()
                                    .map_err(|e| SessionError::Protocol(e.to_string()))?;
                                let Some(frame) = frame else { break };
                                self.on_frame(session, frame)?;
                            }
                        }
                        Ok(None) => return Err(self.closed_by_peer("the peer finished the stream".into())),
                        Err(e) => return Err(self.closed_by_peer(e.to_string())),
                    }
                }
                _ = durable.changed() => {
                    let ds = lock(&self.doc);
                    if !Shared::is_dirty(&ds) {
                        self.owes_ack = false;
                    }
                    session.set_hold(self.hold(&ds));
                    let out = session.on_local_change(&ds.doc, &ds.book, self.shared.now_ms());
                    drop(ds);
                    self.queue(out);
                }
                _ = relay.changed(), if !self.owes_ack => {
                    // Another peer's changes arrived (or this device's own are all stored):
                    // relay them now, before they are durable here (see `node.rs`).
                    let ds = lock(&self.doc);
                    session.set_hold(self.hold(&ds));
                    let out = session.on_local_change(&ds.doc, &ds.book, self.shared.now_ms());
                    drop(ds);
                    self.queue(out);
                }
                _ = probe.changed() => {
                    let out = session.probe(self.shared.now_ms());
                    self.queue(out);
                }
                _ = lan.changed() => {
                    let seen = lan.borrow_and_update().clone();
                    if let Some(seen) = seen.filter(|s| s.peer == self.peer)
                        && let Some(gone) = self.path_not_announced(&seen.addrs)
                    {
                        let now: Vec<String> = seen.addrs.iter().map(|a| a.to_string()).collect();
                        return Err(SessionError::PathGone(format!(
                            "it now announces {} on the local network; this session ran to {gone}",
                            now.join(", ")
                        )));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let ds = lock(&self.doc);
                    let out = session.on_tick(&ds.doc, &ds.book, self.shared.now_ms())?;
                    drop(ds);
                    self.queue(out);
                }
            }
            self.flush().await.map_err(SessionError::Protocol)?;
            let in_sync = session.in_sync(&lock(&self.doc).doc);
            self.shared
                .session_progress(&self.peer, self.conn_no, session.stats(), in_sync);
        }
    }

    /// The remote address of this connection's selected path when it is a direct (IP) path
    /// to an address the peer no longer announces (`announced`, from mDNS), else `None`. A
    /// loopback path is never judged: mDNS does not announce loopback addresses.
    fn path_not_announced(
        &self,
        announced: &std::collections::BTreeSet<std::net::SocketAddr>,
    ) -> Option<std::net::SocketAddr> {
        let paths = self.conn.paths();
        let selected = paths.iter().find(|p| p.is_selected())?;
        match selected.remote_addr() {
            iroh::TransportAddr::Ip(a) if !a.ip().is_loopback() && !announced.contains(a) => {
                Some(*a)
            }
            _ => None,
        }
    }

    /// The peer's own words when it closed the connection, else `fallback`.
    fn closed_by_peer(&self, fallback: String) -> SessionError {
        match self.conn.close_reason() {
            Some(iroh::endpoint::ConnectionError::ApplicationClosed(c)) => {
                SessionError::ClosedByPeer {
                    code: u16::try_from(c.error_code.into_inner()).unwrap_or(u16::MAX),
                    reason: String::from_utf8_lossy(&c.reason).into_owned(),
                }
            }
            Some(other) => SessionError::ClosedByPeer {
                code: 0,
                reason: other.to_string(),
            },
            None => SessionError::ClosedByPeer {
                code: 0,
                reason: fallback,
            },
        }
    }

    fn on_frame(&mut self, session: &mut SyncSession, frame: Frame) -> Result<(), SessionError> {
        let len = match &frame {
            Frame::Sync(b) => 6 + b.len(),
            f => f.encode().len(),
        };
        let now = self.shared.now_ms();
        let shared = self.shared.clone();
        let doc = self.doc.clone();
        let mut guard = lock(&doc);
        let ds = &mut *guard;
        session.set_hold(self.hold(ds));
        let outputs = session.on_frame(frame, len, &ds.doc, &ds.book, now)?;
        let mut to_send = Vec::new();
        for o in outputs {
            match o {
                SessionOutput::Received(pending) => {
                    let filter = self.shared.filter.clone();
                    let standing = |d: &DeviceId| shared.standing_of(d);
                    let more = session.apply(
                        pending,
                        &mut ds.doc,
                        &ds.book,
                        filter.as_ref(),
                        &standing,
                        now,
                    )?;
                    self.handle_applied(ds, more, &mut to_send);
                }
                other => self.handle_applied(ds, vec![other], &mut to_send),
            }
        }
        drop(guard);
        self.queue(to_send);
        Ok(())
    }

    /// Whether the session must not send now: it owes its peer an answer that waits for the
    /// peer's changes to be durable, or this device has own changes not yet stored.
    fn hold(&self, ds: &DocState) -> bool {
        self.owes_ack || !Shared::may_relay(ds)
    }

    fn handle_applied(
        &mut self,
        ds: &mut DocState,
        outputs: Vec<SessionOutput>,
        to_send: &mut Vec<SessionOutput>,
    ) {
        for o in outputs {
            match o {
                SessionOutput::DocChanged {
                    before,
                    stored,
                    signatures,
                } => {
                    let received = stored.map(|s| (before.as_slice(), s));
                    // The session holds itself until the store confirms (`durable` lifts it).
                    self.owes_ack = true;
                    self.shared
                        .persist_changes(ds, true, None, received, signatures);
                }
                SessionOutput::PersistSyncState(bytes) => {
                    self.shared.persist_sync_state(&self.peer, &ds.key, bytes)
                }
                SessionOutput::AdoptDocId(id) => self.shared.adopt_doc_id(ds, id),
                SessionOutput::PeerClockOffset(ms) => self.shared.set_clock_offset(&self.peer, ms),
                send @ SessionOutput::Send(_) => to_send.push(send),
                SessionOutput::Received(_) => {}
            }
        }
    }

    fn queue(&mut self, outputs: Vec<SessionOutput>) {
        for o in outputs {
            if let SessionOutput::Send(f) = o {
                f.encode_into(&mut self.out);
            }
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self
            .send
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write failed: {e}"));
        self.out.clear();
        r
    }
}
