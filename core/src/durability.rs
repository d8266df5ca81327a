//! The storage bookkeeping of one document: a sans-IO state machine.
//!
//! Every change of the document (this device's own, or a peer's as received) becomes one store
//! write, queued in the order of the changes; the caller performs the writes in that order and
//! reports each one's outcome with its [`Ticket`]. From that the machine answers the two
//! questions the durability rules ask ([`crate::hub`] applies them to the sessions):
//! - [`Durability::may_relay`]: every change of this device's own is stored, so a session may
//!   send (a change this device wrote is never sent before it is on its disk);
//! - [`Durability::is_dirty`]: some change, own or received, is not stored yet, so a peer whose
//!   changes were applied is not answered ("I have it") before they are on the disk.
//!
//! A failed write (disk full, I/O error) makes the document *undurable*: part of it exists only
//! in memory. The next write then saves the whole document from scratch (and the whole
//! signature book), and only a write queued after the latest failure, once stored, makes it
//! durable again.

use automerge::{ActorId, Automerge, ChangeHash};

use crate::authorship::{SignatureBook, Signed};
use crate::incoming::Storable;

/// Compact the stored document (one snapshot replaces the chunks) after this many incremental
/// chunks.
pub const COMPACT_EVERY_CHUNKS: usize = 4096;

/// Names one tracked write: hand it back to [`Durability::stored`] with its outcome, exactly
/// once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The write holds changes of this device's own.
    local: bool,
    /// The failure generation it was queued in: a write queued after the latest failure saves
    /// everything.
    generation: u64,
}

/// A write to perform, in the order given.
#[derive(Debug)]
pub enum StoreWrite {
    /// New changes: append them as an incremental chunk, or (`snapshot`) replace the stored
    /// document by `bytes`; store `signatures` (actor, its latest change's signature) in the
    /// same transaction. Report the outcome with `ticket`.
    Chunk {
        /// For [`Durability::stored`].
        ticket: Ticket,
        /// An incremental chunk (Automerge `save_after` / received changes) or a whole document.
        bytes: Vec<u8>,
        /// `bytes` is a whole document that replaces what is stored.
        snapshot: bool,
        /// Signatures to store with it (may be empty).
        signatures: Vec<(ActorId, Signed)>,
    },
    /// Only signatures changed (the changes themselves are stored already). Untracked.
    Signatures(Vec<(ActorId, Signed)>),
    /// A snapshot (Automerge `save`) that covers every write queued before it. Untracked.
    Compact(Vec<u8>),
}

/// What a stored (or failed) write changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// The whole document is durable now: peers owed an answer may be answered.
    pub clean: bool,
    /// Every change of this device's own is stored now (this write was one of them): every
    /// session may send again.
    pub relay: bool,
    /// This write held own changes and is stored: readers who wait for durable own changes
    /// (the executor) may look.
    pub own_durable: bool,
}

/// The storage state of one document (see the module docs).
#[derive(Debug, Clone)]
pub struct Durability {
    /// The heads the queued writes cover: the next chunk holds what came after them. Empty
    /// after a failure (the next chunk saves everything) and for a document never stored.
    persisted_heads: Vec<ChangeHash>,
    /// Tracked writes queued and not reported yet.
    unflushed: usize,
    /// Of `unflushed`, those holding own changes.
    unflushed_local: usize,
    undurable: bool,
    /// Bumped at each failure.
    generation: u64,
    chunks_since_snapshot: usize,
    /// A write carrying signatures failed: the next chunk stores the whole book again.
    book_unsaved: bool,
    /// Tracked writes queued since the latest failure and not reported yet: one of them, once
    /// stored, makes the document durable again.
    healing: usize,
    /// When to save the whole document again after a failure, if no change does it first.
    retry_at: Option<u64>,
    /// The wait before the next retry (ms): doubles with each failure, back to the first after
    /// a success.
    backoff_ms: u64,
}

/// The first wait before a failed write is retried (ms).
pub const RETRY_FIRST_MS: u64 = 250;
/// The longest wait between retries of a failing disk (ms).
pub const RETRY_MAX_MS: u64 = 30_000;

