//! Honest presence: connected now, last seen at a time, or never reached.

use serde::{Deserialize, Serialize};

/// What a device knows about a peer's reachability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Presence {
    /// A sync session is open.
    Connected {
        /// Since when (unix ms).
        since: i64,
    },
    /// Not connected; last session ended at this time (unix ms).
    LastSeen {
        /// Unix ms.
        at: i64,
    },
    /// Never connected.
    Never,
}

impl std::fmt::Display for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presence::Connected { .. } => f.write_str("connected"),
            Presence::LastSeen { at } => write!(f, "last seen at {at} (unix ms)"),
            Presence::Never => f.write_str("never reached"),
        }
    }
}

/// Wall-clock unix milliseconds.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
