//! The tokio driver of one peer's connection (`deskhand/sync/4`): one sync session per
//! document, each on its own QUIC bi-stream; bytes from a stream into its state machine, frames
//! out to the stream, timers, local-change wake-ups and cancellation.
//!
//! The first stream carries the workspace's root document and lives as long as the connection.
//! The dialing phone opens one more stream for every other document it has loaded, and again for
//! each one it loads later; the desktop reads such a stream's hello, checks the document is one
//! of this workspace's ([`Shared::stream_doc`]), loads it, and answers. A document stream that
//! fails ends alone (its error is shown as the peer's last error); one whose changes were
//! refused ends the connection, as the workspace's stream does when it ends.
//!
//! The desktop also opens a unidirectional catalog stream: it sends its catalog of weeks at
//! once, and again (at most every [`CATALOG_EVERY`]) when a week the phone does not sync on a
//! stream changed. The phone opens the weeks [`deskhand_core::catalog::choose`] picks, and is
//! not "in sync" before it has heard the first catalog and opened them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use deskhand_core::catalog::{Catalog, HeadsDigest};
use deskhand_core::conversation::{ConversationWeek, WeekCounts};
use deskhand_core::hub::StreamId;
use deskhand_core::session::{REVOKED_REASON, SessionError, SessionStats, close_code};
use deskhand_core::{DeviceId, Frame, FrameDecoder, SyncSession};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node::{DocHandle, Shared, lock};
use crate::store::DocKey;

const READ_CHUNK: usize = 256 * 1024;
/// How long a goodbye may take to write before the connection is closed anyway.
const GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a document stream the peer opened may take to say which document it syncs.
const STREAM_HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The shortest time between two catalogs the desktop sends on one connection.
const CATALOG_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// The largest catalog frame a phone reads: a century of weeks.
const MAX_CATALOG_FRAME: usize = 16 + deskhand_core::catalog::MAX_CATALOG_WEEKS * 32;

/// Which end of the connection this device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The desktop: accepts the streams the phone opens.
    Accept,
    /// The phone: opens a stream per loaded document.
    Dial,
}

/// How one stream ended.
struct StreamEnd {
    key: Option<DocKey>,
    /// The workspace's stream: the connection ends with it.
    main: bool,
    /// The peer's changes were refused: the connection ends too.
    refused: bool,
    result: Result<(), String>,
    stats: SessionStats,
}

/// What every stream of one connection shares.
#[derive(Clone)]
struct Conn {
    shared: Arc<Shared>,
    peer: DeviceId,
    conn: Connection,
    conn_no: u64,
    /// Ends every stream of this connection.
    cancel: CancellationToken,
    /// The documents a stream of this connection syncs.
    streamed: Arc<Mutex<HashSet<DocKey>>>,
}

