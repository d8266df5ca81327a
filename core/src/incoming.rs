//! The changes of one received sync message, read once: the filter vets them, the session applies
//! them, and the node stores them in the form they arrived in.
//!
//! Vetting the changes and then handing the message to Automerge's `receive_sync_message` decodes
//! it twice, and when the peer sends its whole document (Automerge does when more than a third of
//! it is new to the receiver) that document is rebuilt twice: once to vet its changes, once to
//! apply them. Here it is rebuilt once; if it holds everything this document has, it simply
//! becomes the document.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};

use crate::bounds::{BoundsError, Budget, CHUNK_DOCUMENT, CHUNK_MAGIC, Limits};

/// Why a received message's changes were not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncomingError {
    /// A declared size is over a limit, or the chunk framing is broken (checked before decoding).
    #[error(transparent)]
    Bounds(#[from] BoundsError),
    /// Automerge could not decode a change or document.
    #[error("undecodable changes: {0}")]
    Undecodable(String),
    /// A change decodes but its header contradicts its history (sequence number, first operation
    /// counter, dependencies): applying it would corrupt the document.
    #[error("an inconsistent change: {0}")]
    Inconsistent(String),
}

/// What a received sync message brings, read against the receiving document.
#[derive(Debug)]
pub struct Incoming {
    /// New changes whose dependencies are all known, checked, in an order Automerge can apply.
    new: Vec<Change>,
    /// New changes whose dependencies have not arrived yet (not checked, not applied).
    waiting: Vec<Change>,
    /// The peer's whole document, when it holds every change this document has applied:
    /// adopting it is the same as applying `new`.
    superset: Option<(Automerge, Vec<u8>)>,
}

/// The received changes in a form the node can store in place of saving them again.
#[derive(Debug)]
pub enum Storable {
    /// The new changes, concatenated: an incremental chunk.
    Changes(Vec<u8>),
    /// A whole document holding everything the receiver has: a new snapshot.
    Document(Vec<u8>),
}

