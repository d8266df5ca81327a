//! Proof of authorship: every device signs the changes it writes, so a change can be taken from
//! any connection, not only from its author's.
//!
//! A device signs, with its device key (ed25519), the hash of each change it commits:
//!
//! ```text
//! signed message := "deskhand/change/1" ‖ change hash (32 bytes)
//! ```
//!
//! One signature vouches for more than its change. A change's hash covers its dependencies'
//! hashes, so it fixes the whole history below it; and an actor's changes form one chain (each
//! descends from the actor's previous one: [`crate::incoming`] checks it and Automerge refuses a
//! second change under a sequence number). The signature of an actor's latest change therefore
//! proves that its device wrote every earlier change of that actor as well. A device keeps, per
//! actor, only the signature of the latest change it holds ([`SignatureBook`]), sends with each
//! sync message the signatures of the actors whose latest change it carries, and a receiver
//! checks, per actor, the signature of that actor's newest change in the message ([`prove`]).

use std::collections::HashMap;

use automerge::{ActorId, Automerge, Change, ChangeHash};

use crate::{DeviceId, DeviceKey, KeyError};

/// Domain-separation prefix of every change signature (never shared with approval signatures).
pub const CHANGE_SIGNATURE_CONTEXT: &[u8] = b"deskhand/change/1";

/// A device's signature over one change hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChangeSignature {
    /// The change signed.
    pub hash: ChangeHash,
    /// ed25519 signature over [`CHANGE_SIGNATURE_CONTEXT`] ‖ `hash`.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for ChangeSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChangeSignature({})", self.hash)
    }
}

fn signed_bytes(hash: &ChangeHash) -> [u8; CHANGE_SIGNATURE_CONTEXT.len() + 32] {
    let mut m = [0u8; CHANGE_SIGNATURE_CONTEXT.len() + 32];
    m[..CHANGE_SIGNATURE_CONTEXT.len()].copy_from_slice(CHANGE_SIGNATURE_CONTEXT);
    m[CHANGE_SIGNATURE_CONTEXT.len()..].copy_from_slice(hash.as_ref());
    m
}

impl ChangeSignature {
    /// Signs `hash` with `key`.
    pub fn sign(key: &DeviceKey, hash: ChangeHash) -> Self {
        Self {
            hash,
            signature: key.sign(&signed_bytes(&hash)),
        }
    }

    /// Checks that `device` made this signature.
    pub fn verify(&self, device: &DeviceId) -> Result<(), KeyError> {
        crate::identity::verify(device, &signed_bytes(&self.hash), &self.signature)
    }
}

/// The latest signed change of one actor: its sequence number and signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The change's sequence number within its actor.
    pub seq: u64,
    /// The signature of its device.
    pub signature: ChangeSignature,
}

/// Length of [`Signed::to_bytes`].
pub const SIGNED_RECORD_LEN: usize = 8 + 32 + 64;

impl Signed {
    /// Storage form: `seq:u64be ‖ hash:32 ‖ signature:64`.
    pub fn to_bytes(&self) -> [u8; SIGNED_RECORD_LEN] {
        let mut b = [0u8; SIGNED_RECORD_LEN];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..40].copy_from_slice(self.signature.hash.as_ref());
        b[40..].copy_from_slice(&self.signature.signature);
        b
    }

    /// Reads [`Self::to_bytes`]; `None` when the length is wrong.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != SIGNED_RECORD_LEN {
            return None;
        }
        Some(Self {
            seq: u64::from_be_bytes(b[..8].try_into().ok()?),
            signature: ChangeSignature {
                hash: ChangeHash(b[8..40].try_into().ok()?),
                signature: b[40..].try_into().ok()?,
            },
        })
    }
}

/// Per actor, the signature of the latest change of that actor this device holds.
#[derive(Clone, Debug, Default)]
pub struct SignatureBook {
    latest: HashMap<ActorId, Signed>,
}