impl Durability {
    /// The state of a document loaded with `heads` from `chunks` stored chunks (`None`: nothing
    /// is stored yet; its first chunk saves it whole, genesis included).
    pub fn new(heads: Option<Vec<ChangeHash>>, chunks: usize) -> Self {
        Self {
            persisted_heads: heads.unwrap_or_default(),
            unflushed: 0,
            unflushed_local: 0,
            undurable: false,
            generation: 0,
            chunks_since_snapshot: chunks,
            book_unsaved: false,
            healing: 0,
            retry_at: None,
            backoff_ms: RETRY_FIRST_MS,
        }
    }

    /// Some change (own or received) is not stored yet, or a write failed and nothing has
    /// saved it since.
    pub fn is_dirty(&self) -> bool {
        self.unflushed > 0 || self.undurable
    }

    /// Every own change is stored, and no write failed since: sessions may send.
    pub fn may_relay(&self) -> bool {
        self.unflushed_local == 0 && !self.undurable
    }

    /// A write failed and nothing has saved the document since.
    pub fn undurable(&self) -> bool {
        self.undurable
    }

    /// Some signature is known to be missing from the disk (a write carrying it failed).
    pub fn book_unsaved(&self) -> bool {
        self.book_unsaved
    }

    /// Turns what changed in `doc` since the last queued write into writes, in order.
    ///
    /// `local`: the changes are this device's own (sessions wait for them to be stored) rather
    /// than a peer's. `received`: a peer's changes as they arrived, applied from heads
    /// `before`, stored as they are when they hold everything new (a whole document the peer
    /// sent becomes the snapshot), which spares saving them again. `signatures`: the change
    /// signatures the change brings (own: its signature; received: the verified ones of its
    /// authors); recorded in `book`, and those that are now their actor's latest are stored
    /// with the chunk.
    ///
    /// Returns no tracked write when the heads did not move (nothing to wait for).
    pub fn queue(
        &mut self,
        doc: &Automerge,
        book: &mut SignatureBook,
        local: bool,
        received: Option<(&[ChangeHash], Storable)>,
        signatures: Vec<(ActorId, Signed)>,
    ) -> Vec<StoreWrite> {
        let mut changed = Vec::new();
        for (actor, signed) in signatures {
            book.insert(actor.clone(), signed);
            if book.get(&actor) == Some(&signed) {
                changed.push((actor, signed));
            }
        }
        self.write(doc, book, local, received, changed)
    }

    fn write(
        &mut self,
        doc: &Automerge,
        book: &SignatureBook,
        local: bool,
        received: Option<(&[ChangeHash], Storable)>,
        changed: Vec<(ActorId, Signed)>,
    ) -> Vec<StoreWrite> {
        let heads = doc.get_heads();
        if heads == self.persisted_heads {
            return if changed.is_empty() {
                Vec::new()
            } else {
                vec![StoreWrite::Signatures(changed)]
            };
        }
        let (bytes, snapshot) = match received {
            // The peer's whole document, holding everything this one has: the new snapshot.
            Some((_, Storable::Document(bytes))) => {
                self.chunks_since_snapshot = 0;
                (bytes, true)
            }
            Some((before, Storable::Changes(bytes)))
                if before == self.persisted_heads.as_slice() =>
            {
                self.chunks_since_snapshot += 1;
                (bytes, false)
            }
            _ => {
                self.chunks_since_snapshot += 1;
                (doc.save_after(&self.persisted_heads), false)
            }
        };
        let signatures = if self.book_unsaved {
            self.book_unsaved = false;
            book.iter().map(|(a, s)| (a.clone(), *s)).collect()
        } else {
            changed
        };
        self.persisted_heads = heads;
        self.unflushed += 1;
        self.healing += 1;
        self.retry_at = None;
        if local {
            self.unflushed_local += 1;
        }
        let mut writes = vec![StoreWrite::Chunk {
            ticket: Ticket {
                local,
                generation: self.generation,
            },
            bytes,
            snapshot,
            signatures,
        }];
        if self.chunks_since_snapshot >= COMPACT_EVERY_CHUNKS {
            self.chunks_since_snapshot = 0;
            writes.push(StoreWrite::Compact(doc.save()));
        }
        writes
    }