impl Incoming {
    /// Reads the change chunks of one sync message, together with `parked` (changes of earlier
    /// messages that waited for their dependencies).
    ///
    /// Every chunk is first checked against `limits` without decoding it ([`crate::bounds`]).
    /// Then each new change whose dependencies are known gets its header checked against its
    /// history: its sequence number follows its author's previous change, which it must descend
    /// from; its first operation counter is above every operation it depends on; it carries no
    /// data Deskhand does not write (an Automerge author, extra bytes). Automerge trusts these
    /// fields, and a change that breaks them makes it panic or leaves a document that no longer
    /// loads. Changes whose dependencies are missing wait (see [`Self::take_waiting`]).
    pub fn read<'a>(
        doc: &Automerge,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        limits: Limits,
        parked: Vec<Change>,
    ) -> Result<Self, IncomingError> {
        let mut budget = Budget::new(limits);
        let mut pieces = Vec::new();
        for chunk in chunks {
            // A v2 sync message concatenates storage chunks; split them first.
            for piece in split_storage_chunks(chunk)? {
                budget.check_chunk(piece.bytes)?;
                pieces.push(piece);
            }
        }
        let only_a_document = matches!(pieces.as_slice(), [only] if only.kind == CHUNK_DOCUMENT);
        let mut received = Vec::new();
        for piece in pieces {
            if piece.kind == CHUNK_DOCUMENT {
                let other = guarded(|| Automerge::load(piece.bytes))
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| IncomingError::Undecodable(format!("a document: {e}")))?;
                let heads = doc.get_heads();
                if only_a_document && parked.is_empty() && heads.iter().all(|h| knows(&other, h)) {
                    let new = other.get_changes(&heads);
                    let mut seen = Batch::default();
                    for c in &new {
                        check_header(&other, &seen, c)?;
                        seen.add(c);
                    }
                    return Ok(Self {
                        new,
                        waiting: Vec::new(),
                        superset: Some((other, piece.bytes.to_vec())),
                    });
                }
                received.extend(
                    other
                        .get_changes(&[])
                        .into_iter()
                        .filter(|c| !knows(doc, &c.hash())),
                );
            } else {
                let bytes = piece.bytes.to_vec();
                let c = guarded(|| Change::from_bytes(bytes))
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| IncomingError::Undecodable(format!("a change: {e}")))?;
                if !knows(doc, &c.hash()) {
                    received.push(c);
                }
            }
        }
        let (new, waiting) = order(doc, parked.into_iter().chain(received))?;
        Ok(Self {
            new,
            waiting,
            superset: None,
        })
    }

    /// The changes the document does not have yet and can take now, in causal order.
    pub fn new_changes(&self) -> &[Change] {
        &self.new
    }

    /// The new changes, taken out (to apply them in several steps with [`apply_changes`]).
    pub fn into_new_changes(self) -> Vec<Change> {
        self.new
    }

    /// The changes that wait for dependencies which have not arrived; the caller keeps them
    /// (bounded) and passes them to the next [`Self::read`].
    pub fn take_waiting(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.waiting)
    }

    /// Applies the changes to `doc`. Returns them in storable form, if there were any (the
    /// received document when it was adopted, else the new changes), and the document it
    /// replaced when it adopted one.
    pub fn apply(self, doc: &mut Automerge) -> Result<Applied, IncomingError> {
        if self.new.is_empty() {
            return Ok(Applied::default());
        }
        if let Some((other, bytes)) = self.superset {
            let actor = doc.get_actor().clone();
            let replaced = std::mem::replace(doc, other.with_actor(actor));
            return Ok(Applied {
                stored: Some(Storable::Document(bytes)),
                replaced: Some(replaced),
            });
        }
        let mut bytes = Vec::with_capacity(self.new.iter().map(|c| c.raw_bytes().len()).sum());
        for c in &self.new {
            bytes.extend_from_slice(c.raw_bytes());
        }
        apply_changes(doc, self.new)?;
        Ok(Applied {
            stored: Some(Storable::Changes(bytes)),
            replaced: None,
        })
    }
}

/// Applies checked changes (some of [`Incoming::new_changes`], in order) to `doc`, with a panic
/// in Automerge turned into [`IncomingError::Inconsistent`].
pub fn apply_changes(doc: &mut Automerge, changes: Vec<Change>) -> Result<(), IncomingError> {
    guarded(|| doc.apply_changes(changes))
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(IncomingError::Inconsistent)
}

/// What [`Incoming::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The changes in a form to store, if any were applied.
    pub stored: Option<Storable>,
    /// The document that an adopted whole document replaced.
    pub replaced: Option<Automerge>,
}

/// Runs Automerge on a peer's bytes with a last line of defence: a panic becomes an error. The
/// checks above are what keep Automerge from panicking; this keeps a missed case from taking the
/// whole node down.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("Automerge failed on it ({what})")
    })
}

/// What the header checks need to know of a change.
#[derive(Clone, Debug)]
struct Meta {
    actor: ActorId,
    seq: u64,
    max_op: u64,
    deps: Vec<ChangeHash>,
}

/// The changes of this message accepted so far (their dependents may follow in the same message).
#[derive(Default)]
struct Batch(HashMap<ChangeHash, Meta>);

impl Batch {
    fn add(&mut self, c: &Change) {
        self.0.insert(
            c.hash(),
            Meta {
                actor: c.actor_id().clone(),
                seq: c.seq(),
                max_op: c.max_op(),
                deps: c.deps().to_vec(),
            },
        );
    }

    fn meta(&self, doc: &Automerge, h: &ChangeHash) -> Option<Meta> {
        if let Some(m) = self.0.get(h) {
            return Some(m.clone());
        }
        doc.get_change_meta_by_hash(h).map(|m| Meta {
            actor: m.actor.into_owned(),
            seq: m.seq,
            max_op: m.max_op,
            deps: m.deps,
        })
    }
}

