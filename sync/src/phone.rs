//! The phone API: the one way every phone — the iOS and Android apps (through
//! `deskhand-mobile-bindings`), the terminal phone (`deskhand phone …`) and the tests — drives a
//! desktop.
//!
//! A [`Phone`] wraps a phone [`Node`]: it owns the device key (from a [`KeyProvider`]), pairs,
//! writes what a phone may write (user messages, tasks, cancel requests, signed approval
//! decisions), and turns the document plus presence into a [`PhoneSnapshot`] for the UI.
//! Everything a phone writes is one Automerge change committed durably to the phone's own redb
//! file before the call returns; when the desktop is unreachable it waits there and is sent on
//! the next connection.
//!
//! Live state is a [`PhoneListener`]: it gets the current snapshot at once, then one per change
//! (bursts coalesced), until the [`Subscription`] is dropped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use automerge::{Automerge, ChangeHash, ObjType, ROOT, ReadDoc};
use deskhand_core::approval::{Approval, Resolution, Verdict};
use deskhand_core::schema::{ExecutorState, Message, Role, SchemaError, Task, Workspace};
use deskhand_core::{DeviceId, DeviceKey, DocId, MessageId, PairingPayload};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::blobs::BlobError;
use crate::node::{NodeError, PeerView, random_id_bytes};
use crate::pairing::PairError;
use crate::presence::{Clock, Presence, SystemClock};
use crate::store::{DocKey, StoreError};
use crate::{NetConfig, Node, NodeConfig, NodeRole};

pub use deskhand_core::ids::{ApprovalId, TaskId};

/// How often presence is sampled (the node does not announce presence changes).
const PRESENCE_TICK: Duration = Duration::from_millis(250);
/// A burst of changes (a task streaming events) produces one snapshot per this interval at most.
const COALESCE: Duration = Duration::from_millis(30);
/// "In sync" is believed only this long after this phone's last write became durable: the node's
/// flag is computed by the session after each exchange, so it lags a local write briefly.
const SETTLE: Duration = Duration::from_millis(60);
/// How long `shutdown` waits for calls still using the node.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// The name of the key file a [`FileKeyProvider`] keeps in a data directory.
pub const KEY_FILE: &str = "device.key";

/// Why a phone operation failed. Each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The phone has no home desktop.
    #[error("this phone is not paired with a desktop")]
    NotPaired,
    /// The home desktop revoked this phone. Nothing more is sent to it; what was written and not
    /// delivered stays on the phone (pairing again with a new code sends it).
    #[error(
        "this device was revoked by the desktop {name}; nothing more is sent to it. To use it again, pair with a new code from that desktop"
    )]
    Revoked {
        /// The desktop's name.
        name: String,
        /// When the phone learned it (unix ms, this phone's clock).
        at: i64,
    },
    /// Paired, but the workspace has not been received from the desktop yet (a phone never
    /// creates it).
    #[error(
        "the workspace has not been received from the desktop yet; sync while the desktop is reachable"
    )]
    NotSynced,
    /// The phone already has another home desktop.
    #[error("this phone is already paired with {name} ({id}); forget it first")]
    AlreadyPaired {
        /// Its name.
        name: String,
        /// Its short id.
        id: String,
    },
    /// The desktop refused this phone: a bad, used or expired pairing code, or revocation.
    #[error("{reason}")]
    Refused {
        /// What the desktop said.
        reason: String,
    },
    /// The desktop could not be reached (what was written is kept and sent later).
    #[error("cannot reach the desktop: {reason}")]
    Unreachable {
        /// Why.
        reason: String,
    },
    /// The request makes no sense: empty text, a malformed code or hash, a finished task.
    #[error("{reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// No such task, approval or blob.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The approval request was already decided (by this phone, or resolved by the desktop).
    #[error("{reason}")]
    AlreadyDecided {
        /// By whom and how.
        reason: String,
    },
    /// The desktop resolved the request as expired (it counts as denied). Only the desktop's
    /// clock decides this: the phone never refuses on its own clock.
    #[error(
        "approval {id} expired {ago_s} s ago by the desktop's clock; the desktop treated it as denied"
    )]
    Expired {
        /// The request.
        id: String,
        /// Seconds since it expired, in the desktop's time as this phone estimates it.
        ago_s: i64,
    },
    /// The request's action hash does not match the tool and arguments it shows: it is not
    /// signed, so that the phone never signs something other than what the user saw.
    #[error(
        "approval {id} does not match the action it shows (its hash differs); refusing to sign it"
    )]
    Mismatch {
        /// The request.
        id: String,
    },
    /// A blob arrived but does not hash to what was asked for.
    #[error("blob {hash} failed verification: the bytes received do not match its hash")]
    Corrupt {
        /// The blob.
        hash: String,
    },
    /// Forgetting the desktop would drop what this phone wrote and the desktop does not have yet.
    #[error(
        "{count} thing(s) written on this phone (messages, tasks, cancel requests or decisions) have not reached the desktop; forgetting it would drop them. Sync while the desktop is reachable, or pair again with the same desktop without forgetting it (a fresh pairing code works on a paired phone and keeps them), or forget it anyway, dropping them"
    )]
    Unsent {
        /// How many of this phone's changes the desktop is not known to hold.
        count: usize,
    },
    /// Syncing is stopped ([`Phone::stop`]); start it to reach the desktop.
    #[error("syncing is stopped; start it to reach the desktop")]
    Stopped,
    /// The key provider failed, or the key belongs to another data directory.
    #[error("device key: {reason}")]
    Key {
        /// Why.
        reason: String,
    },
    /// Local storage failed (disk full, unreadable database, unusable data directory).
    #[error("storage: {reason}")]
    Storage {
        /// Why.
        reason: String,
    },
    /// The local network stack failed (cannot bind, bad relay URL).
    #[error("network: {reason}")]
    Network {
        /// Why.
        reason: String,
    },
    /// The phone was shut down.
    #[error("the phone is shut down")]
    Closed,
}

impl From<NodeError> for PhoneError {
    fn from(e: NodeError) -> Self {
        match e {
            // "storage: " is this variant's own prefix: not "storage: storage error in …".
            NodeError::Store(StoreError::Io { path, reason }) => Self::Storage {
                reason: format!("{reason} ({})", path.display()),
            },
            NodeError::Store(_) | NodeError::CorruptDocument { .. } | NodeError::DataDir { .. } => {
                Self::Storage {
                    reason: e.to_string(),
                }
            }
            NodeError::Schema(SchemaError::Uninitialised) => Self::NotSynced,
            NodeError::Schema(s) => Self::Invalid {
                reason: s.to_string(),
            },
            NodeError::Endpoint(_) => Self::Network {
                reason: e.to_string(),
            },
            NodeError::KeyMismatch { .. } => Self::Key {
                reason: e.to_string(),
            },
            NodeError::ShutDown => Self::Closed,
            NodeError::Blob(b) => b.into(),
            NodeError::NoWorkspace => Self::NotSynced,
            NodeError::Week(_) | NodeError::NotLoaded(_) => Self::Invalid {
                reason: e.to_string(),
            },
            other => Self::Storage {
                reason: other.to_string(),
            },
        }
    }
}

impl From<PairError> for PhoneError {
    fn from(e: PairError) -> Self {
        match e {
            PairError::Refused { .. } => Self::Refused {
                reason: e.to_string(),
            },
            // This variant says "cannot reach the desktop: " itself.
            PairError::Unreachable { addrs, reason } => Self::Unreachable {
                reason: format!("{reason} (tried {addrs})"),
            },
            PairError::AlreadyPaired { name, id } => Self::AlreadyPaired { name, id },
            PairError::Storage(reason) => Self::Storage { reason },
            other => Self::Invalid {
                reason: other.to_string(),
            },
        }
    }
}

