//! uniffi facade over Deskhand's phone API.
//!
//! Empty until the phone-API issue: it will hold only wrappers and conversions over
//! `deskhand-sync` (no logic), exported with uniffi proc-macros.

#![deny(missing_docs)]

pub use deskhand_sync as sync;