/// Sorts `changes` into those that can be applied now (dependencies known, header checked, in
/// causal order) and those that wait for a missing dependency.
fn order(
    doc: &Automerge,
    changes: impl Iterator<Item = Change>,
) -> Result<(Vec<Change>, Vec<Change>), IncomingError> {
    let mut slots: Vec<Option<Change>> = Vec::new();
    let mut seen = HashSet::new();
    for c in changes {
        if seen.insert(c.hash()) {
            slots.push(Some(c));
        }
    }
    let mut unsatisfied = vec![0usize; slots.len()];
    let mut waiting_on: HashMap<ChangeHash, Vec<usize>> = HashMap::new();
    let mut ready = VecDeque::new();
    for (i, c) in slots.iter().enumerate() {
        let Some(c) = c else { continue };
        let mut deps: Vec<&ChangeHash> = c.deps().iter().collect();
        deps.sort();
        deps.dedup();
        if deps.len() != c.deps().len() {
            return Err(IncomingError::Inconsistent(format!(
                "change {} lists a dependency twice",
                c.hash()
            )));
        }
        for d in deps {
            if !knows(doc, d) {
                unsatisfied[i] += 1;
                waiting_on.entry(*d).or_default().push(i);
            }
        }
        if unsatisfied[i] == 0 {
            ready.push_back(i);
        }
    }
    let mut batch = Batch::default();
    let mut out = Vec::new();
    while let Some(i) = ready.pop_front() {
        let Some(c) = slots[i].take() else { continue };
        check_header(doc, &batch, &c)?;
        batch.add(&c);
        if let Some(dependents) = waiting_on.remove(&c.hash()) {
            for j in dependents {
                unsatisfied[j] -= 1;
                if unsatisfied[j] == 0 {
                    ready.push_back(j);
                }
            }
        }
        out.push(c);
    }
    Ok((out, slots.into_iter().flatten().collect()))
}

/// The highest operation counter a change may reach. Automerge keeps counters in 32 bits
/// internally and panics when a local write would go past them; with changes starting right after
/// their dependencies (checked below) counters only grow by operations actually written.
const MAX_OP_COUNTER: u64 = (u32::MAX / 2) as u64;

/// Checks one change's header against its history (its dependencies are known).
fn check_header(doc: &Automerge, batch: &Batch, c: &Change) -> Result<(), IncomingError> {
    let bad = |why: String| {
        Err(IncomingError::Inconsistent(format!(
            "change {}: {why}",
            c.hash()
        )))
    };
    if c.author().is_some() || !c.extra_bytes().is_empty() {
        return bad("it carries data after its operations, which Deskhand never writes".into());
    }
    let start = c.start_op().get();
    if c.seq() == 0 || c.max_op() > MAX_OP_COUNTER || c.max_op() + 1 < start {
        return bad(format!(
            "its sequence number {} or operation counters {start}..{} are out of range",
            c.seq(),
            c.max_op()
        ));
    }
    // Automerge starts a change right after the last operation of the document it was written
    // on, which is the last operation of its dependencies. A change that starts further on would
    // push every later operation's counter up (towards the 32-bit counters Automerge keeps
    // internally: its next local write panics once they run out), so it is refused.
    let mut last_dep_op = 0;
    for d in c.deps() {
        let Some(m) = batch.meta(doc, d) else {
            return bad(format!("its dependency {d} is unknown"));
        };
        if start <= m.max_op {
            return bad(format!(
                "its first operation counter {start} is not above its dependency's last ({})",
                m.max_op
            ));
        }
        last_dep_op = last_dep_op.max(m.max_op);
    }
    if start != last_dep_op + 1 {
        return bad(format!(
            "its first operation counter {start} does not follow its dependencies' last ({last_dep_op})"
        ));
    }
    if c.seq() > 1 {
        // The author's previous change must be in this one's history: the latest change of the
        // author there (the one with the highest counter, since counters grow along history).
        match latest_of(doc, batch, c.deps(), c.actor_id()) {
            Some(prev) if prev.seq + 1 == c.seq() => {}
            Some(prev) => {
                return bad(format!(
                    "its sequence number {} does not follow its author's previous change ({})",
                    c.seq(),
                    prev.seq
                ));
            }
            None => {
                return bad(format!(
                    "it is number {} of its author, but descends from none of the author's changes",
                    c.seq()
                ));
            }
        }
    }
    // A first change (seq 1) of an author the document already knows is refused by Automerge
    // itself (a duplicate sequence number), without harm.
    Ok(())
}