/// Runs a peer's connection until it ends: the workspace's stream (`send`, `recv`) and a
/// stream per further document. Registers the session (replacing an older one of the same
/// peer) and records presence and byte counts.
pub(crate) async fn run_peer(
    shared: Arc<Shared>,
    peer: DeviceId,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    side: Side,
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
    let main = shared.main_doc();
    let main_key = lock(&main).key.clone();
    let c = Conn {
        shared: shared.clone(),
        peer,
        conn: conn.clone(),
        conn_no,
        cancel: cancel.child_token(),
        streamed: Arc::new(Mutex::new(HashSet::from([main_key]))),
    };
    let mut streams = JoinSet::new();
    {
        let c = c.clone();
        streams.spawn(async move {
            let decoder = FrameDecoder::with_max_len(c.shared.filter.limits().max_frame_bytes);
            c.run_stream(main, send, recv, decoder, None, true).await
        });
    }
    let mut opened = shared.opened.subscribe();
    if side == Side::Dial {
        shared.await_catalog(&peer, conn_no);
        c.open_streams(&mut streams);
    } else {
        let c = c.clone();
        streams.spawn(async move { c.send_catalogs().await });
    }
    let mut accepting = side == Side::Accept;
    let mut total = SessionStats::default();
    let mut result: Option<Result<(), String>> = None;
    loop {
        tokio::select! {
            end = streams.join_next() => {
                let Some(end) = end else { break };
                let end = end.unwrap_or_else(|e| StreamEnd {
                    key: None,
                    main: true,
                    refused: false,
                    result: Err(format!("a stream's task failed: {e}")),
                    stats: SessionStats::default(),
                });
                total.bytes_sent += end.stats.bytes_sent;
                total.bytes_received += end.stats.bytes_received;
                total.sync_sent += end.stats.sync_sent;
                total.sync_received += end.stats.sync_received;
                if end.main || end.refused {
                    result.get_or_insert(end.result);
                    c.cancel.cancel();
                } else {
                    // The document no longer syncs on this connection: it no longer counts
                    // towards "in sync", and a failure is the peer's last error.
                    let error = end.result.err().map(|e| {
                        let doc = end.key.as_ref().map_or("?".into(), |k| k.to_string());
                        tracing::warn!(peer = %peer.short(), %doc, "document stream ended: {e}");
                        format!("document {doc}: {e}")
                    });
                    shared.stream_ended(&peer, conn_no, end.key.as_ref(), error);
                }
            }
            accepted = conn.accept_bi(), if accepting && !c.cancel.is_cancelled() => match accepted {
                Ok((send, recv)) => {
                    let c = c.clone();
                    streams.spawn(async move { c.accept_stream(send, recv).await });
                }
                // The connection is closing: the workspace's stream hears why.
                Err(_) => accepting = false,
            },
            _ = opened.changed(), if side == Side::Dial && !c.cancel.is_cancelled() => {
                c.open_streams(&mut streams);
            }
            uni = conn.accept_uni(), if side == Side::Dial && !c.cancel.is_cancelled() => {
                if let Ok(recv) = uni {
                    let c = c.clone();
                    streams.spawn(async move { c.read_catalogs(recv).await });
                }
            }
        }
    }
    let result = result.unwrap_or(Ok(()));
    let (code, reason): (u16, String) = match &result {
        Ok(()) if cancel.is_cancelled() && shared.is_revoked(&peer) => {
            (close_code::REVOKED, REVOKED_REASON.into())
        }
        Ok(()) => (close_code::NORMAL, "bye".into()),
        Err(e) => (close_code::MALFORMED, e.chars().take(512).collect()),
    };
    conn.close(u32::from(code).into(), reason.as_bytes());
    let error = result.as_ref().err().cloned();
    match &error {
        Some(e) => tracing::warn!(peer = %peer.short(), "session ended: {e}"),
        None => tracing::info!(peer = %peer.short(), "session closed"),
    }
    shared.session_ended(&peer, conn_no, total, error.clone());
    result
}

impl Conn {
    /// Phone: a stream for every loaded document that has none yet.
    fn open_streams(&self, streams: &mut JoinSet<StreamEnd>) {
        for doc in self.shared.loaded() {
            let key = lock(&doc).key.clone();
            // The set-aside workspace of before the update is this phone's alone.
            if key == DocKey::LEGACY || !lock(&self.streamed).insert(key.clone()) {
                continue;
            }
            // Counted as not in sync until its session says otherwise.
            self.shared.stream_opening(&self.peer, self.conn_no, &key);
            let c = self.clone();
            streams.spawn(async move {
                let opened = tokio::select! {
                    _ = c.cancel.cancelled() => return c.ended(Some(key), Ok(())),
                    r = c.conn.open_bi() => r,
                };
                match opened {
                    Ok((send, recv)) => {
                        let decoder =
                            FrameDecoder::with_max_len(c.shared.filter.limits().max_frame_bytes);
                        c.run_stream(doc, send, recv, decoder, None, false).await
                    }
                    Err(e) => c.ended(Some(key), Err(format!("cannot open its stream: {e}"))),
                }
            });
        }
    }

