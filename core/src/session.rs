//! The per-peer sync session: a sans-IO state machine.
//!
//! Frames and events go in, frames to send and storage writes come out; the caller owns the
//! document (shared by every session of a node), the socket and the clock (milliseconds from any
//! fixed origin). One session lives as long as one connection; its Automerge sync state is
//! persisted between connections so that a reconnect sends only what is missing.
//!
//! Receiving is two steps: [`SyncSession::on_frame`] decodes a frame and yields
//! [`SessionOutput::Received`], which the caller hands to [`SyncSession::apply`] with the document
//! locked; `apply` vets, applies and returns the changes in the form the caller stores
//! ([`SessionOutput::DocChanged`]), and holds the session until the caller says they are durable.

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash};

use automerge::ActorId;

use crate::authorship::{self, ChangeSignature, SignatureBook, Signed};
use crate::bounds::{BoundsError, Limits};
use crate::frame::{Frame, Hello, PROTOCOL_VERSION};
use crate::incoming::{self, Incoming, IncomingError, Storable};
use crate::trust::{Author, ChangeFilter, Refusal, Standing, Touched};
use crate::{DeviceId, DocId};

/// Send a ping after this long without hearing from the peer.
pub const PING_AFTER_MS: u64 = 2_000;
/// Give the peer up after this long without hearing from it.
pub const DEAD_AFTER_MS: u64 = 6_000;
/// How long a [`SyncSession::probe`] waits for any answer.
pub const PROBE_TIMEOUT_MS: u64 = 1_500;
/// Re-negotiate when a sync message has been in flight this long without an answer.
pub const RESEND_AFTER_MS: u64 = 2_000;

/// Codes carried in [`Frame::Goodbye`].
pub mod close_code {
    /// Normal shutdown.
    pub const NORMAL: u16 = 0;
    /// The peers speak different protocol versions.
    pub const PROTOCOL: u16 = 1;
    /// The peers hold different workspace documents.
    pub const WRONG_DOCUMENT: u16 = 2;
    /// The peer sent something malformed.
    pub const MALFORMED: u16 = 3;
    /// The peer's changes were refused by policy.
    pub const REFUSED: u16 = 4;
    /// The peer is not (or no longer) allowed.
    pub const NOT_ALLOWED: u16 = 5;
    /// The peer stopped answering.
    pub const TIMEOUT: u16 = 6;
    /// The desktop revoked this device: it will not be let in again (a phone remembers it).
    pub const REVOKED: u16 = 7;
}

/// What a desktop tells a device it revoked, live or when it tries again.
pub const REVOKED_REASON: &str = "this device was revoked by the desktop";

/// Why a session ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Different protocol versions.
    #[error("{}", protocol_mismatch(*theirs))]
    ProtocolMismatch {
        /// The peer's version.
        theirs: u16,
    },
    /// The peers hold different workspace documents.
    #[error("peer holds workspace {theirs}, this device holds {ours}")]
    WrongDocument {
        /// Ours.
        ours: DocId,
        /// Theirs.
        theirs: DocId,
    },
    /// A frame arrived out of order or could not be decoded.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer's changes were refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Automerge rejected the peer's message.
    #[error("could not apply the peer's changes: {0}")]
    Apply(String),
    /// Nothing heard for [`DEAD_AFTER_MS`].
    #[error("peer silent for {0} ms")]
    Timeout(u64),
    /// The path this session runs on is gone: the peer now announces other addresses (its
    /// address changed on the local network, seen by mDNS). The connection cannot follow (a
    /// QUIC server does not migrate), so the caller dials the new address at once.
    #[error("the peer moved: {0}")]
    PathGone(String),
    /// The peer said goodbye.
    #[error("peer closed the session (code {code}): {reason}")]
    ClosedByPeer {
        /// Its code.
        code: u16,
        /// Its reason.
        reason: String,
    },
}

impl SessionError {
    /// The goodbye frame that tells the peer why we end the session, if one should be sent.
    pub fn goodbye(&self) -> Option<Frame> {
        let code = match self {
            SessionError::ProtocolMismatch { .. } => close_code::PROTOCOL,
            SessionError::WrongDocument { .. } => close_code::WRONG_DOCUMENT,
            SessionError::Protocol(_) | SessionError::Apply(_) => close_code::MALFORMED,
            SessionError::Refused(_) => close_code::REFUSED,
            SessionError::Timeout(_) => close_code::TIMEOUT,
            SessionError::ClosedByPeer { .. } | SessionError::PathGone(_) => return None,
        };
        Some(Frame::Goodbye {
            code,
            reason: self.to_string(),
        })
    }
}

fn protocol_mismatch(theirs: u16) -> String {
    if theirs < PROTOCOL_VERSION {
        format!(
            "the other device speaks sync protocol {theirs}, this one {PROTOCOL_VERSION}: update Deskhand on the other device"
        )
    } else {
        format!(
            "the other device speaks sync protocol {theirs}, this one {PROTOCOL_VERSION}: update Deskhand on this device"
        )
    }
}

/// A sync message received and decoded but not yet applied, with the signatures that came
/// before it.
#[derive(Debug)]
pub struct PendingSync {
    message: sync::Message,
    signatures: Vec<ChangeSignature>,
}

