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

/// A wall clock: where a device reads "now" (Unix milliseconds). The system clock in use; a
/// skewed one in tests, so a phone whose clock is wrong can be tried without changing the
/// machine's time ([`SkewedClock`]).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix milliseconds now, by this clock.
    fn now_unix_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> i64 {
        now_unix_ms()
    }
}

/// The system clock moved by a fixed number of milliseconds (positive: fast, negative: slow).
/// For tests and for the terminal phone's `DESKHAND_TEST_CLOCK_SKEW_MS`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkewedClock {
    /// How far ahead of the system clock this clock runs, in milliseconds.
    pub skew_ms: i64,
}

impl Clock for SkewedClock {
    fn now_unix_ms(&self) -> i64 {
        now_unix_ms().saturating_add(self.skew_ms)
    }
}