impl SignatureBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `signed` for `actor` unless the book already holds a later change of it.
    /// Returns whether the book changed.
    pub fn insert(&mut self, actor: ActorId, signed: Signed) -> bool {
        match self.latest.get(&actor) {
            Some(old) if old.seq >= signed.seq => false,
            _ => {
                self.latest.insert(actor, signed);
                true
            }
        }
    }

    /// The latest signed change of `actor`.
    pub fn get(&self, actor: &ActorId) -> Option<&Signed> {
        self.latest.get(actor)
    }

    /// Every actor and its latest signed change.
    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, &Signed)> {
        self.latest.iter()
    }

    /// Number of actors with a signature.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether the book holds no signature.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Forgets everything (a phone forgetting its desktop).
    pub fn clear(&mut self) {
        self.latest.clear();
    }

    /// Signs the change `hash` that this device just committed under `doc`'s actor, and records
    /// it. Returns the record to store, or `None` when `hash` is not a change of `doc`.
    pub fn sign_local(
        &mut self,
        doc: &Automerge,
        key: &DeviceKey,
        hash: ChangeHash,
    ) -> Option<(ActorId, Signed)> {
        let meta = doc.get_change_meta_by_hash(&hash)?;
        let actor = meta.actor.into_owned();
        let signed = Signed {
            seq: meta.seq,
            signature: ChangeSignature::sign(key, hash),
        };
        self.insert(actor.clone(), signed);
        Some((actor, signed))
    }

    /// Signs, for each of `key`'s device's actors in `doc`, its latest change when the book has
    /// no signature of it (documents written before changes were signed, or a commit whose
    /// signature was lost). Walks every change once: for a start, not for every write. Returns
    /// the records to store.
    pub fn sign_own_history(&mut self, doc: &Automerge, key: &DeviceKey) -> Vec<(ActorId, Signed)> {
        let me = key.device_id();
        let mut latest: HashMap<ActorId, (u64, ChangeHash)> = HashMap::new();
        for m in doc.get_changes_meta(&[]) {
            if !me.owns_actor(&m.actor) {
                continue;
            }
            let e = latest.entry(m.actor.into_owned()).or_insert((0, m.hash));
            if m.seq >= e.0 {
                *e = (m.seq, m.hash);
            }
        }
        let mut out = Vec::new();
        for (actor, (seq, hash)) in latest {
            if self.latest.get(&actor).is_some_and(|s| s.seq >= seq) {
                continue;
            }
            let signed = Signed {
                seq,
                signature: ChangeSignature::sign(key, hash),
            };
            self.latest.insert(actor.clone(), signed);
            out.push((actor, signed));
        }
        out
    }

    /// The signatures to send with a message carrying the changes for which `carried` is true:
    /// those of the actors whose latest signed change is among them.
    pub fn for_message(&self, carried: impl Fn(&ChangeHash) -> bool) -> Vec<ChangeSignature> {
        self.latest
            .values()
            .filter(|s| carried(&s.signature.hash))
            .map(|s| s.signature)
            .collect()
    }
}

/// Who wrote an actor's new changes, as far as the signatures received with them show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorship {
    /// The signature of the actor's newest change in the message verifies against its device.
    Proven(DeviceId),
    /// No valid signature came for the actor's newest change; the actor names this device (or
    /// no device at all, when `None`: an actor id of the wrong length).
    Claimed(Option<DeviceId>),
}

impl Authorship {
    /// The device the actor names, proven or not.
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            Authorship::Proven(d) => Some(*d),
            Authorship::Claimed(d) => *d,
        }
    }
}

/// What [`prove`] found.
#[derive(Clone, Debug, Default)]
pub struct Proofs {
    /// Per actor of the new changes, who wrote them.
    pub authors: HashMap<ActorId, Authorship>,
    /// The verified signatures to record in the receiver's book.
    pub verified: Vec<(ActorId, Signed)>,
}

impl Proofs {
    /// Who wrote `change` (an actor missing from the message counts as unproven).
    pub fn author_of(&self, change: &Change) -> Authorship {
        self.authors
            .get(change.actor_id())
            .copied()
            .unwrap_or_else(|| Authorship::Claimed(DeviceId::from_actor(change.actor_id())))
    }
}

