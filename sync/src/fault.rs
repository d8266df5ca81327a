//! Fault injection for the crash tests (cargo feature `fault-injection`, off by default; the
//! test build turns it on so that the e2e tests' `deskhand` binary has it). A build without the
//! feature has none of this.
//!
//! Two kinds of fault:
//! - **Crash points**: `DESKHAND_CRASH_AT=<point>[:<nth>]` kills the process with SIGKILL (no
//!   destructors, no flush) the `nth` time (default 1) execution passes `point`. The executor's
//!   points are named in [`TASK_POINTS`]; the store's are [`STORE_WRITE`] (the `nth` write call
//!   of redb's storage backend writes only the first half of its bytes, then the process dies:
//!   a torn write) and [`STORE_SYNC`] (the process dies instead of the `nth` sync call).
//! - **A failing disk** ([`FaultyBackend`] with a [`DiskFaults`] plan), for in-process tests of
//!   the store: fail a write or a sync, tear a write, or answer "no space left" (ENOSPC).

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The environment variable that arms a crash point.
pub const CRASH_ENV: &str = "DESKHAND_CRASH_AT";
/// Crash point of the store: a torn `nth` write of redb's storage backend, then death.
pub const STORE_WRITE: &str = "store-write";
/// Crash point of the store: death instead of the `nth` sync of redb's storage backend.
pub const STORE_SYNC: &str = "store-sync";
/// The executor's crash points, in the order a task passes them: after its claim is durable,
/// after a progress batch is durable, while an approval request is pending (durable), after the
/// decision is durable, in the middle of a tool call (its side effect started), after the result
/// is durable.
pub const TASK_POINTS: [&str; 6] = [
    "claim", "progress", "approval", "decision", "tool", "result",
];

/// A malformed `DESKHAND_CRASH_AT`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{CRASH_ENV}={value:?} is not a crash point: expected <point>[:<nth>] with point one of claim, progress, approval, decision, tool, result, store-write, store-sync and nth a number from 1"
)]
pub struct CrashSpecError {
    /// The value given.
    pub value: String,
}

/// An armed crash point: die the `nth` time `point` is passed.
#[derive(Debug)]
pub struct CrashPlan {
    /// Which point.
    pub point: String,
    /// Which pass (1 = the first).
    pub nth: u64,
    passed: AtomicU64,
}

impl CrashPlan {
    /// Parses `<point>[:<nth>]`.
    pub fn parse(value: &str) -> Result<Self, CrashSpecError> {
        let err = || CrashSpecError {
            value: value.to_owned(),
        };
        let (point, nth) = match value.split_once(':') {
            Some((p, n)) => (p, n.parse::<u64>().map_err(|_| err())?),
            None => (value, 1),
        };
        let known = TASK_POINTS.contains(&point) || point == STORE_WRITE || point == STORE_SYNC;
        if !known || nth == 0 {
            return Err(err());
        }
        Ok(Self {
            point: point.to_owned(),
            nth,
            passed: AtomicU64::new(0),
        })
    }

    /// Counts one pass of `point`; true when this pass is the fatal one.
    fn pass(&self, point: &str) -> bool {
        self.point == point && self.passed.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
    }
}

static PLAN: OnceLock<Result<Option<CrashPlan>, CrashSpecError>> = OnceLock::new();

/// The crash point armed by `DESKHAND_CRASH_AT`, read once per process; `Ok(None)` when unset.
/// A host calls it at start and refuses to run on an error.
pub fn armed() -> Result<Option<&'static CrashPlan>, CrashSpecError> {
    PLAN.get_or_init(|| match std::env::var(CRASH_ENV) {
        Ok(v) => CrashPlan::parse(&v).map(Some),
        Err(_) => Ok(None),
    })
    .as_ref()
    .map(Option::as_ref)
    .map_err(Clone::clone)
}

/// Whether `point` is the armed crash point (callers that must make a step durable first, to
/// crash right after it, ask this).
pub fn wants(point: &str) -> bool {
    matches!(armed(), Ok(Some(p)) if p.point == point)
}

/// Passes `point`: kills the process if it is the armed point and this is its `nth` pass.
pub fn crash_point(point: &str) {
    if let Ok(Some(plan)) = armed()
        && plan.pass(point)
    {
        die(point, plan.nth);
    }
}