/// The change of `actor` with the highest operation counter in the history of `from`. Walks
/// back from the newest changes (a max-heap on the last counter) and stops at the first of
/// `actor`'s changes, so it visits only what was written after that change.
fn latest_of(doc: &Automerge, batch: &Batch, from: &[ChangeHash], actor: &ActorId) -> Option<Meta> {
    let mut heap: BinaryHeap<(u64, ChangeHash)> = BinaryHeap::new();
    let mut metas: HashMap<ChangeHash, Meta> = HashMap::new();
    let mut todo: Vec<ChangeHash> = from.to_vec();
    loop {
        for h in todo.drain(..) {
            if !metas.contains_key(&h)
                && let Some(m) = batch.meta(doc, &h)
            {
                heap.push((m.max_op, h));
                metas.insert(h, m);
            }
        }
        let (_, h) = heap.pop()?;
        let m = metas.get(&h)?;
        if &m.actor == actor {
            return Some(m.clone());
        }
        todo.extend(m.deps.iter().copied());
    }
}

/// Whether `doc` has applied or queued the change `hash` (cheap: no change is rebuilt).
fn knows(doc: &Automerge, hash: &ChangeHash) -> bool {
    !doc.get_missing_deps(std::slice::from_ref(hash))
        .contains(hash)
}

struct Piece<'a> {
    kind: u8,
    bytes: &'a [u8],
}

/// The hashes of the changes one chunk of a sync message carries (a whole document: all of
/// its changes), decoded without a document to apply them to: for traces and for checks of
/// what was sent (the deterministic simulations).
///
/// # Errors
/// [`IncomingError::Undecodable`] when a piece is neither a change nor a document.
pub fn carried_changes(chunk: &[u8]) -> Result<Vec<ChangeHash>, IncomingError> {
    let mut hashes = Vec::new();
    for piece in split_storage_chunks(chunk)? {
        if piece.kind == CHUNK_DOCUMENT {
            let doc = guarded(|| Automerge::load(piece.bytes))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| IncomingError::Undecodable(format!("a document: {e}")))?;
            hashes.extend(doc.get_changes(&[]).iter().map(|c| c.hash()));
        } else {
            let bytes = piece.bytes.to_vec();
            let c = guarded(|| Change::from_bytes(bytes))
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| IncomingError::Undecodable(format!("a change: {e}")))?;
            hashes.push(c.hash());
        }
    }
    Ok(hashes)
}