    /// Desktop: a stream the phone opened. Its hello names the document; an unknown one, or
    /// one that already syncs on this connection, is refused on that stream alone.
    async fn accept_stream(self, mut send: SendStream, mut recv: RecvStream) -> StreamEnd {
        let mut decoder = FrameDecoder::with_max_len(self.shared.filter.limits().max_frame_bytes);
        let first = tokio::select! {
            _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
            r = tokio::time::timeout(STREAM_HELLO_TIMEOUT, first_frame(&mut recv, &mut decoder)) => {
                r.unwrap_or_else(|_| Err(format!("no hello within {STREAM_HELLO_TIMEOUT:?}")))
            }
        };
        let routed = match first {
            Ok(Frame::Hello(h)) => match h.doc_id {
                Some(id) => match self.shared.stream_doc(id).await {
                    Ok(doc) => {
                        let key = lock(&doc).key.clone();
                        if lock(&self.streamed).insert(key.clone()) {
                            Ok((doc, Frame::Hello(h)))
                        } else {
                            Err((
                                close_code::PROTOCOL,
                                format!(
                                    "document {key} already syncs on another stream of this connection"
                                ),
                            ))
                        }
                    }
                    Err(reason) => Err((close_code::WRONG_DOCUMENT, reason)),
                },
                None => Err((
                    close_code::PROTOCOL,
                    "a document stream's hello names no document".into(),
                )),
            },
            Ok(other) => Err((
                close_code::PROTOCOL,
                format!(
                    "a document stream opened with a {} frame, not a hello",
                    other.kind_name()
                ),
            )),
            Err(e) => Err((close_code::MALFORMED, e)),
        };
        match routed {
            Ok((doc, hello)) => {
                self.run_stream(doc, send, recv, decoder, Some(hello), false)
                    .await
            }
            Err((code, reason)) => {
                tracing::warn!(peer = %self.peer.short(), "refused a document stream: {reason}");
                let mut out = Vec::new();
                Frame::Goodbye {
                    code,
                    reason: reason.clone(),
                }
                .encode_into(&mut out);
                let _ = tokio::time::timeout(GOODBYE_GRACE, send.write_all(&out)).await;
                let _ = send.finish();
                self.ended(None, Err(reason))
            }
        }
    }

    /// Runs the session of `doc` on one stream until it ends.
    async fn run_stream(
        &self,
        doc: DocHandle,
        send: SendStream,
        recv: RecvStream,
        decoder: FrameDecoder,
        first: Option<Frame>,
        main: bool,
    ) -> StreamEnd {
        let key = lock(&doc).key.clone();
        let mut driver = Driver {
            doc,
            key: key.clone(),
            main,
            shared: self.shared.clone(),
            peer: self.peer,
            send,
            out: Vec::new(),
            conn: self.conn.clone(),
            conn_no: self.conn_no,
            stream: self
                .shared
                .next_stream
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            outbox: mpsc::unbounded_channel().1,
        };
        let (result, stats, refused) = driver.run(recv, decoder, first, &self.cancel).await;
        let _ = driver.send.finish();
        StreamEnd {
            key: Some(key),
            main,
            refused,
            result,
            stats,
        }
    }