/// Checks the signatures that came with `new` (a message's new changes): per actor, the
/// signature of its change with the highest sequence number must verify against the device the
/// actor names. Signatures over other hashes are ignored.
pub fn prove(new: &[Change], signatures: &[ChangeSignature]) -> Proofs {
    let mut top: HashMap<&ActorId, &Change> = HashMap::new();
    for c in new {
        let e = top.entry(c.actor_id()).or_insert(c);
        if c.seq() > e.seq() {
            *e = c;
        }
    }
    let by_hash: HashMap<ChangeHash, &ChangeSignature> =
        signatures.iter().map(|s| (s.hash, s)).collect();
    let mut proofs = Proofs::default();
    for (actor, change) in top {
        let device = DeviceId::from_actor(actor);
        let proven = match (device, by_hash.get(&change.hash())) {
            (Some(d), Some(sig)) if sig.verify(&d).is_ok() => {
                proofs.verified.push((
                    actor.clone(),
                    Signed {
                        seq: change.seq(),
                        signature: **sig,
                    },
                ));
                Authorship::Proven(d)
            }
            _ => Authorship::Claimed(device),
        };
        proofs.authors.insert(actor.clone(), proven);
    }
    proofs
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn write(doc: &mut Automerge, n: i64) -> ChangeHash {
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "n", n).unwrap();
        tx.commit().0.unwrap()
    }

    #[test]
    fn the_newest_change_of_each_actor_proves_the_message() {
        let key = DeviceKey::from_secret_bytes([7; 32]);
        let me = key.device_id();
        let mut doc = Automerge::new().with_actor(me.session_actor([1; 8]));
        let mut book = SignatureBook::new();
        let mut last = None;
        for n in 0..3 {
            let h = write(&mut doc, n);
            last = book.sign_local(&doc, &key, h);
        }
        let (actor, signed) = last.unwrap();
        assert_eq!(signed.seq, 3);
        let changes = doc.get_changes(&[]);
        let sigs = book.for_message(|h| changes.iter().any(|c| c.hash() == *h));
        assert_eq!(sigs.len(), 1);
        let proofs = prove(&changes, &sigs);
        assert_eq!(proofs.authors[&actor], Authorship::Proven(me));
        assert_eq!(proofs.verified, vec![(actor.clone(), signed)]);

        // Without the newest change's signature (only an older one), nothing is proven.
        let older = ChangeSignature::sign(&key, changes[0].hash());
        let proofs = prove(&changes, &[older]);
        assert_eq!(proofs.authors[&actor], Authorship::Claimed(Some(me)));
        // Another device's signature does not prove it either.
        let other = DeviceKey::from_secret_bytes([8; 32]);
        let forged = ChangeSignature::sign(&other, changes[2].hash());
        assert_eq!(
            prove(&changes, &[forged]).authors[&actor],
            Authorship::Claimed(Some(me))
        );
    }

    #[test]
    fn own_history_is_signed_once_and_records_round_trip() {
        let key = DeviceKey::from_secret_bytes([7; 32]);
        let me = key.device_id();
        let mut doc = Automerge::new().with_actor(me.actor_id());
        write(&mut doc, 1);
        let h2 = write(&mut doc, 2);
        let mut doc = doc.fork().with_actor(me.session_actor([2; 8]));
        let h3 = write(&mut doc, 3);
        let mut book = SignatureBook::new();
        let mut signed = book.sign_own_history(&doc, &key);
        signed.sort_by_key(|(_, s)| s.seq);
        assert_eq!(signed.len(), 2);
        assert_eq!(signed[0].1.signature.hash, h3);
        assert_eq!(signed[1].1.signature.hash, h2);
        assert!(book.sign_own_history(&doc, &key).is_empty());
        let rec = signed[1].1;
        assert_eq!(Signed::from_bytes(&rec.to_bytes()), Some(rec));
        assert_eq!(Signed::from_bytes(&[0; 3]), None);
        // An older record never replaces a newer one.
        assert!(!book.insert(signed[1].0.clone(), Signed { seq: 1, ..rec }));
    }
}
