//! The errors an app can act on, and the one place rich phone errors are mapped onto them.

use deskhand_sync::PhoneError;

/// What went wrong, as something the app can act on. `reason` is for people (show it or log it);
/// branch on the variant.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ApiError {
    /// Not paired: show the QR scanner.
    #[error("this phone is not paired with a desktop")]
    NotPaired,
    /// Paired, but the workspace has not arrived from the desktop yet: sync while it is reachable.
    #[error("the workspace has not been received from the desktop yet")]
    NotSynced,
    /// Already paired with another desktop: forget it first.
    #[error("{reason}")]
    AlreadyPaired {
        /// Which desktop.
        reason: String,
    },
    /// The desktop refused this phone (a bad, used or expired code; revocation): pair again.
    #[error("{reason}")]
    Refused {
        /// What the desktop said.
        reason: String,
    },
    /// The desktop could not be reached. What was written is kept and sent later.
    #[error("{reason}")]
    Unreachable {
        /// Why.
        reason: String,
    },
    /// The request makes no sense (empty text, malformed code or hash, a finished task, an
    /// approval whose hash does not match what it shows, a blob that failed verification).
    #[error("{reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// No such task, approval or blob.
    #[error("{reason}")]
    NotFound {
        /// What was looked for.
        reason: String,
    },
    /// The approval was already decided (by this phone, or resolved by the desktop).
    #[error("{reason}")]
    AlreadyDecided {
        /// By whom and how.
        reason: String,
    },
    /// The approval expired; the desktop treats it as denied.
    #[error("{reason}")]
    Expired {
        /// Since when.
        reason: String,
    },
    /// Syncing is stopped; call `start()`.
    #[error("syncing is stopped")]
    Stopped,
    /// The key provider failed, or the key is not this data directory's device.
    #[error("{reason}")]
    Key {
        /// Why.
        reason: String,
    },
    /// Local storage failed (disk full, unreadable database).
    #[error("{reason}")]
    Storage {
        /// Why.
        reason: String,
    },
    /// The phone was shut down.
    #[error("the phone is shut down")]
    Closed,
    /// Forgetting the desktop would drop writes it does not have yet: sync first, pair again with
    /// the same desktop, or `forget_desktop_dropping_unsent`.
    #[error("{reason}")]
    Unsent {
        /// What would be dropped, and the ways out.
        reason: String,
    },
    /// A bug or an unexpected failure (also: a foreign callback that threw).
    #[error("{reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
}

impl From<PhoneError> for ApiError {
    fn from(e: PhoneError) -> Self {
        let reason = e.to_string();
        match e {
            PhoneError::NotPaired => Self::NotPaired,
            PhoneError::NotSynced => Self::NotSynced,
            PhoneError::AlreadyPaired { .. } => Self::AlreadyPaired { reason },
            PhoneError::Refused { .. } => Self::Refused { reason },
            PhoneError::Unreachable { .. } => Self::Unreachable { reason },
            PhoneError::Invalid { .. }
            | PhoneError::Mismatch { .. }
            | PhoneError::Corrupt { .. } => Self::Invalid { reason },
            PhoneError::NotFound { .. } => Self::NotFound { reason },
            PhoneError::AlreadyDecided { .. } => Self::AlreadyDecided { reason },
            PhoneError::Expired { .. } => Self::Expired { reason },
            PhoneError::Stopped => Self::Stopped,
            PhoneError::Key { .. } => Self::Key { reason },
            PhoneError::Storage { .. } => Self::Storage { reason },
            PhoneError::Closed => Self::Closed,
            PhoneError::Unsent { .. } => Self::Unsent { reason },
            _ => Self::Internal { reason },
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ApiError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Internal {
            reason: format!("a callback of the app failed: {}", e.reason),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal {
            reason: format!("the call did not complete: {e}"),
        }
    }
}