impl From<BlobError> for PhoneError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotPaired => Self::NotPaired,
            BlobError::Unreachable { .. } => Self::Unreachable {
                reason: e.to_string(),
            },
            BlobError::NotFound(hash) => Self::NotFound {
                what: format!("blob {hash} (on the desktop)"),
            },
            BlobError::Corrupt(hash) => Self::Corrupt { hash },
            BlobError::Store { .. } => Self::Storage {
                reason: e.to_string(),
            },
            other => Self::Invalid {
                reason: other.to_string(),
            },
        }
    }
}

/// Why a key provider could not hand out the device key.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct KeyProviderError {
    /// Why, for a person.
    pub reason: String,
}

/// Where the device's secret key lives: the Keychain, the Android Keystore, a file. The phone
/// asks once, when it opens.
pub trait KeyProvider: Send + Sync {
    /// The 32-byte ed25519 secret of this device, created and stored by the provider on first use
    /// (the same bytes every time after that).
    fn device_secret(&self) -> Result<[u8; 32], KeyProviderError>;
}

/// A key kept in a file (mode 0600) — for tests and the terminal. Apps use the platform's
/// secure storage instead.
#[derive(Clone, Debug)]
pub struct FileKeyProvider {
    path: PathBuf,
}

impl FileKeyProvider {
    /// The key in `path` (32 raw bytes).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
    /// The key in [`KEY_FILE`] inside a phone's data directory.
    pub fn in_data_dir(dir: &Path) -> Self {
        Self::new(dir.join(KEY_FILE))
    }
    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> std::io::Result<Option<[u8; 32]>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => bytes.try_into().map(Some).map_err(|b: Vec<u8>| {
                std::io::Error::other(format!(
                    "{} holds {} bytes, not a 32-byte key",
                    self.path.display(),
                    b.len()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a fresh key durably. Two processes racing both end up with the winner's key: the
    /// key is written to a private temporary file and hard-linked into place, which fails if a
    /// key is already there.
    fn create(&self) -> std::io::Result<[u8; 32]> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let secret: [u8; 32] = crate::node::random_bytes();
        let tmp = dir.join(format!(
            ".{KEY_FILE}.{}",
            hex::encode(crate::node::random_bytes::<6>())
        ));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let written = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(&secret)?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, &self.path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(secret)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read()?
                .ok_or_else(|| std::io::Error::other("the key file vanished while being created")),
            Err(e) => Err(e),
        }
    }
}

impl KeyProvider for FileKeyProvider {
    fn device_secret(&self) -> Result<[u8; 32], KeyProviderError> {
        let out = match self.read() {
            Ok(Some(k)) => Ok(k),
            Ok(None) => self.create(),
            Err(e) => Err(e),
        };
        out.map_err(|e| KeyProviderError {
            reason: format!("key file {}: {e}", self.path.display()),
        })
    }
}

/// Where a phone's device key comes from.
#[derive(Clone)]
pub enum PhoneKey {
    /// The phone's database keeps it (created on first open).
    Stored,
    /// The platform keeps it; it is never written to the database.
    Provider(Arc<dyn KeyProvider>),
}

impl std::fmt::Debug for PhoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stored => f.write_str("Stored"),
            Self::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

/// How to open a phone.
#[derive(Clone, Debug)]
pub struct PhoneConfig {
    /// Directory of the phone's database (created 0700 if missing).
    pub data_dir: PathBuf,
    /// This phone's name, shown on the desktop when it pairs.
    pub name: String,
    /// Platform: `ios`, `android`, `terminal`, …
    pub platform: String,
    /// Where the device key comes from.
    pub key: PhoneKey,
    /// Network settings.
    pub net: NetConfig,
    /// The phone's wall clock: the system's; tests give a skewed one ([`crate::presence::SkewedClock`]).
    /// It only stamps what the phone writes and measures its offset to the desktop: expiry is
    /// judged by the desktop's clock.
    pub clock: Arc<dyn Clock>,
}

impl PhoneConfig {
    /// A phone whose database keeps its key, with default network settings (loopback, no relay).
    pub fn new(data_dir: impl Into<PathBuf>, name: &str, platform: &str) -> Self {
        Self {
            data_dir: data_dir.into(),
            name: name.to_owned(),
            platform: platform.to_owned(),
            key: PhoneKey::Stored,
            net: NetConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }
    /// Reads wall time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Takes the key from the platform.
    pub fn with_key_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.key = PhoneKey::Provider(provider);
        self
    }
    /// Sets the network settings.
    pub fn with_net(mut self, net: NetConfig) -> Self {
        self.net = net;
        self
    }
}

/// Whether the desktop holds a message this phone wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Saved on this phone; not yet known to be on the desktop.
    Pending,
    /// The desktop has it (always the case for messages written by others).
    Synced,
}

/// A message of the conversation as the phone shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhoneMessage {
    /// The message.
    #[serde(flatten)]
    pub message: Message,
    /// Written by this phone.
    pub mine: bool,
    /// Whether the desktop has it.
    pub delivery: Delivery,
}

/// A task as the phone shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhoneTask {
    /// The task, with its progress events and result.
    #[serde(flatten)]
    pub task: Task,
    /// Created by this phone (directly, or from one of its messages).
    pub mine: bool,
    /// Approval requests of this task still waiting for a decision.
    pub waiting_for: Vec<ApprovalId>,
}

/// Where an approval request stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a decision.
    Pending,
    /// The desktop resolved it.
    Resolved(Resolution),
    /// Past its expiry in the desktop's time as this phone estimates it (its clock plus the
    /// learned offset), and not yet resolved: the desktop will treat it as denied. Deciding is
    /// still sent: only the desktop's clock decides.
    Expired,
}

/// An approval request as the phone shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhoneApproval {
    /// The request: tool, arguments, summary, risk, expiry, decisions.
    #[serde(flatten)]
    pub approval: Approval,
    /// Where it stands.
    pub status: ApprovalState,
    /// This phone's decision, if it made one.
    pub my_verdict: Option<Verdict>,
    /// This phone decided, but its decision reached the desktop after the desktop had resolved
    /// the request (another phone's decision, or the expiry, decided): it was not acted on.
    /// The resolution in `status` says what happened instead.
    pub too_late: bool,
    /// Milliseconds left before it expires, in the desktop's time as this phone estimates it
    /// (negative once past).
    pub expires_in_ms: i64,
    /// Its action hash matches the tool and arguments it shows (if not, the phone refuses to
    /// sign it).
    pub verified: bool,
}

/// The desktop's health, from what it writes into the document.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DesktopHealth {
    /// Operating system.
    pub os: String,
    /// Its last heartbeat (unix ms, the desktop's clock).
    pub heartbeat_at: i64,
    /// How old that heartbeat is now, in the desktop's time as this phone estimates it.
    pub heartbeat_age_ms: i64,
    /// What its executor is doing.
    pub executor: ExecutorState,
}

/// A device paired with the desktop, as the workspace shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhoneDevice {
    /// Its device id.
    pub id: String,
    /// Its name (as it gave it when pairing, or as renamed on the desktop).
    pub name: String,
    /// Its platform: `android`, `ios`, `terminal`, …
    pub platform: String,
    /// When it was paired (unix ms, the desktop's clock).
    pub paired_at: i64,
    /// When the desktop revoked it, if it did (unix ms, the desktop's clock).
    pub revoked_at: Option<i64>,
    /// It is this phone.
    pub this_device: bool,
}

