//! The executor's crash points (`DESKHAND_CRASH_AT`, see `deskhand_sync::fault`). Only a build
//! with the cargo feature `fault-injection` has them; otherwise these functions do nothing and
//! the variable is not read.

/// Passes the crash point `point`: SIGKILL on its armed pass.
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point(point: &str) {
    deskhand_sync::fault::crash_point(point);
}

/// Whether `point` is armed (the step before it is then made durable first).
#[cfg(feature = "fault-injection")]
pub(crate) fn wants(point: &str) -> bool {
    deskhand_sync::fault::wants(point)
}

/// Passes `point` `after` from now, on a thread of its own: a crash in the middle of what the
/// caller starts next (a tool call).
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point_after(point: &'static str, after: std::time::Duration) {
    if wants(point) {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            crash_point(point);
        });
    }
}

/// Refuses a malformed `DESKHAND_CRASH_AT` and says loudly that a crash point is armed.
#[cfg(feature = "fault-injection")]
pub fn check() -> anyhow::Result<()> {
    if let Some(plan) = deskhand_sync::fault::armed()? {
        eprintln!(
            "deskhand: FAULT INJECTION ARMED: this process kills itself at {}:{}",
            plan.point, plan.nth
        );
    }
    Ok(())
}

/// Passes the crash point `point` (nothing in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_point: &str) {}

/// Whether `point` is armed (never in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn wants(_point: &str) -> bool {
    false
}

/// Passes `point` later (nothing in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point_after(_point: &'static str, _after: std::time::Duration) {}

/// Nothing to check in this build.
#[cfg(not(feature = "fault-injection"))]
pub fn check() -> anyhow::Result<()> {
    Ok(())
}
