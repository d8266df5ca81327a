//! The hub of one document: every sync session that syncs it, its storage bookkeeping, and the
//! durability rules between them, as a sans-IO state machine.
//!
//! A node holds one [`DocHub`] per loaded document; each connection that syncs the document adds
//! a session under a [`StreamId`] of the caller's choosing. Frames, local changes, store
//! outcomes and timer ticks go in; [`HubOutput`]s come out: frames to send on a stream, writes
//! to store (in order), sync states to persist. The caller owns the document, its signature
//! book, the sockets, the disk and the clock (milliseconds from any fixed origin).
//!
//! The rules (the node's module docs tell why):
//! - While any change of this device's own is not stored ([`Durability::may_relay`]), every
//!   session is held: nothing this device wrote is sent before it is on its disk.
//! - A peer's changes, once applied, are relayed to every other session at once (their authors'
//!   signatures prove them, so if this device loses them in a crash any peer can hand them
//!   back); the session they came from is held (it *owes an answer*) until the whole document
//!   is stored, so the sender hears "I have it" only once it is on the disk.

use std::collections::BTreeMap;

use automerge::Automerge;

use crate::authorship::{SignatureBook, Signed};
use crate::durability::{Durability, StoreWrite, Ticket};
use crate::session::{SessionError, SessionOutput, SessionStats, SyncSession};
use crate::trust::{ChangeFilter, Standing};
use crate::{DeviceId, DocId, Frame};

/// Names one session of a hub (one stream of one connection); chosen by the caller, unique
/// among the hub's sessions.
pub type StreamId = u64;

/// What the caller must do after feeding the hub, in order.
#[derive(Debug)]
pub enum HubOutput {
    /// Write this frame on the stream of session `stream`.
    Send {
        /// The session.
        stream: StreamId,
        /// The frame.
        frame: Frame,
    },
    /// Perform this write, after every write handed out before; report a tracked one's outcome
    /// with [`DocHub::stored`].
    Store(StoreWrite),
    /// Persist this encoded sync state for `peer` on this document.
    PersistSyncState {
        /// The peer.
        peer: DeviceId,
        /// Automerge's encoded `sync::State`.
        state: Vec<u8>,
    },
    /// A peer told the document's id (a phone that had none adopts it).
    AdoptDocId(DocId),
    /// A peer's wall clock minus ours, in milliseconds (see [`SessionOutput::PeerClockOffset`]).
    PeerClockOffset {
        /// The peer.
        peer: DeviceId,
        /// `peer − ours`, ms.
        offset_ms: i64,
    },
    /// Readers should look again: a peer's changes were applied, or own changes are now
    /// durable.
    Changed,
}

struct Slot {
    session: SyncSession,
    /// The peer's changes were applied and are not known durable yet: the answer waits.
    owes_ack: bool,
}

/// One document's sessions and storage state (see the module docs).
pub struct DocHub {
    durability: Durability,
    sessions: BTreeMap<StreamId, Slot>,
}