/// The home desktop as the phone sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DesktopStatus {
    /// Device id.
    pub id: DeviceId,
    /// Name.
    pub name: String,
    /// Connected, last seen at, or never reached; its instants are in the desktop's time when
    /// the offset is known (this phone's clock plus [`Self::clock_offset_ms`]).
    pub presence: Presence,
    /// The desktop's clock minus this phone's (milliseconds), learned when pairing and at each
    /// sync; `None` until then. Times are shown in the desktop's clock with it.
    pub clock_offset_ms: Option<i64>,
    /// Connected and both sides hold the same changes.
    pub in_sync: bool,
    /// Why the last connection attempt or session failed, if it did.
    pub last_error: Option<String>,
    /// Heartbeat and executor state (once the workspace has arrived).
    pub health: Option<DesktopHealth>,
    /// When the desktop revoked this phone (unix ms), if it did: nothing is sent any more.
    pub revoked_at: Option<i64>,
    /// The addresses this phone dials it on: the latest it published, then the pairing code's
    /// (`ip:port`; local-network discovery adds what it finds).
    pub addrs: Vec<String>,
    /// The relay this phone reaches it through when no direct path works, if any.
    pub relay: Option<String>,
}

/// Everything a phone screen shows, at one instant.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhoneSnapshot {
    /// This phone's device id.
    pub device_id: DeviceId,
    /// This phone's name.
    pub device_name: String,
    /// Background sync is on ([`Phone::start`] / [`Phone::stop`]).
    pub syncing: bool,
    /// The workspace id, once known (pairing tells it; the document follows).
    pub workspace: Option<DocId>,
    /// The workspace document has been received from the desktop (until then nothing can be
    /// written).
    pub workspace_received: bool,
    /// The home desktop, if paired.
    pub desktop: Option<DesktopStatus>,
    /// The conversation, oldest first.
    pub messages: Vec<PhoneMessage>,
    /// Tasks, oldest first by when the desktop first saw them (its clock; tasks it has not seen
    /// yet last): a phone's wrong clock cannot reorder them.
    pub tasks: Vec<PhoneTask>,
    /// Approval requests waiting for a decision, oldest first.
    pub pending_approvals: Vec<PhoneApproval>,
    /// Resolved or expired approval requests, oldest first.
    pub resolved_approvals: Vec<PhoneApproval>,
    /// The devices paired with the desktop (the workspace's display copy of its registry: the
    /// desktop is the authority), this phone included, oldest pairing first; revoked ones too,
    /// with when.
    pub devices: Vec<PhoneDevice>,
    /// Weeks of older conversation the desktop holds that this phone has not loaded:
    /// [`Phone::load_older`] fetches them, newest first. 0 when everything is here.
    pub older_weeks: u32,
    /// When this snapshot was taken (unix ms, this phone's clock).
    pub taken_at: i64,
    /// The same instant in the desktop's clock, as far as this phone knows it (`taken_at` plus
    /// the learned offset; `taken_at` when none is known). Show and count down times with it.
    pub desktop_now: i64,
}

impl PhoneSnapshot {
    /// A task by id.
    pub fn task(&self, id: &TaskId) -> Option<&PhoneTask> {
        self.tasks.iter().find(|t| &t.task.id == id)
    }
}

/// Receives snapshots: the current one at once, then one after each change.
pub trait PhoneListener: Send + Sync {
    /// Called with the latest snapshot. Calls never overlap; a slow listener gets the newest
    /// state next, not a backlog.
    fn on_update(&self, snapshot: PhoneSnapshot);
}

impl<F: Fn(PhoneSnapshot) + Send + Sync> PhoneListener for F {
    fn on_update(&self, snapshot: PhoneSnapshot) {
        self(snapshot)
    }
}

/// A live subscription; dropping it ends it (a call already under way finishes, no new one
/// starts).
#[must_use = "the subscription ends when this is dropped"]
pub struct Subscription {
    cancel: CancellationToken,
}

impl Subscription {
    /// Ends the subscription now.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("ended", &self.cancel.is_cancelled())
            .finish()
    }
}

/// What the phone knows the desktop holds, for per-message delivery state.
#[derive(Default)]
struct DeliveryTracker {
    /// The desktop these facts are about (reset when the home changes).
    desktop: Option<DeviceId>,
    /// Heads up to which the document has been scanned for the desktop's own changes.
    scanned: Vec<ChangeHash>,
    /// The desktop's newest change seen, per actor of the desktop (it writes under a fresh
    /// actor each run): it held everything that change depends on.
    desktop_latest: HashMap<automerge::ActorId, (u64, ChangeHash)>,
    /// Heads both sides held when the session last reported "in sync" stably.
    in_sync_heads: Vec<ChangeHash>,
}

impl DeliveryTracker {
    fn reset_for(&mut self, desktop: Option<DeviceId>) {
        if self.desktop != desktop {
            *self = Self {
                desktop,
                ..Self::default()
            };
        }
    }

    /// Notes the desktop's changes received since the last scan.
    fn scan(&mut self, doc: &Automerge) {
        let Some(desktop) = self.desktop else { return };
        let heads = doc.get_heads();
        if heads == self.scanned {
            return;
        }
        for meta in doc.get_changes_meta(&self.scanned) {
            if !desktop.owns_actor(&meta.actor) {
                continue;
            }
            let latest = self
                .desktop_latest
                .entry(meta.actor.clone().into_owned())
                .or_insert((meta.seq, meta.hash));
            if meta.seq > latest.0 {
                *latest = (meta.seq, meta.hash);
            }
        }
        self.scanned = heads;
    }

    /// Changes the desktop is not known to hold, written by `me` (their hashes).
    fn undelivered(&self, doc: &Automerge, me: &DeviceId) -> HashSet<ChangeHash> {
        let mut known = self.in_sync_heads.clone();
        known.extend(self.desktop_latest.values().map(|(_, h)| *h));
        doc.get_changes_meta(&known)
            .into_iter()
            .filter(|m| me.owns_actor(&m.actor))
            .map(|m| m.hash)
            .collect()
    }
}

/// The tracker of document `key`, reset when the home desktop is no longer `desktop`.
fn tracker<'a>(
    trackers: &'a mut HashMap<DocKey, DeliveryTracker>,
    key: &DocKey,
    desktop: Option<DeviceId>,
) -> &'a mut DeliveryTracker {
    let t = trackers.entry(key.clone()).or_default();
    t.reset_for(desktop);
    t
}

/// The documents this phone writes into: the workspace's (devices, push subscription) and
/// the loaded conversation documents.
fn written_docs(node: &Node) -> Vec<DocKey> {
    let mut keys = node.conversation_docs();
    if !keys.contains(&DocKey::WORKSPACE) {
        keys.insert(0, DocKey::WORKSPACE);
    }
    keys
}

/// Heads of every document in `keys`, read now.
fn heads_of(node: &Node, keys: &[DocKey]) -> Vec<(DocKey, Vec<ChangeHash>)> {
    keys.iter()
        .filter_map(|k| Some((k.clone(), node.read_doc(k, |d| d.get_heads())?)))
        .collect()
}

struct Inner {
    node: RwLock<Option<Arc<Node>>>,
    id: DeviceId,
    name: String,
    platform: String,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    /// Bumped when anything a snapshot shows may have changed (document, presence, delivery).
    updates: watch::Sender<u64>,
    syncing: AtomicBool,
    /// Per document, what the desktop is known to hold of it.
    delivery: Mutex<HashMap<DocKey, DeliveryTracker>>,
    writes: Mutex<Writes>,
    clock: Arc<dyn Clock>,
    /// The set-aside workspace of before the update is being written into its weeks.
    legacy_busy: AtomicBool,
}

