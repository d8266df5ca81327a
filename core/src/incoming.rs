//! The changes of one received sync message, read once: the filter vets them, the session applies
//! them, and the node stores them in the form they arrived in.
//!
//! Vetting the changes and then handing the message to Automerge's `receive_sync_message` decodes
//! it twice, and when the peer sends its whole document (Automerge does when more than a third of
//! it is new to the receiver) that document is rebuilt twice: once to vet its changes, once to
//! apply them. Here it is rebuilt once; if it holds everything this document has, it simply
//! becomes the document.

use automerge::{Automerge, Change, ChangeHash, ReadDoc};

/// Automerge storage chunk types (the byte after magic and checksum).
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// What a received sync message brings, read against the receiving document.
#[derive(Debug)]
pub struct Incoming {
    /// The changes the document has neither applied nor queued, in the order sent (causal).
    new: Vec<Change>,
    /// The peer's whole document, when it holds every change this document has applied (and this
    /// one has nothing queued): adopting it is the same as applying `new`.
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
    /// Reads the change chunks of one sync message. Errors say what could not be decoded.
    pub fn read<'a>(
        doc: &Automerge,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, String> {
        let mut pieces = Vec::new();
        for chunk in chunks {
            // A v2 sync message concatenates storage chunks; split them first.
            pieces.extend(split_storage_chunks(chunk)?);
        }
        let only_a_document = matches!(pieces.as_slice(), [only] if only.kind == CHUNK_DOCUMENT);
        let mut new = Vec::new();
        for piece in pieces {
            if piece.kind == CHUNK_DOCUMENT {
                let other = Automerge::load(piece.bytes)
                    .map_err(|e| format!("undecodable document: {e}"))?;
                let heads = doc.get_heads();
                let nothing_queued = doc.get_missing_deps(&[]).is_empty();
                if only_a_document && nothing_queued && heads.iter().all(|h| knows(&other, h)) {
                    return Ok(Self {
                        new: other.get_changes(&heads),
                        superset: Some((other, piece.bytes.to_vec())),
                    });
                }
                new.extend(
                    other
                        .get_changes(&[])
                        .into_iter()
                        .filter(|c| !knows(doc, &c.hash())),
                );
            } else {
                let c = Change::from_bytes(piece.bytes.to_vec())
                    .map_err(|e| format!("undecodable change: {e}"))?;
                if !knows(doc, &c.hash()) {
                    new.push(c);
                }
            }
        }
        Ok(Self {
            new,
            superset: None,
        })
    }

    /// The changes the document does not have yet, in causal order.
    pub fn new_changes(&self) -> &[Change] {
        &self.new
    }

    /// Applies the changes to `doc` (changes whose dependencies are missing wait in Automerge's
    /// queue, as with `receive_sync_message`). Returns them in storable form, if there were any:
    /// the received document when it was adopted, else the new changes.
    pub fn apply(self, doc: &mut Automerge) -> Result<Option<Storable>, automerge::AutomergeError> {
        if self.new.is_empty() {
            return Ok(None);
        }
        if let Some((other, bytes)) = self.superset {
            let actor = doc.get_actor().clone();
            *doc = other.with_actor(actor);
            return Ok(Some(Storable::Document(bytes)));
        }
        let mut bytes = Vec::with_capacity(self.new.iter().map(|c| c.raw_bytes().len()).sum());
        for c in &self.new {
            bytes.extend_from_slice(c.raw_bytes());
        }
        doc.apply_changes(self.new)?;
        Ok(Some(Storable::Changes(bytes)))
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

/// Splits concatenated Automerge storage chunks (magic, checksum, type, LEB128 length, body).
fn split_storage_chunks(mut data: &[u8]) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 9 || data[..4] != CHUNK_MAGIC {
            return Err("undecodable changes: not an Automerge chunk".into());
        }
        let kind = data[8];
        let (mut len, mut shift, mut i) = (0u64, 0u32, 9usize);
        loop {
            let b = *data
                .get(i)
                .ok_or("undecodable changes: truncated chunk header")?;
            if shift > 56 {
                return Err("undecodable changes: bad chunk length".into());
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
            .ok_or("undecodable changes: truncated chunk")?;
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
        let incoming = Incoming::read(&d, [bytes.as_slice()]).unwrap();
        assert_eq!(incoming.new_changes().len(), 10);
        let Some(Storable::Document(stored)) = incoming.apply(&mut d).unwrap() else {
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
        let incoming = Incoming::read(&d, [p.save().as_slice()]).unwrap();
        assert_eq!(incoming.new_changes().len(), 10);
        let Some(Storable::Changes(chunk)) = incoming.apply(&mut d).unwrap() else {
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
        let incoming = Incoming::read(&d, all.iter().map(|c| c.as_slice())).unwrap();
        assert_eq!(incoming.new_changes().len(), 1);
        let known: Vec<Vec<u8>> = first.iter().map(|c| c.raw_bytes().to_vec()).collect();
        let nothing = Incoming::read(&d, known.iter().map(|c| c.as_slice())).unwrap();
        assert!(nothing.new_changes().is_empty());
        assert!(nothing.apply(&mut d).unwrap().is_none());
    }

    #[test]
    fn bytes_that_are_not_changes_are_an_error_naming_why() {
        let (d, _) = desk_and_phone();
        let e = Incoming::read(&d, [b"definitely not automerge".as_slice()]).unwrap_err();
        assert!(e.contains("not an Automerge chunk"), "{e}");
        let mut truncated = desk_and_phone().1.save();
        truncated.truncate(truncated.len() / 2);
        let e = Incoming::read(&d, [truncated.as_slice()]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
