//! Deskhand's sans-IO core.
//!
//! Everything here is pure logic over bytes and values: the schema-v1 workspace document and its
//! typed access, device identity, the wire frames, and the per-peer sync session state machine.
//! It knows no runtime, no network and no database; time is passed in by the caller.

#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod approval;
pub mod authorship;
pub mod bounds;
pub mod catalog;
pub mod conversation;
pub mod durability;
pub mod frame;
pub mod hub;
pub mod identity;
pub mod ids;
pub mod incoming;
pub mod pairing;
pub mod push;
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
pub use push::{PushSubscription, PushSubscriptionError};
pub use schema::{Message, Role, SchemaError, Task, TaskStatus, Workspace};
pub use session::{SessionError, SessionOutput, SyncSession};
pub use trust::{Author, ChangeFilter, PhoneWriteRules, Refusal, Standing, Touched};

/// ALPN of the sync protocol (version 4: a root document and one document per week, one stream
/// each, over one connection, and the desktop's catalog of weeks on a stream of its own; changes
/// travel with their authors' signatures, as since version 2).
pub const SYNC_ALPN: &[u8] = b"deskhand/sync/4";
/// ALPN of the first sync protocol, which sent unsigned changes. A desktop still accepts a
/// connection on it, only to tell the device to update.
pub const SYNC_ALPN_V1: &[u8] = b"deskhand/sync/1";
/// ALPN of the second sync protocol (signed changes, one document). A desktop still accepts a
/// connection on it, only to tell the device to update.
pub const SYNC_ALPN_V2: &[u8] = b"deskhand/sync/2";
/// ALPN of the third sync protocol (several documents, but the whole workspace in one of them).
/// A desktop still accepts a connection on it, only to tell the device to update.
pub const SYNC_ALPN_V3: &[u8] = b"deskhand/sync/3";
/// ALPN of the pairing protocol (version 1).
pub const PAIR_ALPN: &[u8] = b"deskhand/pair/1";