/// This phone's own writes: under way, and when the last one became durable.
struct Writes {
    in_flight: usize,
    last_done: std::time::Instant,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped without `shutdown`: close in the background rather than abort the connection.
        let node = match self.node.write() {
            Ok(mut n) => n.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(Ok(node)) = node.map(Arc::try_unwrap) {
            self.runtime.spawn(node.shutdown());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent (single assignments), so a panic elsewhere is no reason
    // to stop.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A phone: one device paired (or to be paired) with one desktop. Cheap to share behind an
/// `Arc`; every method takes `&self`.
pub struct Phone {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Phone {
    /// Opens the phone in `config.data_dir` (creating it on first use). It syncs with its home
    /// desktop in the background at once, if it has one; [`Phone::stop`] pauses that. Must be
    /// called within a tokio runtime, which then runs the phone's background work.
    pub async fn open(config: PhoneConfig) -> Result<Phone, PhoneError> {
        let mut node_config = NodeConfig::new(&config.data_dir, NodeRole::Phone)
            .with_net(config.net)
            .with_clock(config.clock.clone());
        if let PhoneKey::Provider(provider) = &config.key {
            let provider = provider.clone();
            // A platform keystore may block (user presence, hardware): keep it off the workers.
            let secret = tokio::task::spawn_blocking(move || provider.device_secret())
                .await
                .map_err(|e| PhoneError::Key {
                    reason: format!("the key provider panicked: {e}"),
                })?
                .map_err(|e| PhoneError::Key { reason: e.reason })?;
            node_config = node_config.with_key(DeviceKey::from_secret_bytes(secret));
        }
        let node = Node::open(node_config).await?;
        let inner = Arc::new(Inner {
            id: node.id(),
            node: RwLock::new(Some(Arc::new(node))),
            name: config.name,
            platform: config.platform,
            runtime: tokio::runtime::Handle::current(),
            cancel: CancellationToken::new(),
            updates: watch::channel(0).0,
            syncing: AtomicBool::new(true),
            delivery: Mutex::new(HashMap::new()),
            writes: Mutex::new(Writes {
                in_flight: 0,
                last_done: std::time::Instant::now(),
            }),
            clock: config.clock,
            legacy_busy: AtomicBool::new(false),
        });
        inner
            .runtime
            .spawn(monitor(Arc::downgrade(&inner), inner.cancel.clone()));
        Ok(Phone { inner })
    }

    fn node(&self) -> Result<Arc<Node>, PhoneError> {
        self.inner.node()
    }

    /// This phone's device id.
    pub fn id(&self) -> DeviceId {
        self.inner.id
    }

    /// This phone's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The home desktop's id and name, if paired.
    pub fn home(&self) -> Option<(DeviceId, String)> {
        let node = self.node().ok()?;
        node.home().map(|(id, r)| (id, r.name))
    }

    /// The home desktop's id and name, or why there is none to sync with:
    /// [`PhoneError::Revoked`] when it revoked this phone, else [`PhoneError::NotPaired`].
    pub fn require_home(&self) -> Result<(DeviceId, String), PhoneError> {
        let node = self.node()?;
        node.home()
            .map(|(id, r)| (id, r.name))
            .ok_or_else(|| not_paired(&node))
    }

    /// Pairs with the desktop whose pairing code (`deskhand://pair?…`, from its QR code) is
    /// given; it becomes this phone's home. Returns its id and name. The workspace follows in
    /// the background (see [`Phone::sync`]).
    pub async fn pair(&self, code: &str) -> Result<(DeviceId, String), PhoneError> {
        // The parse error names what is wrong in full ("not a Deskhand pairing code (it
        // should start with …)", "pairing code field … is missing"): no prefix of ours.
        let payload = PairingPayload::parse(code).map_err(|e| PhoneError::Invalid {
            reason: e.to_string(),
        })?;
        let node = self.node()?;
        node.pair(&payload, &self.inner.name, &self.inner.platform)
            .await?;
        if self.inner.syncing.load(Ordering::SeqCst) {
            node.sync_now();
        }
        self.inner.bump();
        Ok((payload.desktop, payload.name))
    }

    /// Turns background sync on: connects to the desktop, and keeps reconnecting with backoff.
    /// Also the call for "network changed" and "app in the foreground": it retries at once.
    pub fn start(&self) {
        self.inner.syncing.store(true, Ordering::SeqCst);
        if let Ok(node) = self.node() {
            node.set_sync_paused(false);
            node.sync_now();
        }
        self.inner.bump();
    }

    /// Turns background sync off: the connection closes and nothing is dialled. Writes go on
    /// locally and are sent after [`Phone::start`].
    pub fn stop(&self) {
        self.inner.syncing.store(false, Ordering::SeqCst);
        if let Ok(node) = self.node() {
            node.set_sync_paused(true);
        }
        self.inner.bump();
    }

    /// Whether background sync is on.
    pub fn is_syncing(&self) -> bool {
        self.inner.syncing.load(Ordering::SeqCst)
    }

    /// Syncs now and waits until this phone and the desktop hold the same changes, for at most
    /// `timeout`.
    pub async fn sync(&self, timeout: Duration) -> Result<(), PhoneError> {
        let node = self.node()?;
        let (home, _) = node.home().ok_or_else(|| not_paired(&node))?;
        if !self.is_syncing() {
            return Err(PhoneError::Stopped);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = node.subscribe();
        node.sync_now();
        loop {
            let heads = heads_of(&node, &written_docs(&node));
            let view = home_view(&node, &home).ok_or_else(|| not_paired(&node))?;
            if node.home().is_none() {
                return Err(not_paired(&node));
            }
            if view.in_sync && self.inner.quiet() {
                self.inner.in_sync_at(&heads, home);
                self.inner.bump();
                return Ok(());
            }
            if let Some(e) = &view.last_error
                && refused(e)
            {
                return Err(PhoneError::Refused { reason: e.clone() });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(PhoneError::Unreachable {
                    reason: view.last_error.unwrap_or_else(|| {
                        format!(
                            "the desktop did not answer within {timeout:?} ({})",
                            node.dial_plan().unwrap_or_default()
                        )
                    }),
                });
            }
            let step = (deadline - now).min(Duration::from_millis(20));
            let _ = tokio::time::timeout(step, changes.changed()).await;
        }
    }

    /// The desktop's clock minus this phone's, as last learned (milliseconds).
    fn offset(node: &Node) -> Option<i64> {
        node.home().and_then(|(_, r)| r.clock_offset_ms)
    }

    /// The desktop's clock minus this phone's (milliseconds), learned when pairing and at each
    /// sync and kept across restarts; `None` before the first.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.node().ok().and_then(|n| Self::offset(&n))
    }

    fn require_workspace(node: &Node) -> Result<(), PhoneError> {
        if node.home().is_none() {
            return Err(not_paired(node));
        }
        match node.read(Workspace::check_version) {
            Ok(_) => Ok(()),
            Err(SchemaError::Uninitialised) => Err(PhoneError::NotSynced),
            Err(e) => Err(PhoneError::Invalid {
                reason: e.to_string(),
            }),
        }
    }

    /// The conversation document this phone's new messages and tasks go to now: that of the
    /// desktop's clock (this phone's plus the offset last learned), so that a phone with a
    /// wrong clock writes into the week the desktop is in.
    async fn conversation_doc_now(&self, node: &Node) -> Result<DocKey, PhoneError> {
        let now = self
            .inner
            .clock
            .now_unix_ms()
            .saturating_add(Self::offset(node).unwrap_or(0));
        Ok(node.conversation_doc_at(now).await?)
    }

    /// Writes a user message (committed on this phone before it returns; sent when the desktop
    /// is reachable). The desktop turns it into a task and answers in the conversation.
    pub async fn send_message(&self, text: &str) -> Result<MessageId, PhoneError> {
        let text = non_empty(text, "a message")?;
        let node = self.node()?;
        Self::require_workspace(&node)?;
        let msg = Message {
            id: MessageId::from_random(random_id_bytes()),
            author: self.inner.id.to_string(),
            role: Role::User,
            text,
            created_at: self.inner.clock.now_unix_ms(),
            task_id: None,
        };
        let key = self.conversation_doc_now(&node).await?;
        self.inner
            .write(&node, &key, |tx| Workspace::append_message(tx, &msg))
            .await?;
        Ok(msg.id)
    }

    /// Creates a task directly (no conversation message); the desktop runs it.
    pub async fn create_task(&self, prompt: &str) -> Result<TaskId, PhoneError> {
        let prompt = non_empty(prompt, "a task")?;
        let node = self.node()?;
        Self::require_workspace(&node)?;
        let task = Task::queued(
            TaskId::from_random(random_id_bytes()),
            prompt,
            &self.inner.id,
            self.inner.clock.now_unix_ms(),
        );
        let key = self.conversation_doc_now(&node).await?;
        self.inner
            .write(&node, &key, |tx| Workspace::add_task(tx, &task))
            .await?;
        Ok(task.id)
    }

    /// Asks the desktop to cancel a task.
    pub async fn cancel_task(&self, id: &TaskId) -> Result<(), PhoneError> {
        let node = self.node()?;
        Self::require_workspace(&node)?;
        let not_found = || PhoneError::NotFound {
            what: format!("task {id}"),
        };
        let key = node.task_doc(id).ok_or_else(not_found)?;
        let task = node
            .read_doc(&key, |d| Workspace::task(d, id))
            .ok_or_else(not_found)?
            .map_err(|e| PhoneError::Invalid {
                reason: e.to_string(),
            })?
            .ok_or_else(not_found)?;
        if task.status.is_final() {
            return Err(PhoneError::Invalid {
                reason: format!("task {id} has already finished ({})", task.status),
            });
        }
        if task.cancel_requested_by.as_deref() == Some(&self.inner.id.to_string()) {
            return Ok(());
        }
        self.inner
            .write(&node, &key, |tx| {
                Workspace::request_cancel(tx, id, &self.inner.id)
            })
            .await?;
        Ok(())
    }

    /// Approves a request: signs the exact action it shows and writes the decision. Never
    /// refused on this phone's clock: the desktop judges expiry ([`PhoneError::Expired`] only once
    /// the desktop has resolved it so). Whether it counted shows later as
    /// [`PhoneApproval::too_late`].
    pub async fn approve(&self, id: &ApprovalId) -> Result<(), PhoneError> {
        self.decide(id, Verdict::Approve).await
    }

    /// Denies a request (signed like an approval). Also takes back this phone's approval while
    /// the desktop has not acted on it.
    pub async fn deny(&self, id: &ApprovalId) -> Result<(), PhoneError> {
        self.decide(id, Verdict::Deny).await
    }

    /// Writes this phone's Web Push subscription into its own device entry of the workspace
    /// (`devices/<phone>/push`), so that the desktop can wake it with content-free "sync now"
    /// pushes while it is not connected. `endpoint`: the URL the push distributor gave the app;
    /// `p256dh`: the app's P-256 public key, the 65-byte uncompressed point; `auth`: its 16-byte
    /// secret; both base64url (RFC 8291 §2–§3). Replaces any earlier subscription.
    ///
    /// Errors: [`PhoneError::Invalid`] with the rule broken when the subscription would be
    /// refused by the desktop ([`deskhand_core::PushSubscription::check`]: an `https://`
    /// endpoint — `http://` only to a loopback host — of at most 1024 bytes, keys of the right
    /// lengths, a point on the curve), or when the desktop's entry for this phone has not been
    /// received yet; [`PhoneError::NotSynced`] before the first sync.
    pub async fn set_push_subscription(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<(), PhoneError> {
        let sub = deskhand_core::PushSubscription {
            endpoint: endpoint.trim().to_owned(),
            p256dh: p256dh.trim().to_owned(),
            auth: auth.trim().to_owned(),
        };
        sub.check().map_err(|e| PhoneError::Invalid {
            reason: e.to_string(),
        })?;
        let node = self.node()?;
        Self::require_workspace(&node)?;
        let me = self.inner.id;
        let current = node
            .read(|d| Workspace::push_subscription(d, &me))
            .ok()
            .flatten();
        if current.as_ref() == Some(&sub) {
            return Ok(());
        }
        self.inner
            .write(&node, &DocKey::WORKSPACE, |tx| {
                Workspace::set_push_subscription(tx, &me, &sub)
            })
            .await
    }

    /// Removes this phone's push subscription from its device entry: the desktop sends it no
    /// more pushes. Nothing is written when it has none.
    pub async fn clear_push_subscription(&self) -> Result<(), PhoneError> {
        let node = self.node()?;
        Self::require_workspace(&node)?;
        let me = self.inner.id;
        let current = node.read(|d| Workspace::push_subscription(d, &me));
        if matches!(current, Ok(None)) {
            return Ok(());
        }
        self.inner
            .write(&node, &DocKey::WORKSPACE, |tx| {
                Workspace::clear_push_subscription(tx, &me)
            })
            .await
    }

    /// This phone's push subscription as its replica holds it, if any.
    pub fn push_subscription(&self) -> Result<Option<deskhand_core::PushSubscription>, PhoneError> {
        let node = self.node()?;
        let me = self.inner.id;
        node.read(|d| Workspace::push_subscription(d, &me))
            .map_err(|e| PhoneError::Invalid {
                reason: e.to_string(),
            })
    }

    async fn decide(&self, id: &ApprovalId, verdict: Verdict) -> Result<(), PhoneError> {
        let node = self.node()?;
        Self::require_workspace(&node)?;
        let (desktop, _) = node.home().ok_or(PhoneError::NotPaired)?;
        let not_found = || PhoneError::NotFound {
            what: format!("approval {id}"),
        };
        let key = node.approval_doc(id).ok_or_else(not_found)?;
        let approval = node
            .read_doc(&key, |d| Workspace::approval(d, id))
            .ok_or_else(not_found)?
            .map_err(|e| PhoneError::Invalid {
                reason: e.to_string(),
            })?
            .ok_or_else(not_found)?;
        let now = self.inner.clock.now_unix_ms();
        if let Some(r) = &approval.resolution {
            if r.by == "expired" {
                let desktop_now = now.saturating_add(Self::offset(&node).unwrap_or(0));
                return Err(PhoneError::Expired {
                    id: id.to_string(),
                    ago_s: (desktop_now - approval.expires_at).max(0) / 1000,
                });
            }
            return Err(PhoneError::AlreadyDecided {
                reason: format!(
                    "too late: approval {id} was already resolved by the desktop: {}{}",
                    past(r.verdict),
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.reason)
                    }
                ),
            });
        }
        if let Some(mine) = approval.decisions.get(&self.inner.id.to_string()) {
            if mine.verdict == verdict {
                return Ok(());
            }
            // Approve then deny is changing one's mind, and the desktop lets a deny win over an
            // approve it has not acted on; a deny is final.
            if mine.verdict == Verdict::Deny {
                return Err(PhoneError::AlreadyDecided {
                    reason: format!("this phone already denied approval {id}; a deny is final"),
                });
            }
        }
        // No expiry check here: the phone's clock may be wrong, and the desktop, whose clock
        // decides, resolves a request that is past its expiry as denied whatever arrives.
        if !approval.hash_matches(&desktop) {
            return Err(PhoneError::Mismatch { id: id.to_string() });
        }
        let decision = approval.sign(node.key(), &desktop, verdict, now);
        self.inner
            .write(&node, &key, |tx| {
                Workspace::put_decision(tx, id, &self.inner.id, &decision)
            })
            .await?;
        Ok(())
    }

    /// The current state: conversation, tasks, approvals, desktop presence and health.
    pub fn snapshot(&self) -> Result<PhoneSnapshot, PhoneError> {
        let node = self.node()?;
        Ok(self.inner.snapshot(&node))
    }

    /// Calls `listener` with the current snapshot now, then after each change (bursts
    /// coalesced), until the returned [`Subscription`] is dropped or the phone shuts down.
    pub fn subscribe(&self, listener: Arc<dyn PhoneListener>) -> Subscription {
        let cancel = self.inner.cancel.child_token();
        let weak = Arc::downgrade(&self.inner);
        let mut updates = self.inner.updates.subscribe();
        let token = cancel.clone();
        self.inner.runtime.spawn(async move {
            loop {
                let snapshot = {
                    let Some(inner) = weak.upgrade() else { return };
                    let Ok(node) = inner.node() else { return };
                    updates.mark_unchanged();
                    inner.snapshot(&node)
                };
                if token.is_cancelled() {
                    return;
                }
                let l = listener.clone();
                // Foreign listeners run arbitrary (possibly blocking) code.
                if tokio::task::spawn_blocking(move || l.on_update(snapshot))
                    .await
                    .is_err()
                {
                    tracing::warn!("a phone listener panicked; its subscription ends");
                    return;
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    r = updates.changed() => if r.is_err() { return },
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(COALESCE) => {}
                }
            }
        });
        Subscription { cancel }
    }

    /// Fetches a blob (a screenshot, a long output) from the desktop; its BLAKE3 hash is
    /// verified before it is returned.
    pub async fn fetch_blob(&self, hash: &str) -> Result<Vec<u8>, PhoneError> {
        let node = self.node()?;
        Ok(node.fetch_blob(hash).await?)
    }

    /// Loads the next `weeks` weeks of older conversation (newest first) that the desktop holds
    /// and this phone has not loaded ([`PhoneSnapshot::older_weeks`] says how many remain).
    /// They sync in the background like the rest; [`Phone::sync`] waits for them, and their
    /// messages appear in snapshots as they arrive. Returns how many weeks were loaded: 0 when
    /// there is nothing older (or the desktop's catalog has not been heard yet).
    ///
    /// # Errors
    /// [`PhoneError::NotPaired`] before pairing; a storage error if a week does not load.
    pub async fn load_older(&self, weeks: u32) -> Result<u32, PhoneError> {
        let node = self.node()?;
        if node.home().is_none() {
            return Err(not_paired(&node));
        }
        let loaded = node.load_older(weeks as usize).await?;
        self.inner.bump();
        Ok(loaded.len() as u32)
    }

    /// How many of this phone's own writes (messages, tasks, cancel requests, decisions) the
    /// desktop is not known to hold: 0 when every one was acknowledged (or nothing was written).
    pub fn unsent_count(&self) -> Result<usize, PhoneError> {
        let node = self.node()?;
        let Some((home, _)) = node.home() else {
            return Ok(0);
        };
        if node.read(Workspace::check_version).is_err() {
            return Ok(0);
        }
        let mut trackers = lock(&self.inner.delivery);
        Ok(written_docs(&node)
            .iter()
            .filter_map(|key| {
                node.read_doc(key, |doc| {
                    let t = tracker(&mut trackers, key, Some(home));
                    t.scan(doc);
                    t.undelivered(doc, &self.inner.id).len()
                })
            })
            .sum())
    }

    /// Forgets the home desktop and its workspace, so that the phone can pair anew. Refused with
    /// [`PhoneError::Unsent`] while something this phone wrote has not reached the desktop (see
    /// [`Phone::unsent_count`]): sync first, or pair again with the same desktop without
    /// forgetting (that keeps them and sends them), or [`Phone::forget_desktop_dropping_unsent`].
    pub async fn forget_desktop(&self) -> Result<(), PhoneError> {
        let count = self.unsent_count()?;
        if count > 0 {
            return Err(PhoneError::Unsent { count });
        }
        self.forget_desktop_dropping_unsent().await
    }

    /// Forgets the home desktop and its workspace even when some of this phone's writes have not
    /// reached it; those are dropped.
    pub async fn forget_desktop_dropping_unsent(&self) -> Result<(), PhoneError> {
        let node = self.node()?;
        node.forget_desktop().await?;
        lock(&self.inner.delivery).clear();
        self.inner.bump();
        Ok(())
    }

    /// Closes the connection, stops background work and flushes the database. Calls made
    /// afterwards fail with [`PhoneError::Closed`].
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let node = match self.inner.node.write() {
            Ok(mut n) => n.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some(mut node) = node else { return };
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        loop {
            match Arc::try_unwrap(node) {
                Ok(n) => return n.shutdown().await,
                Err(still_used) => {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(
                            "phone calls still running after {SHUTDOWN_WAIT:?}; the node shuts down in the background when they end"
                        );
                        // Not dropped by whichever call ends last (that would abort the
                        // endpoint without closing it): shut down once it is ours alone.
                        self.inner.runtime.spawn(async move {
                            let mut node = still_used;
                            loop {
                                match Arc::try_unwrap(node) {
                                    Ok(n) => return n.shutdown().await,
                                    Err(again) => node = again,
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        });
                        return;
                    }
                    node = still_used;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

impl Inner {
    fn node(&self) -> Result<Arc<Node>, PhoneError> {
        match self.node.read() {
            Ok(n) => n.clone(),
            Err(p) => p.into_inner().clone(),
        }
        .ok_or(PhoneError::Closed)
    }

    /// One local change to document `key`, durable when this returns, accounted for by
    /// [`Inner::quiet`].
    async fn write<R>(
        &self,
        node: &Node,
        key: &DocKey,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<R, SchemaError>,
    ) -> Result<R, PhoneError> {
        lock(&self.writes).in_flight += 1;
        let r = node.write_doc(key, f).await;
        let mut w = lock(&self.writes);
        w.in_flight -= 1;
        w.last_done = std::time::Instant::now();
        Ok(r?)
    }

    /// No write of this phone is under way or so recent that the session's "in sync" could
    /// predate it.
    fn quiet(&self) -> bool {
        let w = lock(&self.writes);
        w.in_flight == 0 && w.last_done.elapsed() >= SETTLE
    }

    fn bump(&self) {
        self.updates.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The session said "in sync" with `desktop` after `heads` were read: the desktop holds
    /// everything up to them. Returns whether that moved any document's known heads.
    fn in_sync_at(&self, heads: &[(DocKey, Vec<ChangeHash>)], desktop: DeviceId) -> bool {
        let mut trackers = lock(&self.delivery);
        let mut moved = false;
        for (key, h) in heads {
            let t = tracker(&mut trackers, key, Some(desktop));
            if t.in_sync_heads != *h {
                t.in_sync_heads = h.clone();
                moved = true;
            }
        }
        moved
    }

    fn snapshot(&self, node: &Node) -> PhoneSnapshot {
        let taken_at = self.clock.now_unix_ms();
        let me = self.id.to_string();
        let home = node.home().or_else(|| node.revoked_home());
        let offset = home.as_ref().and_then(|(_, r)| r.clock_offset_ms);
        // Every instant shown is the desktop's: it alone decides expiry.
        let now = taken_at.saturating_add(offset.unwrap_or(0));
        let in_desktop_time = |p: Presence| match p {
            Presence::Connected { since } => Presence::Connected {
                since: since.saturating_add(offset.unwrap_or(0)),
            },
            Presence::LastSeen { at } => Presence::LastSeen {
                at: at.saturating_add(offset.unwrap_or(0)),
            },
            Presence::Never => Presence::Never,
        };
        let view = home.as_ref().and_then(|(id, _)| home_view(node, id));
        let desktop_id = home.as_ref().map(|(id, _)| *id);
        let mut ws = node.read(|doc| Workspace::read(doc).ok());
        // The conversation across its loaded documents, oldest week first, with which of this
        // phone's messages the desktop is not known to hold.
        let mut undelivered = HashSet::new();
        let mut message_ids = Vec::new();
        if let Some(ws) = ws.as_mut() {
            let mut trackers = lock(&self.delivery);
            for key in node.conversation_docs() {
                node.read_doc(&key, |doc| {
                    if key != DocKey::WORKSPACE
                        && let Err(e) = ws.add_conversation(doc)
                    {
                        ws.skipped.push(format!("document {key}: {e}"));
                        return;
                    }
                    message_ids.extend(message_changes(doc));
                    let t = tracker(&mut trackers, &key, desktop_id);
                    t.scan(doc);
                    if t.desktop.is_some() {
                        undelivered.extend(t.undelivered(doc, &self.id));
                    }
                });
            }
        }

        let reach = node.home_addrs().map(|(_, to)| to).unwrap_or_default();
        let desktop = home.map(|(id, record)| {
            let health = ws.as_ref().map(|w| DesktopHealth {
                os: w.desktop.os.clone(),
                heartbeat_at: w.desktop.heartbeat_at,
                heartbeat_age_ms: (now - w.desktop.heartbeat_at).max(0),
                executor: w.desktop.executor,
            });
            let revoked_at = record.revoked_at;
            DesktopStatus {
                id,
                revoked_at,
                name: ws
                    .as_ref()
                    .map(|w| w.desktop.name.clone())
                    .unwrap_or(record.name),
                presence: view
                    .as_ref()
                    .map_or(Presence::Never, |v| in_desktop_time(v.presence)),
                clock_offset_ms: offset,
                in_sync: view.as_ref().is_some_and(|v| v.in_sync),
                last_error: view.and_then(|v| v.last_error),
                health,
                addrs: reach.addrs.iter().map(|a| a.to_string()).collect(),
                relay: reach.relay.clone(),
            }
        });
        let Some(ws) = ws else {
            return PhoneSnapshot {
                device_id: self.id,
                device_name: self.name.clone(),
                syncing: self.syncing.load(Ordering::SeqCst),
                workspace: node.doc_id(),
                workspace_received: false,
                desktop,
                messages: Vec::new(),
                tasks: Vec::new(),
                pending_approvals: Vec::new(),
                resolved_approvals: Vec::new(),
                devices: Vec::new(),
                older_weeks: 0,
                taken_at,
                desktop_now: now,
            };
        };

        let my_message_tasks: HashSet<String> = ws
            .messages
            .iter()
            .filter(|m| m.author == me)
            .map(|m| format!("m-{}", m.id))
            .collect();
        let messages = ws
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mine = m.author == me;
                let pending = mine
                    && match message_ids.get(i) {
                        Some(Some(h)) => undelivered.contains(h),
                        _ => desktop.is_some(),
                    };
                PhoneMessage {
                    message: m.clone(),
                    mine,
                    delivery: if pending {
                        Delivery::Pending
                    } else {
                        Delivery::Synced
                    },
                }
            })
            .collect();

        let mut pending_approvals = Vec::new();
        let mut resolved_approvals = Vec::new();
        for a in ws.approvals.values() {
            let status = match &a.resolution {
                Some(r) => ApprovalState::Resolved(r.clone()),
                None if now >= a.expires_at => ApprovalState::Expired,
                None => ApprovalState::Pending,
            };
            let my_verdict = a.decisions.get(&me).map(|d| d.verdict);
            let view = PhoneApproval {
                too_late: my_verdict.is_some()
                    && a.resolution.as_ref().is_some_and(|r| !r.counted(&me)),
                expires_in_ms: a.expires_at - now,
                my_verdict,
                verified: desktop.as_ref().is_some_and(|d| a.hash_matches(&d.id)),
                status,
                approval: a.clone(),
            };
            if view.status == ApprovalState::Pending {
                pending_approvals.push(view);
            } else {
                resolved_approvals.push(view);
            }
        }
        pending_approvals.sort_by_key(|a| a.approval.requested_at);
        resolved_approvals.sort_by_key(|a| a.approval.requested_at);

        let mut tasks: Vec<PhoneTask> = ws
            .tasks
            .values()
            .map(|t| PhoneTask {
                mine: t.created_by == me || my_message_tasks.contains(t.id.as_str()),
                waiting_for: pending_approvals
                    .iter()
                    .filter(|a| a.approval.task_id == t.id)
                    .map(|a| a.approval.id.clone())
                    .collect(),
                task: t.clone(),
            })
            .collect();
        tasks.sort_by(|a, b| Workspace::display_order(&a.task, &b.task));
        let mut devices: Vec<PhoneDevice> = ws
            .devices
            .iter()
            .map(|(id, d)| PhoneDevice {
                this_device: *id == me,
                id: id.clone(),
                name: d.name.clone(),
                platform: d.platform.clone(),
                paired_at: d.paired_at,
                revoked_at: d.revoked_at,
            })
            .collect();
        devices.sort_by(|a, b| (a.paired_at, &a.id).cmp(&(b.paired_at, &b.id)));

        PhoneSnapshot {
            device_id: self.id,
            device_name: self.name.clone(),
            syncing: self.syncing.load(Ordering::SeqCst),
            workspace: node.doc_id(),
            workspace_received: true,
            desktop,
            messages,
            tasks,
            pending_approvals,
            resolved_approvals,
            devices,
            older_weeks: u32::try_from(node.older_weeks().len()).unwrap_or(u32::MAX),
            taken_at,
            desktop_now: now,
        }
    }
}

/// One of this phone's writes found in a set-aside single-document workspace.
enum LegacyWrite {
    Message(Message),
    Task(Task),
    Cancel(deskhand_core::TaskId),
    Decision(
        deskhand_core::ids::ApprovalId,
        deskhand_core::approval::Decision,
    ),
}

/// How long the rewrite of a set-aside workspace waits for the weeks it writes into.
const LEGACY_SYNC: Duration = Duration::from_secs(60);

impl Inner {
    /// The single-document workspace this phone held before the update (set aside when it
    /// opened, see `Node::has_legacy`) may hold writes of this phone's the desktop never
    /// received: messages, tasks, cancel requests and decisions. Each belongs to the week the
    /// desktop's own split put it in (`SplitPlan`'s rules, so the same week); once those weeks
    /// are loaded and in sync with the desktop, every such write missing there (by id) is written
    /// again, and the old document is dropped. Returns how many were written again.
    async fn rewrite_legacy(&self, node: &Node) -> Result<usize, PhoneError> {
        use deskhand_core::conversation::SplitPlan;
        let workspace = node.doc_id().ok_or(PhoneError::NotSynced)?;
        node.open_doc(&DocKey::LEGACY, Automerge::new).await?;
        let me = self.id.to_string();
        let writes = node
            .read_doc(&DocKey::LEGACY, |v1| {
                let (Ok(plan), Ok(ws)) = (SplitPlan::new(v1, &workspace), Workspace::read(v1))
                else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                for m in ws.messages.iter().filter(|m| m.author == me) {
                    if let Some(w) = plan.message_week(m.id.as_str()) {
                        out.push((w, LegacyWrite::Message(m.clone())));
                    }
                }
                for (id, t) in &ws.tasks {
                    let Some(w) = plan.task_week(id) else {
                        continue;
                    };
                    if t.created_by == me {
                        out.push((w, LegacyWrite::Task(t.clone())));
                    }
                    if t.cancel_requested_by.as_deref() == Some(me.as_str()) {
                        out.push((w, LegacyWrite::Cancel(t.id.clone())));
                    }
                }
                for (id, a) in &ws.approvals {
                    if let (Some(w), Some(d)) = (plan.approval_week(id), a.decisions.get(&me)) {
                        out.push((w, LegacyWrite::Decision(a.id.clone(), d.clone())));
                    }
                }
                out
            })
            .unwrap_or_default();
        // Their weeks, loaded and in sync with the desktop: what it holds is known.
        let mut keys = HashMap::new();
        for (week, _) in &writes {
            if !keys.contains_key(week) {
                keys.insert(*week, node.open_week(*week).await?);
            }
        }
        if !writes.is_empty() {
            let (home, _) = node.home().ok_or(PhoneError::NotPaired)?;
            let deadline = tokio::time::Instant::now() + LEGACY_SYNC;
            loop {
                if home_view(node, &home).is_some_and(|v| v.in_sync) && self.quiet() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(PhoneError::Unreachable {
                        reason: "the weeks of the writes made before the update did not sync"
                            .into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut written = 0;
        let me_id = self.id;
        for (week, w) in writes {
            let Some(key) = keys.get(&week) else { continue };
            let missing = node
                .read_doc(key, |d| match &w {
                    LegacyWrite::Message(m) => !Workspace::messages_from(d, 0)
                        .is_ok_and(|ms| ms.iter().any(|x| x.id == m.id)),
                    LegacyWrite::Task(t) => !matches!(Workspace::task(d, &t.id), Ok(Some(_))),
                    LegacyWrite::Cancel(id) => matches!(Workspace::task(d, id),
                        Ok(Some(t)) if !t.status.is_final() && t.cancel_requested_by.as_deref() != Some(me.as_str())),
                    LegacyWrite::Decision(id, _) => matches!(Workspace::approval(d, id),
                        Ok(Some(a)) if a.resolution.is_none() && !a.decisions.contains_key(&me)),
                })
                .unwrap_or(false);
            if !missing {
                continue;
            }
            self.write(node, key, |tx| match &w {
                LegacyWrite::Message(m) => Workspace::append_message(tx, m),
                LegacyWrite::Task(t) => Workspace::add_task(tx, t),
                LegacyWrite::Cancel(id) => Workspace::request_cancel(tx, id, &me_id),
                LegacyWrite::Decision(id, d) => Workspace::put_decision(tx, id, &me_id, d),
            })
            .await?;
            written += 1;
        }
        node.drop_legacy().await?;
        tracing::info!(
            written,
            "wrote this phone's writes of before the update into their weeks"
        );
        Ok(written)
    }
}

/// Samples presence (which the node does not announce) and the "in sync" flag, and tells
/// subscribers when anything a snapshot shows changed.
async fn monitor(inner: std::sync::Weak<Inner>, cancel: CancellationToken) {
    let mut changes = match inner.upgrade().and_then(|i| i.node().ok()) {
        Some(n) => n.subscribe(),
        None => return,
    };
    let mut last_seen: Option<(Presence, bool, Option<String>)> = None;
    loop {
        let doc_changed = tokio::select! {
            _ = cancel.cancelled() => return,
            r = changes.changed() => { if r.is_err() { return } true }
            _ = tokio::time::sleep(PRESENCE_TICK) => false,
        };
        let Some(inner) = inner.upgrade() else { return };
        let Ok(node) = inner.node() else { return };
        let heads = heads_of(&node, &written_docs(&node));
        let view = node.home().and_then(|(id, _)| home_view(&node, &id));
        let now_seen = view
            .as_ref()
            .map(|v| (v.presence, v.in_sync, v.last_error.clone()));
        let mut changed = doc_changed || now_seen != last_seen;
        last_seen = now_seen;
        // Heads read before the flag: whatever they hold, the desktop holds too when the session
        // says "in sync" and no own write could be newer than that verdict.
        if let Some(v) = view.as_ref().filter(|v| v.in_sync)
            && inner.quiet()
            && inner.in_sync_at(&heads, v.id)
        {
            changed = true;
        }
        if view.as_ref().is_some_and(|v| v.in_sync)
            && node.has_legacy()
            && !inner.legacy_busy.swap(true, Ordering::SeqCst)
        {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(async move {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(node) = inner.node() else { return };
                if let Err(e) = inner.rewrite_legacy(&node).await {
                    tracing::warn!("the writes of before the update wait for the next sync: {e}");
                }
                inner.legacy_busy.store(false, Ordering::SeqCst);
                inner.bump();
            });
        }
        if changed {
            inner.bump();
        }
    }
}

fn home_view(node: &Node, home: &DeviceId) -> Option<PeerView> {
    node.peers().into_iter().find(|p| &p.id == home)
}

/// Whether a session error means the desktop will not have this phone (no point retrying).
/// [`PhoneError::Revoked`] when the home desktop revoked this phone, else
/// [`PhoneError::NotPaired`].
fn not_paired(node: &Node) -> PhoneError {
    match node.revoked_home() {
        Some((_, record)) => PhoneError::Revoked {
            name: record.name,
            at: record.revoked_at.unwrap_or_default(),
        },
        None => PhoneError::NotPaired,
    }
}

fn refused(error: &str) -> bool {
    error.contains("revoked") || error.contains("not paired") || error.contains("refused")
}

/// The change that created each message (by list index).
fn message_changes(doc: &Automerge) -> Vec<Option<ChangeHash>> {
    let Ok(Some((automerge::Value::Object(ObjType::List), list))) = doc.get(ROOT, "messages")
    else {
        return Vec::new();
    };
    doc.list_range(&list, ..)
        .map(|item| doc.hash_for_opid(&item.id()))
        .collect()
}

/// The text of a message or task as a phone may write it: not blank, and at most
/// [`MAX_TEXT_BYTES`](deskhand_core::trust::MAX_TEXT_BYTES) (the desktop refuses more).
fn non_empty(text: &str, what: &str) -> Result<String, PhoneError> {
    if text.trim().is_empty() {
        return Err(PhoneError::Invalid {
            reason: format!("{what} cannot be empty"),
        });
    }
    let max = deskhand_core::trust::MAX_TEXT_BYTES;
    if text.len() > max {
        return Err(PhoneError::Invalid {
            reason: format!(
                "{what} of {} KiB is too long: the limit is {} KiB; put long text in a file on the desktop and refer to it",
                text.len().div_ceil(1024),
                max / 1024
            ),
        });
    }
    Ok(text.to_owned())
}

fn past(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approved",
        Verdict::Deny => "denied",
    }
}