/// What the caller must do after feeding the session.
#[derive(Debug)]
pub enum SessionOutput {
    /// Write this frame to the peer.
    Send(Frame),
    /// A sync message arrived: store its chunks if required, then call [`SyncSession::apply`].
    Received(PendingSync),
    /// The document changed by the peer's changes; heads before the change are given.
    DocChanged {
        /// Heads before applying.
        before: Vec<ChangeHash>,
        /// The changes as received, when they can be stored as they are (everything from
        /// `before` on is in them); else the caller saves what changed since `before`.
        stored: Option<Storable>,
        /// Verified signatures of the new changes' authors: record them in the node's
        /// [`SignatureBook`] and store them with the changes.
        signatures: Vec<(ActorId, Signed)>,
    },
    /// Persist this encoded sync state for the peer.
    PersistSyncState(Vec<u8>),
    /// The peer told us the workspace id (a phone that had none adopts it).
    AdoptDocId(DocId),
    /// The peer's hello told its wall clock: `peer − ours`, in milliseconds, as measured when
    /// the hello arrived (off by at most the one-way delay). Only when this session was given
    /// its own wall clock ([`SyncSession::with_wall_clock`]).
    PeerClockOffset(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello,
    Open,
}

/// Bytes and frames counted by a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Encoded frame bytes handed out to send.
    pub bytes_sent: u64,
    /// Frame bytes received (as reported by the caller).
    pub bytes_received: u64,
    /// Sync messages sent.
    pub sync_sent: u64,
    /// Sync messages received.
    pub sync_received: u64,
}

/// One peer's sync session.
#[derive(Debug)]
pub struct SyncSession {
    peer: DeviceId,
    local_doc: Option<DocId>,
    state: sync::State,
    phase: Phase,
    last_heard: u64,
    last_sync_sent: u64,
    ping_outstanding: Option<u64>,
    /// Set by [`SyncSession::probe`]: the peer must be heard from by then or the session ends.
    probe_deadline: Option<u64>,
    next_nonce: u64,
    persisted_shared: Vec<ChangeHash>,
    stats: SessionStats,
    hold: bool,
    /// Changes of the peer that wait for dependencies it has not sent yet.
    parked: Vec<Change>,
    /// Those dependencies, to ask for in the next message.
    missing: Vec<ChangeHash>,
    /// Signatures received for the next sync message (a `Signatures` frame precedes it).
    received_signatures: Vec<ChangeSignature>,
    /// Signatures that came with the parked changes.
    parked_signatures: Vec<ChangeSignature>,
    /// Our wall clock (Unix ms) minus the session's `now`, when the caller gave it.
    wall_origin: Option<i64>,
}

impl SyncSession {
    /// A session with `peer`, resuming from its persisted sync state if there is one.
    ///
    /// A persisted state that does not decode is dropped: the protocol then re-negotiates from
    /// scratch, which costs bytes but loses nothing.
    pub fn new(
        peer: DeviceId,
        local_doc: Option<DocId>,
        persisted: Option<&[u8]>,
        now: u64,
    ) -> Self {
        let state = persisted
            .and_then(|b| sync::State::decode(b).ok())
            .unwrap_or_default();
        let persisted_shared = state.shared_heads.clone();
        Self {
            peer,
            local_doc,
            state,
            phase: Phase::AwaitingHello,
            last_heard: now,
            last_sync_sent: now,
            ping_outstanding: None,
            probe_deadline: None,
            next_nonce: 1,
            persisted_shared,
            stats: SessionStats::default(),
            hold: false,
            parked: Vec::new(),
            missing: Vec::new(),
            received_signatures: Vec::new(),
            parked_signatures: Vec::new(),
            wall_origin: None,
        }
    }

    /// Tells the session this device's wall clock (`wall_now_ms`, Unix ms) at the `now` it was
    /// created with: its hellos then carry the wall clock, and a peer's hello yields
    /// [`SessionOutput::PeerClockOffset`]. The session keeps no clock: later wall times are this
    /// origin plus the `now` each call is given.
    pub fn with_wall_clock(mut self, wall_now_ms: i64) -> Self {
        self.wall_origin = Some(wall_now_ms - self.last_heard as i64);
        self
    }

    /// The peer.
    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Whether both hellos were exchanged.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Heads both sides are known to share.
    pub fn shared_heads(&self) -> &[ChangeHash] {
        &self.state.shared_heads
    }

