//! The hook through which a node vets a peer's changes before they enter its document.

use automerge::Automerge;

use crate::DeviceId;

/// Why incoming changes were refused. The session that received them is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused changes from {peer}: {reason}")]
pub struct Refusal {
    /// The connected peer that sent them.
    pub peer: DeviceId,
    /// What was wrong, for the log and the device list.
    pub reason: String,
}

/// Decides whether a peer's new changes may enter the document.
///
/// `chunks` are the encoded change chunks of one sync message, as received; the document is the
/// receiver's state before they are applied.
pub trait ChangeFilter: Send + Sync {
    /// `Ok(())` to accept the whole message, `Err` to refuse it (nothing is applied).
    fn check(&self, peer: &DeviceId, doc: &Automerge, chunks: &[&[u8]]) -> Result<(), Refusal>;
}

/// Accepts everything: phones trust what their desktop relays.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl ChangeFilter for AcceptAll {
    fn check(&self, _: &DeviceId, _: &Automerge, _: &[&[u8]]) -> Result<(), Refusal> {
        Ok(())
    }
}