    /// The outcome of the write `ticket` names, reported at `now` (ms, the caller's clock). A
    /// failure makes the document undurable until a write queued after it is stored; that
    /// write saves everything again: the next change's, or a retry ([`Self::retry_due`]).
    pub fn stored(&mut self, ticket: Ticket, ok: bool, now: u64) -> Settled {
        self.unflushed = self.unflushed.saturating_sub(1);
        if ticket.local {
            self.unflushed_local = self.unflushed_local.saturating_sub(1);
        }
        let current = ticket.generation == self.generation;
        if current {
            self.healing = self.healing.saturating_sub(1);
        }
        if ok {
            if current {
                self.undurable = false;
                self.backoff_ms = RETRY_FIRST_MS;
            }
        } else {
            self.undurable = true;
            self.generation += 1;
            self.healing = 0;
            self.persisted_heads.clear();
            self.book_unsaved = true;
            self.retry_at = Some(now + self.backoff_ms);
            self.backoff_ms = (self.backoff_ms * 2).min(RETRY_MAX_MS);
        }
        Settled {
            clean: !self.is_dirty(),
            relay: ticket.local && self.may_relay(),
            own_durable: ticket.local && ok,
        }
    }

    /// When the document, undurable after a failed write that nothing queued since can heal,
    /// should be saved again ([`Self::retry`]); `None` when no retry is needed.
    pub fn retry_due(&self) -> Option<u64> {
        self.retry_at
            .filter(|_| self.undurable && self.healing == 0)
    }

    /// Saves the whole document again when [`Self::retry_due`] has come (`now`, ms), so that a
    /// disk that failed once does not leave the document undurable (and every session held)
    /// until the next change. No write when it is not due.
    pub fn retry(&mut self, doc: &Automerge, book: &SignatureBook, now: u64) -> Vec<StoreWrite> {
        match self.retry_due() {
            Some(t) if t <= now => {
                self.retry_at = None;
                self.write(doc, book, false, None, Vec::new())
            }
            _ => Vec::new(),
        }
    }

    /// A snapshot to leave behind (at shutdown) when chunks were appended since the last one:
    /// `doc.save()`, counted as the new snapshot.
    pub fn snapshot_due(&mut self, doc: &Automerge) -> Option<Vec<u8>> {
        (self.chunks_since_snapshot > 0).then(|| {
            self.chunks_since_snapshot = 0;
            doc.save()
        })
    }

    /// What is stored was replaced by the caller, outside the queue (a migration wrote a
    /// snapshot, a phone that forgets its desktop erased it): it now holds the document at
    /// `heads` as one snapshot (empty `heads`: nothing; the next chunk saves it whole).
    pub fn replaced(&mut self, heads: Vec<ChangeHash>) {
        self.persisted_heads = heads;
        self.chunks_since_snapshot = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn edit(doc: &mut Automerge, n: i64) {
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "n", n).unwrap();
        tx.commit();
    }

    fn ticket(writes: &[StoreWrite]) -> Ticket {
        match writes.first() {
            Some(StoreWrite::Chunk { ticket, .. }) => *ticket,
            other => panic!("expected a chunk, got {other:?}"),
        }
    }

    #[test]
    fn own_changes_hold_sending_until_stored_and_received_ones_only_the_answer() {
        let mut doc = Automerge::new();
        let mut book = SignatureBook::new();
        let mut d = Durability::new(None, 0);
        edit(&mut doc, 1);
        let own = ticket(&d.queue(&doc, &mut book, true, None, Vec::new()));
        assert!(!d.may_relay() && d.is_dirty());
        edit(&mut doc, 2);
        let theirs = ticket(&d.queue(&doc, &mut book, false, None, Vec::new()));
        let s = d.stored(own, true, 0);
        assert_eq!(
            s,
            Settled {
                clean: false,
                relay: true,
                own_durable: true
            }
        );
        assert!(d.may_relay() && d.is_dirty());
        let s = d.stored(theirs, true, 0);
        assert!(s.clean && !s.relay && !s.own_durable);
        // Nothing new: nothing to write.
        assert!(d.queue(&doc, &mut book, true, None, Vec::new()).is_empty());
    }