    /// While held, the session sends no sync messages (it still receives, answers pings and
    /// keeps time). A node holds its sessions while some of its document is not yet durable, so
    /// that nothing it has not stored is ever sent; it calls [`Self::on_local_change`] on release.
    /// [`Self::apply`] holds the session itself when the peer's changes altered the document.
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Whether both sides hold exactly `doc`'s changes, as far as this session knows. Never
    /// before the peer's first sync message has told its heads: a phone that has received
    /// nothing yet is not "in sync" with a desktop it has only heard say hello.
    pub fn in_sync(&self, doc: &Automerge) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        let Some(theirs) = &self.state.their_heads else {
            return false;
        };
        let mut ours = doc.get_heads();
        ours.sort();
        let mut shared = self.state.shared_heads.clone();
        shared.sort();
        let mut theirs = theirs.clone();
        theirs.sort();
        shared == ours && theirs == ours
    }

    /// Starts the session: our hello.
    pub fn start(&mut self, doc: &Automerge) -> Vec<SessionOutput> {
        let mut out = Vec::new();
        let now = self.last_heard;
        self.send(&mut out, Frame::Hello(self.hello(doc, now)));
        out
    }

    fn hello(&self, doc: &Automerge, now: u64) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            doc_id: self.local_doc,
            heads: doc.get_heads(),
            wall_clock_ms: self
                .wall_origin
                .and_then(|o| u64::try_from(o.saturating_add(now as i64)).ok()),
        }
    }

    fn send(&mut self, out: &mut Vec<SessionOutput>, frame: Frame) {
        // Counted as encoded; the caller encodes once more when writing, which is cheap
        // compared with the network write and keeps the byte count exact.
        self.stats.bytes_sent += frame_len(&frame) as u64;
        out.push(SessionOutput::Send(frame));
    }

    fn generate(
        &mut self,
        doc: &Automerge,
        book: &SignatureBook,
        out: &mut Vec<SessionOutput>,
        now: u64,
    ) {
        if self.phase != Phase::Open || self.hold {
            return;
        }
        // Which signed changes the peer was already sent: the message carries those that are
        // sent now (Automerge adds every change it sends to `sent_hashes`).
        let sent_before: Vec<bool> = book
            .iter()
            .map(|(_, s)| self.state.sent_hashes.contains(&s.signature.hash))
            .collect();
        let asked = std::mem::take(&mut self.missing);
        let msg = doc.generate_sync_message(&mut self.state).map(|mut msg| {
            if !asked.is_empty() {
                // Changes wait here for these: ask for them by name. Without a bloom filter the
                // peer sends exactly what is needed (Automerge does the same for its own queue).
                msg.need.extend(asked.iter().copied());
                // Automerge encodes hash lists sorted (and asserts it).
                msg.need.sort();
                msg.need.dedup();
                msg.have.clear();
            }
            msg
        });
        if msg.is_none() {
            self.missing = asked;
        }
        if let Some(msg) = msg {
            if !msg.changes.is_empty() {
                let signatures: Vec<ChangeSignature> = book
                    .iter()
                    .zip(sent_before)
                    .filter(|((_, s), before)| {
                        !before && self.state.sent_hashes.contains(&s.signature.hash)
                    })
                    .map(|((_, s), _)| s.signature)
                    .collect();
                if !signatures.is_empty() {
                    self.send(out, Frame::Signatures(signatures));
                }
            }
            self.stats.sync_sent += 1;
            self.last_sync_sent = now;
            self.send(out, Frame::Sync(msg.encode()));
        }
    }

    /// Feeds one frame received from the peer (`wire_len` is its encoded size, for the stats).
    pub fn on_frame(
        &mut self,
        frame: Frame,
        wire_len: usize,
        doc: &Automerge,
        book: &SignatureBook,
        now: u64,
    ) -> Result<Vec<SessionOutput>, SessionError> {
        self.last_heard = now;
        // Any frame shows the peer is alive, so it answers an outstanding ping: waiting for that
        // ping's own pong would stop our pings for good once one pong is lost.
        self.ping_outstanding = None;
        self.probe_deadline = None;
        self.stats.bytes_received += wire_len as u64;
        let mut out = Vec::new();
        match frame {
            Frame::Hello(h) => {
                if h.protocol != PROTOCOL_VERSION {
                    return Err(SessionError::ProtocolMismatch { theirs: h.protocol });
                }
                match (self.local_doc, h.doc_id) {
                    (Some(ours), Some(theirs)) if ours != theirs => {
                        return Err(SessionError::WrongDocument { ours, theirs });
                    }
                    (None, Some(theirs)) => {
                        self.local_doc = Some(theirs);
                        out.push(SessionOutput::AdoptDocId(theirs));
                    }
                    _ => {}
                }
                if let (Some(origin), Some(theirs)) = (self.wall_origin, h.wall_clock_ms) {
                    let ours = origin.saturating_add(now as i64);
                    let theirs = i64::try_from(theirs).unwrap_or(i64::MAX);
                    let offset = theirs.saturating_sub(ours);
                    // A clock further off than that is nonsense: left unknown, not believed.
                    if offset.unsigned_abs() <= crate::pairing::MAX_CLOCK_OFFSET_MS.unsigned_abs() {
                        out.push(SessionOutput::PeerClockOffset(offset));
                    }
                }
                if self.phase == Phase::Open {
                    // A repeated hello: the peer restarted its side. Start negotiation afresh.
                    self.reset_negotiation();
                }
                self.phase = Phase::Open;
                self.generate(doc, book, &mut out, now);
            }
            Frame::Sync(bytes) => {
                if self.phase != Phase::Open {
                    return Err(SessionError::Protocol("sync message before hello".into()));
                }
                let message = sync::Message::decode(&bytes).map_err(|e| {
                    SessionError::Protocol(format!("undecodable sync message: {e}"))
                })?;
                self.stats.sync_received += 1;
                out.push(SessionOutput::Received(PendingSync {
                    message,
                    signatures: std::mem::take(&mut self.received_signatures),
                }));
            }
            Frame::Signatures(signatures) => {
                if self.phase != Phase::Open {
                    return Err(SessionError::Protocol("signatures before hello".into()));
                }
                self.received_signatures = signatures;
            }
            Frame::Ping(n) => self.send(&mut out, Frame::Pong(n)),
            Frame::Pong(_) => {}
            Frame::Goodbye { code, reason } => {
                return Err(SessionError::ClosedByPeer { code, reason });
            }
            Frame::Catalog(_) => {
                return Err(SessionError::Protocol(
                    "a catalog on a document's stream (it has a stream of its own)".into(),
                ));
            }
        }
        Ok(out)
    }

    /// Applies a received sync message after the filter accepts it.
    ///
    /// The message's changes are read and checked ([`Incoming::read`]); the signatures that
    /// came with them tell who wrote them ([`authorship::prove`]), and `standing` how this
    /// device stands to each author. The new changes, in causal order, are split into runs by
    /// author; each run is vetted by `filter.check` on the document as it is before the run and
    /// applied; then every run is judged by `filter.judge` on the document as it now is. A
    /// refusal returns the document to its state before the message. Changes whose
    /// dependencies have not arrived wait in the session (at most the filter's
    /// [`Limits::max_changes`](crate::bounds::Limits)) and their missing dependencies are asked
    /// for by name in the next message.
    pub fn apply(
        &mut self,
        pending: PendingSync,
        doc: &mut Automerge,
        book: &SignatureBook,
        filter: &dyn ChangeFilter,
        standing: &dyn Fn(&DeviceId) -> Standing,
        now: u64,
    ) -> Result<Vec<SessionOutput>, SessionError> {
        let mut out = Vec::new();
        let before = doc.get_heads();
        let mut message = pending.message;
        let mut storable = None;
        let mut verified = Vec::new();
        if !message.changes.is_empty() || !self.parked.is_empty() {
            // Read the changes once; Automerge then sees the message without them, which updates
            // the sync state exactly as if it had applied them itself (see `advance_heads`).
            let limits = filter.limits();
            let parked = std::mem::take(&mut self.parked);
            let mut signatures = std::mem::take(&mut self.parked_signatures);
            signatures.extend(pending.signatures);
            let mut incoming = Incoming::read(doc, message.changes.iter(), limits, parked)
                .map_err(|e| self.incoming_error(e))?;
            self.park(doc, incoming.take_waiting(), &limits)?;
            let waiting: std::collections::HashSet<ChangeHash> =
                self.parked.iter().map(Change::hash).collect();
            self.parked_signatures = signatures
                .iter()
                .filter(|s| waiting.contains(&s.hash))
                .copied()
                .take(limits.max_changes as usize)
                .collect();
            let proofs = authorship::prove(incoming.new_changes(), &signatures);
            let runs = self.runs_by_author(incoming.new_changes(), &proofs, standing);
            let actor = doc.get_actor().clone();
            let mut judged: Vec<(Author, Touched)> = Vec::new();
            let undo = if runs.len() <= 1 {
                let author = runs
                    .first()
                    .map(|(_, a)| *a)
                    .unwrap_or_else(|| Author::peer_itself(self.peer));
                judged.push((author, filter.check(&author, doc, incoming.new_changes())?));
                let applied = incoming.apply(doc).map_err(|e| self.incoming_error(e))?;
                storable = applied.stored;
                match applied.replaced {
                    Some(old) => Undo::Keep(Box::new(old)),
                    None if doc.get_heads() == before => Undo::Nothing,
                    None => Undo::Heads(before.clone(), actor),
                }
            } else {
                // Changes of several authors (a phone handing back what a restored desktop
                // lost): each run is vetted against the document its author wrote it on.
                let changes = incoming.into_new_changes();
                let mut bytes =
                    Vec::with_capacity(changes.iter().map(|c| c.raw_bytes().len()).sum());
                for c in &changes {
                    bytes.extend_from_slice(c.raw_bytes());
                }
                let undo = Undo::Heads(before.clone(), actor);
                for (range, author) in runs {
                    let run = &changes[range];
                    let step = filter
                        .check(&author, doc, run)
                        .map_err(SessionError::from)
                        .and_then(|t| {
                            incoming::apply_changes(doc, run.to_vec())
                                .map(|()| t)
                                .map_err(|e| self.incoming_error(e))
                        });
                    match step {
                        Ok(t) => judged.push((author, t)),
                        Err(e) => {
                            undo.restore(doc)
                                .map_err(|u| SessionError::Apply(format!("{e}; then {u}")))?;
                            return Err(e);
                        }
                    }
                }
                storable = Some(Storable::Changes(bytes));
                undo
            };
            for (author, touched) in &judged {
                if let Err(refusal) = filter.judge(author, doc, touched) {
                    undo.restore(doc)
                        .map_err(|e| SessionError::Apply(format!("{refusal}; then {e}")))?;
                    return Err(refusal.into());
                }
            }
            verified = proofs.verified;
            message.changes = Vec::<Vec<u8>>::new().into();
            self.state.shared_heads =
                advance_heads(&before, &doc.get_heads(), &self.state.shared_heads);
            let last_sent = self.state.last_sent_heads.clone();
            doc.receive_sync_message(&mut self.state, message)
                .map_err(|e| SessionError::Apply(e.to_string()))?;
            // Automerge takes a message without changes whose heads equal ours as the end of an
            // exchange; this one had changes, so that bookkeeping does not apply.
            self.state.last_sent_heads = last_sent;
        } else {
            doc.receive_sync_message(&mut self.state, message)
                .map_err(|e| SessionError::Apply(e.to_string()))?;
        }
        // A change the peer still asks for never reached it (its frame was lost): forget that we
        // sent it, or Automerge never sends it again and both sides trade empty messages forever.
        if let Some(need) = &self.state.their_need {
            for hash in need {
                self.state.sent_hashes.remove(hash);
            }
        }
        if doc.get_heads() != before {
            // Our next message would tell the peer we have its changes: it waits until the caller
            // has stored them and lifts the hold (never acknowledge what is not on disk).
            self.hold = true;
            out.push(SessionOutput::DocChanged {
                before,
                stored: storable,
                signatures: verified,
            });
        }
        if self.state.shared_heads != self.persisted_shared {
            self.persisted_shared = self.state.shared_heads.clone();
            out.push(SessionOutput::PersistSyncState(self.state.encode()));
        }
        self.generate(doc, book, &mut out, now);
        Ok(out)
    }

    /// Splits `new` (in causal order) into runs of consecutive changes by one author.
    fn runs_by_author(
        &self,
        new: &[Change],
        proofs: &authorship::Proofs,
        standing: &dyn Fn(&DeviceId) -> Standing,
    ) -> Vec<(std::ops::Range<usize>, Author)> {
        // One author per actor, looked up once (a message may hold thousands of changes).
        let mut by_actor: std::collections::HashMap<&ActorId, Author> = Default::default();
        let mut runs: Vec<(std::ops::Range<usize>, Author)> = Vec::new();
        for (i, c) in new.iter().enumerate() {
            let author = *by_actor.entry(c.actor_id()).or_insert_with(|| {
                let who = proofs.author_of(c);
                Author {
                    peer: self.peer,
                    device: who.device(),
                    proven: matches!(who, authorship::Authorship::Proven(_)),
                    standing: who.device().map_or(Standing::Stranger, |d| standing(&d)),
                }
            });
            match runs.last_mut() {
                Some((range, a)) if *a == author => range.end = i + 1,
                _ => runs.push((i..i + 1, author)),
            }
        }
        runs
    }

    /// A message whose changes cannot be taken: malformed ones end the session as malformed,
    /// inconsistent ones are refused like a forgery (no honest Automerge writes them).
    fn incoming_error(&self, e: IncomingError) -> SessionError {
        match e {
            IncomingError::Inconsistent(_)
            | IncomingError::Bounds(BoundsError::TooLarge { .. }) => {
                SessionError::Refused(Refusal {
                    peer: self.peer,
                    reason: e.to_string(),
                })
            }
            other => SessionError::Apply(other.to_string()),
        }
    }

    /// Keeps changes whose dependencies are missing, bounded, and notes what to ask for.
    fn park(
        &mut self,
        doc: &Automerge,
        waiting: Vec<Change>,
        limits: &Limits,
    ) -> Result<(), SessionError> {
        let bytes: u64 = waiting.iter().map(|c| c.raw_bytes().len() as u64).sum();
        if waiting.len() as u64 > limits.max_changes || bytes > limits.max_inflated_bytes {
            return Err(SessionError::Refused(Refusal {
                peer: self.peer,
                reason: format!(
                    "{} changes ({bytes} bytes) whose dependencies never arrived",
                    waiting.len()
                ),
            }));
        }
        let parked: std::collections::HashSet<ChangeHash> =
            waiting.iter().map(Change::hash).collect();
        let mut missing: Vec<ChangeHash> = waiting
            .iter()
            .flat_map(|c| c.deps().iter().copied())
            .filter(|d| !parked.contains(d) && doc.get_change_meta_by_hash(d).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        self.missing = missing;
        self.parked = waiting;
        Ok(())
    }

    /// The document changed locally (or through another peer): tell this peer.
    pub fn on_local_change(
        &mut self,
        doc: &Automerge,
        book: &SignatureBook,
        now: u64,
    ) -> Vec<SessionOutput> {
        let mut out = Vec::new();
        self.generate(doc, book, &mut out, now);
        out
    }

    /// When [`Self::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> u64 {
        let mut t = self.last_heard
            + if self.ping_outstanding.is_some() {
                DEAD_AFTER_MS
            } else {
                PING_AFTER_MS
            };
        if self.phase != Phase::Open || self.awaiting_answer() {
            t = t.min(self.last_sync_sent.max(self.last_heard) + RESEND_AFTER_MS);
        }
        if let Some(p) = self.probe_deadline {
            t = t.min(p);
        }
        t
    }

    /// Checks now that the peer is still there (the network changed, the app came to the
    /// foreground): a ping goes out, and unless the peer answers within [`PROBE_TIMEOUT_MS`] the
    /// session ends so that the caller reconnects at once instead of after [`DEAD_AFTER_MS`].
    pub fn probe(&mut self, now: u64) -> Vec<SessionOutput> {
        let mut out = Vec::new();
        let n = self.next_nonce;
        self.next_nonce += 1;
        self.ping_outstanding = Some(n);
        self.probe_deadline = Some(now + PROBE_TIMEOUT_MS);
        self.send(&mut out, Frame::Ping(n));
        out
    }

    /// Timers: liveness pings, giving up on a silent peer, and re-negotiating a lost exchange.
    pub fn on_tick(
        &mut self,
        doc: &Automerge,
        book: &SignatureBook,
        now: u64,
    ) -> Result<Vec<SessionOutput>, SessionError> {
        let silent = now.saturating_sub(self.last_heard);
        if silent >= DEAD_AFTER_MS || self.probe_deadline.is_some_and(|p| now >= p) {
            return Err(SessionError::Timeout(silent));
        }
        let mut out = Vec::new();
        if silent >= PING_AFTER_MS && self.ping_outstanding.is_none() {
            let n = self.next_nonce;
            self.next_nonce += 1;
            self.ping_outstanding = Some(n);
            self.send(&mut out, Frame::Ping(n));
        }
        let waited = now.saturating_sub(self.last_sync_sent.max(self.last_heard));
        if waited >= RESEND_AFTER_MS {
            if self.phase != Phase::Open {
                self.last_sync_sent = now;
                self.send(&mut out, Frame::Hello(self.hello(doc, now)));
            } else if self.awaiting_answer() {
                // Our last message (or its answer) was lost. Start over on both sides: the
                // repeated hello makes the peer reset too and answer with its current state,
                // which refreshes what we believe it has (a plain resend may get no answer).
                self.reset_negotiation();
                self.last_sync_sent = now;
                self.send(&mut out, Frame::Hello(self.hello(doc, now)));
                self.generate(doc, book, &mut out, now);
            }
        }
        Ok(out)
    }

    /// Whether our last sync message still needs an answer. Automerge leaves `in_flight` set
    /// after the last message of every exchange; when the peer's last heads are what we last
    /// sent, the two are in sync and silence is the expected answer.
    fn awaiting_answer(&self) -> bool {
        self.state.in_flight && self.state.their_heads.as_ref() != Some(&self.state.last_sent_heads)
    }

    fn reset_negotiation(&mut self) {
        self.state.in_flight = false;
        self.state.sent_hashes.clear();
        self.state.have_responded = false;
        self.state.last_sent_heads.clear();
        // What the peer said before may be stale: wait for its fresh answer rather than send
        // changes it may already have.
        self.state.their_heads = None;
        self.state.their_have = None;
        self.state.their_need = None;
    }
}