impl std::fmt::Debug for DocHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocHub")
            .field("durability", &self.durability)
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DocHub {
    /// A hub with no sessions over a document whose storage state is `durability`.
    pub fn new(durability: Durability) -> Self {
        Self {
            durability,
            sessions: BTreeMap::new(),
        }
    }

    /// The document's storage state.
    pub fn durability(&self) -> &Durability {
        &self.durability
    }

    /// The document's storage state, to leave a snapshot behind or forget what is stored.
    pub fn durability_mut(&mut self) -> &mut Durability {
        &mut self.durability
    }

    /// How many sessions sync this document.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn hold(&self, slot: &Slot) -> bool {
        slot.owes_ack || !self.durability.may_relay()
    }

    /// Adds `session` (new, not started) under `stream` and starts it: its hello.
    ///
    /// # Panics
    /// If `stream` is taken (a caller's bug).
    pub fn open(
        &mut self,
        stream: StreamId,
        mut session: SyncSession,
        doc: &Automerge,
    ) -> Vec<HubOutput> {
        session.set_hold(!self.durability.may_relay());
        let first = session.start(doc);
        let peer = session.peer();
        let old = self.sessions.insert(
            stream,
            Slot {
                session,
                owes_ack: false,
            },
        );
        assert!(
            old.is_none(),
            "stream {stream} opened twice on one document"
        );
        let mut out = Vec::new();
        convert(stream, peer, first, &mut out);
        out
    }

    /// Removes the session of `stream` (its connection ended); returns its counters.
    pub fn close(&mut self, stream: StreamId) -> Option<SessionStats> {
        self.sessions.remove(&stream).map(|s| s.session.stats())
    }

    /// The counters of `stream`'s session.
    pub fn stats(&self, stream: StreamId) -> Option<SessionStats> {
        self.sessions.get(&stream).map(|s| s.session.stats())
    }

    /// Whether `stream`'s peer and this device hold exactly `doc`'s changes, as far as its
    /// session knows ([`SyncSession::in_sync`]).
    pub fn in_sync(&self, stream: StreamId, doc: &Automerge) -> bool {
        self.sessions
            .get(&stream)
            .is_some_and(|s| s.session.in_sync(doc))
    }

    /// When [`Self::on_tick`] next has something to do for `stream` (`u64::MAX`: never): its
    /// session's timers, or saving the document again after a failed write
    /// ([`Durability::retry_due`]), which every session's tick may do.
    pub fn next_deadline(&self, stream: StreamId) -> u64 {
        self.sessions.get(&stream).map_or(u64::MAX, |s| {
            let session = s.session.next_deadline();
            self.durability
                .retry_due()
                .map_or(session, |retry| retry.min(session))
        })
    }

    /// Feeds one frame `stream`'s peer sent (`wire_len`: its encoded size). A sync message's
    /// changes are vetted by `filter` (with each author's `standing`), applied to `doc`, queued
    /// to the store and relayed to every other session; `stream`'s answer waits until they are
    /// stored. What to do is appended to `out`, also when an error ends the session (changes
    /// applied before it must still be stored and relayed).
    ///
    /// # Errors
    /// The session's: malformed or refused input ends that session (the caller sends
    /// [`SessionError::goodbye`] and closes it); the other sessions are untouched.
    #[allow(clippy::too_many_arguments)]
    pub fn on_frame(
        &mut self,
        stream: StreamId,
        frame: Frame,
        wire_len: usize,
        doc: &mut Automerge,
        book: &mut SignatureBook,
        filter: &dyn ChangeFilter,
        standing: &dyn Fn(&DeviceId) -> Standing,
        now: u64,
        out: &mut Vec<HubOutput>,
    ) -> Result<(), SessionError> {
        let Some(mut slot) = self.sessions.remove(&stream) else {
            return Ok(());
        };
        let mut changed = false;
        let result = (|| {
            slot.session.set_hold(self.hold(&slot));
            let outputs = slot.session.on_frame(frame, wire_len, doc, book, now)?;
            for o in outputs {
                let more = match o {
                    SessionOutput::Received(pending) => slot
                        .session
                        .apply(pending, doc, book, filter, standing, now)?,
                    other => vec![other],
                };
                for o in more {
                    if let SessionOutput::DocChanged {
                        before,
                        stored,
                        signatures,
                    } = o
                    {
                        // The session holds itself until the store confirms (`stored` lifts it).
                        slot.owes_ack = true;
                        changed = true;
                        let received = stored.map(|s| (before.as_slice(), s));
                        let writes = self
                            .durability
                            .queue(doc, book, false, received, signatures);
                        out.extend(writes.into_iter().map(HubOutput::Store));
                    } else {
                        convert(stream, slot.session.peer(), vec![o], out);
                    }
                }
            }
            Ok(())
        })();
        self.sessions.insert(stream, slot);
        if changed {
            out.push(HubOutput::Changed);
            self.relay(Some(stream), doc, book, now, out);
        }
        result
    }

    /// This device changed `doc` (its own change, signed by `signatures`): queues it to the
    /// store. Every session waits until it is stored ([`Self::stored`] then sends it).
    pub fn local_change(
        &mut self,
        doc: &Automerge,
        book: &mut SignatureBook,
        signatures: Vec<(automerge::ActorId, Signed)>,
    ) -> Vec<HubOutput> {
        self.durability
            .queue(doc, book, true, None, signatures)
            .into_iter()
            .map(HubOutput::Store)
            .collect()
    }

    /// The outcome of the write `ticket` names. When the whole document is durable, every
    /// session that owed its peer an answer sends it; when every own change is stored, every
    /// session sends what it held back.
    pub fn stored(
        &mut self,
        ticket: Ticket,
        ok: bool,
        doc: &Automerge,
        book: &SignatureBook,
        now: u64,
    ) -> Vec<HubOutput> {
        let settled = self.durability.stored(ticket, ok, now);
        let mut out = Vec::new();
        if settled.own_durable {
            out.push(HubOutput::Changed);
        }
        if settled.clean {
            for slot in self.sessions.values_mut() {
                slot.owes_ack = false;
            }
            self.relay(None, doc, book, now, &mut out);
        } else if settled.relay {
            self.relay(None, doc, book, now, &mut out);
        }
        out
    }

    /// Lets every session but `except` that owes no answer send what `doc` holds now.
    fn relay(
        &mut self,
        except: Option<StreamId>,
        doc: &Automerge,
        book: &SignatureBook,
        now: u64,
        out: &mut Vec<HubOutput>,
    ) {
        let may_relay = self.durability.may_relay();
        for (stream, slot) in &mut self.sessions {
            if Some(*stream) == except || slot.owes_ack {
                continue;
            }
            slot.session.set_hold(!may_relay);
            let o = slot.session.on_local_change(doc, book, now);
            convert(*stream, slot.session.peer(), o, out);
        }
    }

    /// Timers of `stream`'s session: pings, resends, giving up a silent peer; and a due retry
    /// of a failed write.
    ///
    /// # Errors
    /// [`SessionError::Timeout`]: the peer is gone; the caller closes the session.
    pub fn on_tick(
        &mut self,
        stream: StreamId,
        doc: &Automerge,
        book: &SignatureBook,
        now: u64,
    ) -> Result<Vec<HubOutput>, SessionError> {
        let mut out: Vec<HubOutput> = self
            .durability
            .retry(doc, book, now)
            .into_iter()
            .map(HubOutput::Store)
            .collect();
        let hold = self.sessions.get(&stream).map(|s| self.hold(s));
        if let (Some(slot), Some(hold)) = (self.sessions.get_mut(&stream), hold) {
            slot.session.set_hold(hold);
            let o = slot.session.on_tick(doc, book, now)?;
            convert(stream, slot.session.peer(), o, &mut out);
        }
        Ok(out)
    }

    /// Checks now that `stream`'s peer is still there ([`SyncSession::probe`]).
    pub fn probe(&mut self, stream: StreamId, now: u64) -> Vec<HubOutput> {
        let mut out = Vec::new();
        if let Some(slot) = self.sessions.get_mut(&stream) {
            let o = slot.session.probe(now);
            convert(stream, slot.session.peer(), o, &mut out);
        }
        out
    }
}

/// A session's outputs as the hub's (a `DocChanged` or `Received` never reaches here: only
/// [`DocHub::on_frame`] applies).
fn convert(
    stream: StreamId,
    peer: DeviceId,
    outputs: Vec<SessionOutput>,
    out: &mut Vec<HubOutput>,
) {
    for o in outputs {
        out.push(match o {
            SessionOutput::Send(frame) => HubOutput::Send { stream, frame },
            SessionOutput::PersistSyncState(state) => HubOutput::PersistSyncState { peer, state },
            SessionOutput::AdoptDocId(id) => HubOutput::AdoptDocId(id),
            SessionOutput::PeerClockOffset(offset_ms) => {
                HubOutput::PeerClockOffset { peer, offset_ms }
            }
            SessionOutput::DocChanged { .. } | SessionOutput::Received(_) => continue,
        });
    }
}