    #[test]
    fn a_failed_write_is_healed_only_by_a_write_queued_after_it_which_saves_everything() {
        let mut doc = Automerge::new();
        let mut book = SignatureBook::new();
        let mut d = Durability::new(None, 0);
        edit(&mut doc, 1);
        let first = ticket(&d.queue(&doc, &mut book, true, None, Vec::new()));
        edit(&mut doc, 2);
        let second = ticket(&d.queue(&doc, &mut book, true, None, Vec::new()));
        let s = d.stored(first, false, 0);
        assert!(!s.clean && !s.relay && d.undurable() && d.book_unsaved());
        // Queued before the failure: stored, but the first chunk is still missing.
        let s = d.stored(second, true, 0);
        assert!(!s.clean && !s.relay && d.undurable());
        edit(&mut doc, 3);
        let writes = d.queue(&doc, &mut book, true, None, Vec::new());
        let StoreWrite::Chunk { ticket, bytes, .. } = &writes[0] else {
            panic!("a chunk")
        };
        // The whole document, from scratch.
        let reloaded = Automerge::load(bytes).unwrap();
        assert_eq!(reloaded.get_heads(), doc.get_heads());
        let s = d.stored(*ticket, true, 0);
        assert!(s.clean && s.relay && !d.undurable());
    }

    #[test]
    fn a_failed_write_is_retried_whole_with_a_growing_wait_when_no_change_heals_it() {
        let mut doc = Automerge::new();
        let mut book = SignatureBook::new();
        let mut d = Durability::new(None, 0);
        edit(&mut doc, 1);
        let first = ticket(&d.queue(&doc, &mut book, true, None, Vec::new()));
        d.stored(first, false, 1_000);
        assert_eq!(d.retry_due(), Some(1_000 + RETRY_FIRST_MS));
        assert!(d.retry(&doc, &book, 1_000).is_empty(), "not due yet");
        let again = d.retry(&doc, &book, 1_000 + RETRY_FIRST_MS);
        let StoreWrite::Chunk {
            ticket: t, bytes, ..
        } = &again[0]
        else {
            panic!("a chunk")
        };
        assert_eq!(Automerge::load(bytes).unwrap().get_heads(), doc.get_heads());
        assert_eq!(d.retry_due(), None, "a write that can heal it is in flight");
        d.stored(*t, false, 2_000);
        assert_eq!(
            d.retry_due(),
            Some(2_000 + 2 * RETRY_FIRST_MS),
            "the wait doubles"
        );
        // A change queued meanwhile heals it instead.
        edit(&mut doc, 2);
        let t = ticket(&d.queue(&doc, &mut book, true, None, Vec::new()));
        assert_eq!(d.retry_due(), None);
        assert!(d.stored(t, true, 2_100).clean);
        assert_eq!(d.retry_due(), None);
    }

    #[test]
    fn compacts_after_the_chunk_limit_and_leaves_a_snapshot_at_shutdown() {
        let mut doc = Automerge::new();
        let mut book = SignatureBook::new();
        let mut d = Durability::new(Some(Vec::new()), COMPACT_EVERY_CHUNKS - 1);
        edit(&mut doc, 1);
        let writes = d.queue(&doc, &mut book, true, None, Vec::new());
        assert!(matches!(
            writes.as_slice(),
            [StoreWrite::Chunk { .. }, StoreWrite::Compact(_)]
        ));
        assert!(d.snapshot_due(&doc).is_none());
        edit(&mut doc, 2);
        d.queue(&doc, &mut book, true, None, Vec::new());
        assert!(d.snapshot_due(&doc).is_some());
        assert!(d.snapshot_due(&doc).is_none());
    }
}