/// How to return the document to its state before a message's changes, if they are refused.
enum Undo {
    Nothing,
    /// The document before: kept when it is replaced wholesale (a peer's whole document adopted).
    Keep(Box<Automerge>),
    /// The heads before: the document is rebuilt up to them (only ever on a refusal).
    Heads(Vec<ChangeHash>, automerge::ActorId),
}

impl Undo {
    fn restore(self, doc: &mut Automerge) -> Result<(), String> {
        match self {
            Undo::Nothing => Ok(()),
            Undo::Keep(old) => {
                *doc = *old;
                Ok(())
            }
            Undo::Heads(heads, actor) => {
                let old = doc.fork_at(&heads).map_err(|e| {
                    format!("could not return the document to its state before: {e}")
                })?;
                *doc = old.with_actor(actor);
                Ok(())
            }
        }
    }
}

/// Automerge's rule for the heads both sides share after applying the peer's changes: our new
/// heads that were not heads before, plus the shared heads that are still heads.
fn advance_heads(old: &[ChangeHash], new: &[ChangeHash], shared: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut out: Vec<ChangeHash> = new
        .iter()
        .filter(|h| !old.contains(h))
        .chain(shared.iter().filter(|h| new.contains(h)))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Sync(b) => 4 + 2 + b.len(),
        other => other.encode().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Message, Role, SchemaError, Workspace};
    use crate::trust::AcceptAll;

    fn pump(a: &mut SyncSession, da: &mut Automerge, b: &mut SyncSession, db: &mut Automerge) {
        let mut to_b: Vec<Frame> = a.start(da).into_iter().filter_map(send).collect();
        let mut to_a: Vec<Frame> = b.start(db).into_iter().filter_map(send).collect();
        for _ in 0..50 {
            if to_a.is_empty() && to_b.is_empty() {
                return;
            }
            for f in std::mem::take(&mut to_b) {
                to_a.extend(deliver(b, db, f));
            }
            for f in std::mem::take(&mut to_a) {
                to_b.extend(deliver(a, da, f));
            }
        }
        panic!("did not settle");
    }

    fn send(o: SessionOutput) -> Option<Frame> {
        match o {
            SessionOutput::Send(f) => Some(f),
            _ => None,
        }
    }

    fn deliver(s: &mut SyncSession, doc: &mut Automerge, f: Frame) -> Vec<Frame> {
        let len = f.encode().len();
        let mut frames = Vec::new();
        let book = SignatureBook::new();
        for o in s.on_frame(f, len, doc, &book, 0).unwrap() {
            match o {
                SessionOutput::Send(f) => frames.push(f),
                SessionOutput::Received(p) => {
                    for o in s
                        .apply(p, doc, &book, &AcceptAll, &|_| Standing::Paired, 0)
                        .unwrap()
                    {
                        match o {
                            SessionOutput::Send(f) => frames.push(f),
                            // Stored at once here: the hold on the answer lifts.
                            SessionOutput::DocChanged { .. } => {
                                s.set_hold(false);
                                frames.extend(
                                    s.on_local_change(doc, &book, 0)
                                        .into_iter()
                                        .filter_map(send),
                                );
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        frames
    }

    /// A desktop's document and an empty phone, each with its session with the other:
    /// `(phone, desktop doc, phone doc, desktop's session, phone's session)`.
    fn desktop_and_empty_phone() -> (DeviceId, Automerge, Automerge, SyncSession, SyncSession) {
        let desk = DeviceId::from_bytes([1; 32]);
        let phone = DeviceId::from_bytes([2; 32]);
        let dd = crate::testing::desktop_doc(desk);
        let pd = Automerge::new().with_actor(phone.actor_id());
        let doc_id = DocId::from_bytes([9; 16]);
        let sd = SyncSession::new(phone, Some(doc_id), None, 0);
        let sp = SyncSession::new(desk, None, None, 0);
        (phone, dd, pd, sd, sp)
    }

    #[test]
    fn empty_phone_receives_the_desktop_document() {
        let (phone, mut dd, mut pd, mut sd, mut sp) = desktop_and_empty_phone();
        pump(&mut sd, &mut dd, &mut sp, &mut pd);
        assert_eq!(dd.get_heads(), pd.get_heads());
        pd.transact::<_, _, SchemaError>(|tx| {
            Workspace::append_message(
                tx,
                &Message {
                    id: "m".into(),
                    author: phone.to_string(),
                    role: Role::User,
                    text: "hi".into(),
                    created_at: 1,
                    task_id: None,
                },
            )
        })
        .unwrap();
        pump(&mut sd, &mut dd, &mut sp, &mut pd);
        assert_eq!(Workspace::read(&dd).unwrap().messages.len(), 1);
    }

    /// A phone that has heard only the desktop's hello is not in sync, though both heads it
    /// knows are empty; it is once the desktop's document has arrived.
    #[test]
    fn an_empty_phone_is_not_in_sync_before_the_desktop_says_what_it_holds() {
        let (_, mut dd, mut pd, mut sd, mut sp) = desktop_and_empty_phone();
        let hello = sd
            .start(&dd)
            .into_iter()
            .filter_map(send)
            .find(|f| matches!(f, Frame::Hello(_)))
            .expect("a hello");
        sp.start(&pd);
        deliver(&mut sp, &mut pd, hello);
        assert!(!sp.in_sync(&pd), "in sync having heard only a hello");
        pump(&mut sd, &mut dd, &mut sp, &mut pd);
        assert_eq!(dd.get_heads(), pd.get_heads());
        assert!(sp.in_sync(&pd));
    }

    #[test]
    fn hellos_carry_wall_clocks_and_each_side_learns_the_offset() {
        let doc = Automerge::new();
        // The desktop's clock reads 1_000_000 at its now = 50; the phone's is 6 min fast.
        let mut desk = SyncSession::new(DeviceId::from_bytes([1; 32]), None, None, 50)
            .with_wall_clock(1_000_000);
        let mut phone = SyncSession::new(DeviceId::from_bytes([2; 32]), None, None, 7)
            .with_wall_clock(1_000_000 + 360_000);
        let hello_of = |out: Vec<SessionOutput>| {
            out.into_iter()
                .find_map(|o| match o {
                    SessionOutput::Send(f @ Frame::Hello(_)) => Some(f),
                    _ => None,
                })
                .expect("a hello")
        };
        let from_desk = hello_of(desk.start(&doc));
        let from_phone = hello_of(phone.start(&doc));
        let offset = |out: Vec<SessionOutput>| {
            out.into_iter().find_map(|o| match o {
                SessionOutput::PeerClockOffset(ms) => Some(ms),
                _ => None,
            })
        };
        // 20 ms later on each side's own clock.
        let got = phone
            .on_frame(from_desk, 10, &doc, &SignatureBook::new(), 27)
            .expect("hello");
        assert_eq!(offset(got), Some(-360_000 - 20));
        let got = desk
            .on_frame(from_phone, 10, &doc, &SignatureBook::new(), 70)
            .expect("hello");
        assert_eq!(offset(got), Some(360_000 - 20));
        // A session without a wall clock neither sends one nor reports an offset.
        let mut plain = SyncSession::new(DeviceId::from_bytes([3; 32]), None, None, 0);
        let Frame::Hello(h) = hello_of(plain.start(&doc)) else {
            unreachable!()
        };
        assert_eq!(h.wall_clock_ms, None);
        let from_desk = hello_of(desk.start(&doc));
        assert_eq!(
            offset(
                plain
                    .on_frame(from_desk, 10, &doc, &SignatureBook::new(), 0)
                    .expect("hello")
            ),
            None
        );
        // A clock more than a century off is not believed (and every later sum of a time and
        // the offset stays far from overflow).
        let Frame::Hello(mut h) = hello_of(phone.start(&doc)) else {
            unreachable!()
        };
        h.wall_clock_ms = Some(u64::MAX);
        let mut desk = SyncSession::new(DeviceId::from_bytes([1; 32]), None, None, 50)
            .with_wall_clock(1_000_000);
        desk.start(&doc);
        let got = desk
            .on_frame(Frame::Hello(h), 10, &doc, &SignatureBook::new(), 70)
            .expect("hello");
        assert_eq!(offset(got), None);
    }

    #[test]
    fn different_documents_are_refused() {
        let doc = Automerge::new();
        let mut s = SyncSession::new(
            DeviceId::from_bytes([1; 32]),
            Some(DocId::from_bytes([1; 16])),
            None,
            0,
        );
        let hello = Frame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            doc_id: Some(DocId::from_bytes([2; 16])),
            heads: vec![],
            wall_clock_ms: None,
        });
        assert!(matches!(
            s.on_frame(hello, 10, &doc, &SignatureBook::new(), 0),
            Err(SessionError::WrongDocument { .. })
        ));
        let mut s = SyncSession::new(DeviceId::from_bytes([1; 32]), None, None, 0);
        let hello = Frame::Hello(Hello {
            protocol: 9,
            doc_id: None,
            heads: vec![],
            wall_clock_ms: None,
        });
        let err = s.on_frame(hello, 10, &doc, &SignatureBook::new(), 0);
        assert!(matches!(
            err,
            Err(SessionError::ProtocolMismatch { theirs: 9 })
        ));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("update Deskhand on this device")
        );
        let mut s = SyncSession::new(DeviceId::from_bytes([1; 32]), None, None, 0);
        let old = Frame::Hello(Hello {
            protocol: 1,
            doc_id: None,
            heads: vec![],
            wall_clock_ms: None,
        });
        let err = s
            .on_frame(old, 10, &doc, &SignatureBook::new(), 0)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("update Deskhand on the other device"),
            "{err}"
        );
        let mut s = SyncSession::new(DeviceId::from_bytes([1; 32]), None, None, 0);
        assert!(matches!(
            s.on_frame(Frame::Sync(vec![0x42]), 10, &doc, &SignatureBook::new(), 0),
            Err(SessionError::Protocol(_))
        ));
    }

    /// A device in the signed-sync tests: its key, document and signature book.
    struct Device {
        key: crate::DeviceKey,
        doc: Automerge,
        book: SignatureBook,
    }

    impl Device {
        fn new(seed: u8, doc: Automerge, run: u8) -> Self {
            let key = crate::DeviceKey::from_secret_bytes([seed; 32]);
            let doc = doc.with_actor(key.device_id().session_actor([run; 8]));
            let mut book = SignatureBook::new();
            book.sign_own_history(&doc, &key);
            Self { key, doc, book }
        }
        fn id(&self) -> DeviceId {
            self.key.device_id()
        }
        fn say(&mut self, id: &str, role: Role) {
            let me = self.id();
            let r = self
                .doc
                .transact::<_, _, SchemaError>(|tx| {
                    Workspace::append_message(
                        tx,
                        &Message {
                            id: id.into(),
                            author: me.to_string(),
                            role,
                            text: id.into(),
                            created_at: 1,
                            task_id: None,
                        },
                    )
                })
                .unwrap();
            self.book.sign_local(&self.doc, &self.key, r.hash.unwrap());
        }
    }

    /// Syncs `desk` (vetting with `PhoneWriteRules`, phones paired per `paired`) and `phone`
    /// until quiet; `Err` with the desktop's refusal.
    fn signed_pump(
        desk: &mut Device,
        phone: &mut Device,
        paired: &[DeviceId],
    ) -> Result<(), SessionError> {
        let desk_id = desk.id();
        let standing = |d: &DeviceId| {
            if *d == desk_id {
                Standing::Local
            } else if paired.contains(d) {
                Standing::Paired
            } else {
                Standing::Stranger
            }
        };
        let mut sd = SyncSession::new(phone.id(), Some(DocId::from_bytes([9; 16])), None, 0);
        let mut sp = SyncSession::new(desk_id, None, None, 0);
        let mut to_d: Vec<Frame> = sp.start(&phone.doc).into_iter().filter_map(send).collect();
        let mut to_p: Vec<Frame> = sd.start(&desk.doc).into_iter().filter_map(send).collect();
        for _ in 0..50 {
            if to_d.is_empty() && to_p.is_empty() {
                return Ok(());
            }
            let frames = std::mem::take(&mut to_d);
            to_p.extend(signed_deliver(
                &mut sd,
                desk,
                frames,
                &crate::trust::PhoneWriteRules,
                &standing,
            )?);
            let frames = std::mem::take(&mut to_p);
            to_d.extend(signed_deliver(&mut sp, phone, frames, &AcceptAll, &|_| {
                Standing::Paired
            })?);
        }
        panic!("did not settle");
    }

    /// Feeds `frames` to `device`'s session `s` (vetting with `filter`), storing at once:
    /// returns the frames it answers with.
    fn signed_deliver(
        s: &mut SyncSession,
        device: &mut Device,
        frames: Vec<Frame>,
        filter: &dyn ChangeFilter,
        standing: &dyn Fn(&DeviceId) -> Standing,
    ) -> Result<Vec<Frame>, SessionError> {
        let mut out = Vec::new();
        for f in frames {
            for o in s.on_frame(f, 0, &device.doc, &device.book, 0)? {
                let outs = match o {
                    SessionOutput::Received(p) => {
                        s.apply(p, &mut device.doc, &device.book, filter, standing, 0)?
                    }
                    other => vec![other],
                };
                for o in outs {
                    match o {
                        SessionOutput::Send(f) => out.push(f),
                        SessionOutput::DocChanged { signatures, .. } => {
                            for (a, sig) in signatures {
                                device.book.insert(a, sig);
                            }
                            s.set_hold(false);
                            out.extend(
                                s.on_local_change(&device.doc, &device.book, 0)
                                    .into_iter()
                                    .filter_map(send),
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn a_restored_desktop_takes_back_its_own_changes_from_a_phone() {
        let desk_key = crate::DeviceKey::from_secret_bytes([1; 32]);
        let mut desk = Device::new(1, crate::testing::desktop_doc(desk_key.device_id()), 1);
        let mut phone = Device::new(2, Automerge::new(), 1);
        let paired = [phone.id()];
        signed_pump(&mut desk, &mut phone, &paired).unwrap();
        // The backup: the desktop's document and book as they are now.
        let backup = (desk.doc.save(), desk.book.clone());
        phone.say("m1", Role::User);
        signed_pump(&mut desk, &mut phone, &paired).unwrap();
        desk.say("r1", Role::Agent);
        phone.say("m2", Role::User);
        signed_pump(&mut desk, &mut phone, &paired).unwrap();
        assert_eq!(Workspace::read(&desk.doc).unwrap().messages.len(), 3);

        // Restored from the backup, the desktop starts under a fresh actor and writes at once.
        let mut restored = Device::new(1, Automerge::load(&backup.0).unwrap(), 2);
        restored.book = backup.1;
        restored.say("r-after-restore", Role::Agent);
        // The phone hands back m1, the desktop's own r1 and m2: all taken, in one message of
        // several authors.
        signed_pump(&mut restored, &mut phone, &paired).unwrap();
        let ids: Vec<String> = Workspace::read(&restored.doc)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.id.as_str().to_owned())
            .collect();
        for id in ["m1", "r1", "m2", "r-after-restore"] {
            assert!(ids.iter().any(|m| m == id), "{id} missing from {ids:?}");
        }
        assert_eq!(restored.doc.get_heads(), phone.doc.get_heads());
    }

    #[test]
    fn unsigned_and_unpaired_changes_are_refused() {
        let desk_key = crate::DeviceKey::from_secret_bytes([1; 32]);
        let mut desk = Device::new(1, crate::testing::desktop_doc(desk_key.device_id()), 1);
        let mut phone = Device::new(2, Automerge::new(), 1);
        let phone_id = phone.id();
        signed_pump(&mut desk, &mut phone, &[phone_id]).unwrap();
        // A change whose signature is missing (the book forgot it).
        let mut unsigned = Device::new(2, phone.doc.fork(), 3);
        unsigned.say("m", Role::User);
        unsigned.book.clear();
        let err = signed_pump(&mut desk, &mut unsigned, &[phone_id]).unwrap_err();
        assert!(err.to_string().contains("without its signature"), "{err}");
        assert_eq!(Workspace::read(&desk.doc).unwrap().messages.len(), 0);
        // A signed change of a device that is not paired (or was revoked).
        let mut stranger = Device::new(2, phone.doc.fork(), 4);
        stranger.say("m", Role::User);
        let err = signed_pump(&mut desk, &mut stranger, &[]).unwrap_err();
        assert!(err.to_string().contains("not paired"), "{err}");
        assert_eq!(Workspace::read(&desk.doc).unwrap().messages.len(), 0);
        // The same change from the paired phone is taken.
        signed_pump(&mut desk, &mut stranger, &[phone_id]).unwrap();
        assert_eq!(Workspace::read(&desk.doc).unwrap().messages.len(), 1);
    }
}