    /// Desktop: the catalog stream. Sends the catalog now, then whenever it changed in a week
    /// this connection does not sync on a stream of its own, at most every [`CATALOG_EVERY`].
    async fn send_catalogs(self) -> StreamEnd {
        let mut send = tokio::select! {
            _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
            r = self.conn.open_uni() => match r {
                Ok(s) => s,
                Err(e) => return self.ended(None, Err(format!("cannot open the catalog stream: {e}"))),
            },
        };
        let mut changes = self.shared.catalog_gen.subscribe();
        let mut last: Option<Vec<(ConversationWeek, DocKey, HeadsDigest, WeekCounts)>> = None;
        loop {
            // Whether to send is judged on what is recorded (digests, message counts); the
            // loaded weeks are recounted only when a catalog goes out.
            let entries = self.shared.known_weeks();
            let worth = match &last {
                None => true,
                Some(before) => {
                    let streamed = lock(&self.streamed).clone();
                    let old: HashMap<_, _> =
                        before.iter().map(|(w, _, d, c)| (*w, (*d, *c))).collect();
                    entries.len() != before.len()
                        || entries.iter().any(|(w, k, d, c)| {
                            old.get(w) != Some(&(*d, *c)) && !streamed.contains(k)
                        })
                }
            };
            if worth {
                let entries = self.shared.catalog_entries();
                let catalog = Catalog::with_counts(entries.iter().map(|(w, _, d, c)| (*w, *d, *c)));
                let frame = Frame::Catalog(catalog.encode()).encode();
                let written = tokio::select! {
                    _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
                    r = send.write_all(&frame) => r,
                };
                if let Err(e) = written {
                    return self.ended(None, Err(format!("the catalog stream failed: {e}")));
                }
                // The first catalog, and the first change after a quiet spell, go out at once;
                // a burst of changes at most every CATALOG_EVERY (changes meanwhile are seen
                // below).
                if last.replace(entries).is_some() {
                    tokio::select! {
                        _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
                        _ = tokio::time::sleep(CATALOG_EVERY) => {}
                    }
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
                r = changes.changed() => if r.is_err() { return self.ended(None, Ok(())) },
            }
        }
    }

    /// Phone: the desktop's catalog stream. Each catalog opens the weeks to sync now; the
    /// first one also lets the connection count as "in sync" once those weeks are.
    async fn read_catalogs(self, mut recv: RecvStream) -> StreamEnd {
        let mut decoder = FrameDecoder::with_max_len(MAX_CATALOG_FRAME);
        loop {
            let frame = tokio::select! {
                _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
                f = first_frame(&mut recv, &mut decoder) => f,
            };
            let catalog = match frame {
                Ok(Frame::Catalog(bytes)) => match Catalog::decode(&bytes) {
                    Ok(c) => c,
                    Err(e) => return self.ended(None, Err(format!("the desktop's catalog: {e}"))),
                },
                Ok(other) => {
                    return self.ended(
                        None,
                        Err(format!(
                            "a {} frame on the catalog stream",
                            other.kind_name()
                        )),
                    );
                }
                // The desktop closed its side: the connection is ending.
                Err(e) if e.contains("ended before") => return self.ended(None, Ok(())),
                Err(e) => return self.ended(None, Err(format!("the catalog stream: {e}"))),
            };
            // The workspace's id comes with pairing or the root's hello.
            while self.shared.lock_doc().doc_id.is_none() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return self.ended(None, Ok(())),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                }
            }
            let keys = self.shared.on_desktop_catalog(catalog).await;
            for key in &keys {
                if !lock(&self.streamed).contains(key) {
                    self.shared.stream_opening(&self.peer, self.conn_no, key);
                }
            }
            self.shared.catalog_heard(&self.peer, self.conn_no);
        }
    }

    fn ended(&self, key: Option<DocKey>, result: Result<(), String>) -> StreamEnd {
        StreamEnd {
            key,
            main: false,
            refused: false,
            result,
            stats: SessionStats::default(),
        }
    }
}

