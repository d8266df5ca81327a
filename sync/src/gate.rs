//! The narrow handles iroh's protocol handlers get instead of the node: a handler sees only what
//! its protocol needs, so the handlers (`protocol.rs`, `pairing.rs`, `blobs.rs`) do not import
//! the node, and what each may do is written in one place. The node implements them
//! (`node/handles.rs`).

use deskhand_core::DeviceId;

/// Who may use a protocol: deny by default. Every handler checks a connecting device here
/// before it reads a byte of its request.
pub(crate) trait PeerGate: Send + Sync + 'static {
    /// Registered (paired) and not revoked.
    fn is_allowed(&self, peer: &DeviceId) -> bool;
    /// Registered and revoked (told so, unlike an unknown device).
    fn is_revoked(&self, peer: &DeviceId) -> bool;
    /// Appends `event` about `peer` to the audit log (`detail`: a reason, never a secret).
    fn audit(&self, event: &str, peer: &DeviceId, detail: &str);
}
