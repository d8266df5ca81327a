//! Deskhand's sans-IO core.
//!
//! Everything here is pure logic over bytes and values: the schema-v1 workspace document and its
//! typed access, device identity, the wire frames, and the per-peer sync session state machine.
//! It knows no runtime, no network and no database; time is passed in by the caller.

#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod approval;
pub mod bounds;
pub mod frame;
pub mod identity;
pub mod ids;
pub mod incoming;
pub mod pairing;
pub mod schema;
pub mod session;
pub mod terminal;
#[cfg(test)]
mod testing;
pub mod trust;

pub use approval::{Approval, Decision, Resolution, Risk, Verdict};
pub use frame::{Frame, FrameDecoder, FrameError, Hello};
pub use identity::{DeviceKey, KeyError};
pub use ids::{DeviceId, DocId, IdError, MessageId, TaskId};
pub use pairing::{PairingPayload, PairingToken, PayloadError};
pub use schema::{Message, Role, SchemaError, Task, TaskStatus, Workspace};
pub use session::{SessionError, SessionOutput, SyncSession};
pub use trust::{ChangeFilter, PhoneWriteRules, Refusal, Touched};

/// ALPN of the sync protocol (version 1).
pub const SYNC_ALPN: &[u8] = b"deskhand/sync/1";
/// ALPN of the pairing protocol (version 1).
pub const PAIR_ALPN: &[u8] = b"deskhand/pair/1";