/// Reads from `recv` until `decoder` holds one whole frame.
async fn first_frame(recv: &mut RecvStream, decoder: &mut FrameDecoder) -> Result<Frame, String> {
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            return Ok(frame);
        }
        match recv.read_chunk(READ_CHUNK).await {
            Ok(Some(bytes)) => decoder.push(&bytes),
            Ok(None) => return Err("the stream ended before its hello".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

struct Driver {
    /// The document this session syncs.
    doc: DocHandle,
    key: DocKey,
    /// The workspace's stream: the one that watches the connection's path.
    main: bool,
    conn: Connection,
    conn_no: u64,
    shared: Arc<Shared>,
    peer: DeviceId,
    send: SendStream,
    out: Vec<u8>,
    /// The session's name in the document's hub.
    stream: StreamId,
    /// The frames the hub has for this session (its own answers and relays of other sessions).
    outbox: mpsc::UnboundedReceiver<Frame>,
}

/// Removes a session from its document's hub when its driver ends, however it ends.
struct Registered {
    doc: DocHandle,
    stream: StreamId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut ds = lock(&self.doc);
        ds.hub.close(self.stream);
        ds.outboxes.remove(&self.stream);
    }
}

impl Driver {
    /// Runs the session; `first` is a frame already read from the stream (a document
    /// stream's hello), fed before anything else. Returns how it ended, its byte counts, and
    /// whether the peer's changes were refused.
    async fn run(
        &mut self,
        mut recv: RecvStream,
        mut decoder: FrameDecoder,
        first: Option<Frame>,
        cancel: &CancellationToken,
    ) -> (Result<(), String>, SessionStats, bool) {
        let now = self.shared.now_ms();
        let _registered = {
            let (outbox, frames) = mpsc::unbounded_channel();
            self.outbox = frames;
            let mut guard = lock(&self.doc);
            let ds = &mut *guard;
            let persisted = self.shared.sync_state(&self.peer, &ds.key);
            let session = SyncSession::new(self.peer, ds.doc_id, persisted.as_deref(), now)
                .with_wall_clock(self.shared.wall_ms());
            ds.outboxes.insert(self.stream, outbox);
            let outputs = ds.hub.open(self.stream, session, &ds.doc);
            self.shared.dispatch(ds, outputs, None);
            Registered {
                doc: self.doc.clone(),
                stream: self.stream,
            }
        };
        let result = match first {
            Some(frame) => self.on_frame(frame),
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => self.main_loop(&mut recv, &mut decoder, cancel).await,
            Err(e) => Err(e),
        };
        let refused = matches!(result, Err(SessionError::Refused(_)));
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
        let stats = lock(&self.doc).hub.stats(self.stream).unwrap_or_default();
        (result, stats, refused)
    }

    async fn main_loop(
        &mut self,
        recv: &mut RecvStream,
        decoder: &mut FrameDecoder,
        cancel: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut probe = self.shared.probe.subscribe();
        probe.mark_unchanged();
        let mut lan = self.shared.lan_sighting.subscribe();
        lan.mark_unchanged();
        self.take_outbox();
        self.flush().await.map_err(SessionError::Protocol)?;
        loop {
            let next = lock(&self.doc).hub.next_deadline(self.stream);
            // A session always has a deadline (its next ping); the cap only guards the sum.
            let deadline = self
                .shared
                .instant_at(next.min(self.shared.now_ms() + 3_600_000));
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
                                self.on_frame(frame)?;
                            }
                        }
                        Ok(None) => return Err(self.closed_by_peer("the peer finished the stream".into())),
                        Err(e) => return Err(self.closed_by_peer(e.to_string())),
                    }
                }
                frame = self.outbox.recv() => {
                    // Sent by the hub: an answer now durable, or another session's relay.
                    if let Some(frame) = frame {
                        frame.encode_into(&mut self.out);
                    }
                }
                _ = probe.changed() => {
                    let mut guard = lock(&self.doc);
                    let ds = &mut *guard;
                    let outputs = ds.hub.probe(self.stream, self.shared.now_ms());
                    self.shared.dispatch(ds, outputs, None);
                }
                _ = lan.changed(), if self.main => {
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
                    let mut guard = lock(&self.doc);
                    let ds = &mut *guard;
                    let outputs = ds.hub.on_tick(self.stream, &ds.doc, &ds.book, self.shared.now_ms())?;
                    self.shared.dispatch(ds, outputs, None);
                }
            }
            self.take_outbox();
            self.flush().await.map_err(SessionError::Protocol)?;
            let (in_sync, stats) = {
                let ds = lock(&self.doc);
                (
                    ds.hub.in_sync(self.stream, &ds.doc),
                    ds.hub.stats(self.stream).unwrap_or_default(),
                )
            };
            self.shared
                .session_progress(&self.peer, self.conn_no, &self.key, stats, in_sync);
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

    fn on_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        let len = match &frame {
            Frame::Sync(b) => 6 + b.len(),
            f => f.encode().len(),
        };
        let now = self.shared.now_ms();
        let shared = self.shared.clone();
        let standing = |d: &DeviceId| shared.standing_of(d);
        let mut guard = lock(&self.doc);
        let ds = &mut *guard;
        let mut outputs = Vec::new();
        let result = ds.hub.on_frame(
            self.stream,
            frame,
            len,
            &mut ds.doc,
            &mut ds.book,
            shared.filter.as_ref(),
            &standing,
            now,
            &mut outputs,
        );
        // Also after an error: changes applied before it are stored and relayed.
        self.shared.dispatch(ds, outputs, None);
        result
    }

    /// Moves the frames the hub queued for this session into the write buffer.
    fn take_outbox(&mut self) {
        while let Ok(frame) = self.outbox.try_recv() {
            frame.encode_into(&mut self.out);
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