/// SIGKILL to this very process: no destructor, no buffered write, no store thread finishes.
pub fn die(point: &str, nth: u64) -> ! {
    eprintln!("deskhand: fault injection: killed at {point}:{nth}");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; this is never reached, but the type needs an end.
    loop {
        std::thread::park();
    }
}

/// Opens the database file as redb's `Database::create` does, through a [`FaultyBackend`] that
/// carries the armed store crash point (if any).
#[cfg(feature = "fault-injection")]
pub(crate) fn open_database(path: &std::path::Path) -> Result<redb::Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    redb::Database::builder().create_with_backend(FaultyBackend::new(file, DiskFaults::none())?)
}

/// What goes wrong with a [`FaultyBackend`]'s disk, and when. Shared with the test that made it,
/// which can look at the counts and heal the disk.
#[derive(Debug, Default)]
pub struct DiskFaults {
    pub(crate) writes: AtomicU64,
    syncs: AtomicU64,
    pub(crate) plan: Mutex<Option<(DiskFault, u64)>>,
    /// Set once a fault that lasts fired (a dead or full disk); cleared by [`DiskFaults::heal`].
    broken: AtomicBool,
    fired: AtomicBool,
}

/// One fault of a [`FaultyBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// The `nth` write fails (EIO) and writes nothing; later calls work.
    FailWrite,
    /// The `nth` sync fails (EIO); later calls work.
    FailSync,
    /// The `nth` write writes only the first half of its bytes and fails; the disk is dead from
    /// then on (every write, sync and resize fails) until healed.
    TearWrite,
    /// The `nth` write and every write, resize and sync after it fail with ENOSPC until healed.
    DiskFull,
}

impl DiskFaults {
    /// A disk that never fails (counts only).
    pub fn none() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A disk on which `fault` happens at the `nth` (from 1) write or sync call.
    pub fn at(fault: DiskFault, nth: u64) -> Arc<Self> {
        let f = Self::default();
        *f.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some((fault, nth.max(1)));
        Arc::new(f)
    }

    /// Whether the planned fault has fired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Ends a lasting fault (space was freed, the disk came back).
    pub fn heal(&self) {
        self.broken.store(false, Ordering::SeqCst);
    }

    fn planned(&self) -> Option<(DiskFault, u64)> {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broken_error(&self) -> Option<io::Error> {
        if !self.broken.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.planned() {
            Some((DiskFault::DiskFull, _)) => enospc(),
            _ => io::Error::other("injected: the disk is dead"),
        })
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// redb's file backend with faults: the [`DiskFaults`] plan it was made with, and the store
/// crash points of `DESKHAND_CRASH_AT`. Locks are the file backend's.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    faults: Arc<DiskFaults>,
}

impl FaultyBackend {
    /// Wraps `file` (opened read-write) with the faults of `faults`. Fails as redb's
    /// `FileBackend::new` does.
    pub fn new(file: File, faults: Arc<DiskFaults>) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if let Some(e) = self.faults.broken_error() {
            return Err(e);
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let n = self.faults.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(Some(plan)) = armed()
            && plan.pass(STORE_SYNC)
        {
            die(STORE_SYNC, plan.nth);
        }
        if let Some(e) = self.faults.broken_error() {
            return Err(e);
        }
        if self.faults.planned() == Some((DiskFault::FailSync, n)) {
            self.faults.fired.store(true, Ordering::SeqCst);
            return Err(io::Error::other("injected: sync failed"));
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let n = self.faults.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(Some(plan)) = armed()
            && plan.pass(STORE_WRITE)
        {
            // A torn write: the first half reaches the file, then the process dies.
            let _ = self.inner.write(offset, &data[..data.len() / 2]);
            die(STORE_WRITE, plan.nth);
        }
        if let Some(e) = self.faults.broken_error() {
            return Err(e);
        }
        let fire = || self.faults.fired.store(true, Ordering::SeqCst);
        match self.faults.planned() {
            Some((DiskFault::FailWrite, at)) if at == n => {
                fire();
                Err(io::Error::other("injected: write failed"))
            }
            Some((DiskFault::TearWrite, at)) if at == n => {
                fire();
                self.inner.write(offset, &data[..data.len() / 2])?;
                self.faults.broken.store(true, Ordering::SeqCst);
                Err(io::Error::other("injected: torn write"))
            }
            Some((DiskFault::DiskFull, at)) if at == n => {
                fire();
                self.faults.broken.store(true, Ordering::SeqCst);
                Err(enospc())
            }
            _ => self.inner.write(offset, data),
        }
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