/// Splits concatenated Automerge storage chunks (magic, checksum, type, LEB128 length, body).
fn split_storage_chunks(mut data: &[u8]) -> Result<Vec<Piece<'_>>, BoundsError> {
    let malformed = BoundsError::Malformed;
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 9 || data[..4] != CHUNK_MAGIC {
            return Err(malformed("not an Automerge chunk"));
        }
        let kind = data[8];
        let (mut len, mut shift, mut i) = (0u64, 0u32, 9usize);
        loop {
            let b = *data.get(i).ok_or(malformed("truncated chunk header"))?;
            if shift > 56 {
                return Err(malformed("bad chunk length"));
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| i.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or(malformed("truncated chunk"))?;
        out.push(Piece {
            kind,
            bytes: &data[..end],
        });
        data = &data[end..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;
    use crate::schema::{Message, Role, SchemaError, Workspace};

    fn desk_and_phone() -> (Automerge, Automerge) {
        let d = crate::testing::desktop_doc(DeviceId::from_bytes([1; 32]));
        let p = d
            .fork()
            .with_actor(DeviceId::from_bytes([2; 32]).actor_id());
        (d, p)
    }

    fn write(doc: &mut Automerge, text: &str) {
        let m = Message {
            id: text.into(),
            author: "x".into(),
            role: Role::User,
            text: text.into(),
            created_at: 1,
            task_id: None,
        };
        doc.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &m))
            .unwrap();
    }

    #[test]
    fn a_whole_document_holding_everything_is_adopted_and_becomes_the_snapshot() {
        let (mut d, mut p) = desk_and_phone();
        let actor = d.get_actor().clone();
        for i in 0..10 {
            write(&mut p, &format!("p{i}"));
        }
        let bytes = p.save();
        let incoming =
            Incoming::read(&d, [bytes.as_slice()], Limits::FROM_PHONE, Vec::new()).unwrap();
        assert_eq!(incoming.new_changes().len(), 10);
        let Some(Storable::Document(stored)) = incoming.apply(&mut d).unwrap().stored else {
            panic!("a superset is stored as the snapshot");
        };
        assert_eq!(stored, bytes);
        assert_eq!(d.get_heads(), p.get_heads());
        assert_eq!(d.get_actor(), &actor, "the receiver keeps its own actor");
        assert_eq!(Automerge::load(&stored).unwrap().get_heads(), d.get_heads());
        write(&mut d, "after");
        assert_eq!(d.get_last_local_change().unwrap().actor_id(), &actor);
    }

    #[test]
    fn a_document_lacking_some_of_ours_applies_only_what_is_new() {
        let (mut d, mut p) = desk_and_phone();
        write(&mut d, "desk only");
        for i in 0..10 {
            write(&mut p, &format!("p{i}"));
        }
        let before_bytes = d.save();
        let incoming =
            Incoming::read(&d, [p.save().as_slice()], Limits::FROM_PHONE, Vec::new()).unwrap();
        assert_eq!(incoming.new_changes().len(), 10);
        let Some(Storable::Changes(chunk)) = incoming.apply(&mut d).unwrap().stored else {
            panic!("the new changes are stored as a chunk");
        };
        assert_eq!(Workspace::message_count(&d), 11);
        // What was stored before plus the chunk is the whole document.
        let mut replay = Automerge::load(&before_bytes).unwrap();
        replay.load_incremental(&chunk).unwrap();
        assert_eq!(replay.get_heads(), d.get_heads());
    }

    #[test]
    fn changes_already_known_are_not_new_and_nothing_new_stores_nothing() {
        let (mut d, mut p) = desk_and_phone();
        write(&mut p, "one");
        let first = p.get_changes(&[]);
        d.apply_changes(first.clone()).unwrap();
        write(&mut p, "two");
        let all: Vec<Vec<u8>> = p
            .get_changes(&[])
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let incoming = Incoming::read(
            &d,
            all.iter().map(|c| c.as_slice()),
            Limits::FROM_PHONE,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(incoming.new_changes().len(), 1);
        let known: Vec<Vec<u8>> = first.iter().map(|c| c.raw_bytes().to_vec()).collect();
        let nothing = Incoming::read(
            &d,
            known.iter().map(|c| c.as_slice()),
            Limits::FROM_PHONE,
            Vec::new(),
        )
        .unwrap();
        assert!(nothing.new_changes().is_empty());
        assert!(nothing.apply(&mut d).unwrap().stored.is_none());
    }

    #[test]
    fn bytes_that_are_not_changes_are_an_error_naming_why() {
        let (d, _) = desk_and_phone();
        let e = Incoming::read(
            &d,
            [b"definitely not automerge".as_slice()],
            Limits::FROM_PHONE,
            Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an Automerge chunk"), "{e}");
        let mut truncated = desk_and_phone().1.save();
        truncated.truncate(truncated.len() / 2);
        let e =
            Incoming::read(&d, [truncated.as_slice()], Limits::FROM_PHONE, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
