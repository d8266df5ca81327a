//! A device: store, document, endpoint, and the sync drivers of its peers.
//!
//! Ordering rules that make durability hold:
//! - Every document change (local or received) is turned into one incremental chunk and queued
//!   to the store *while the document lock is held*, so chunks reach the store in the order of
//!   the changes, and a compaction snapshot (also queued under the lock) covers every chunk
//!   queued before it.
//! - While any change of this device's own is not yet durable, every session is held: nothing a
//!   device wrote is sent before it is stored. A change received from a peer is relayed to the
//!   other peers at once (its author's signature proves it, so if this device loses it in a
//!   crash, any peer can hand it back); the session it came from is held until it is durable, so
//!   the sender is told "I have it" only once it is on disk.
//! - [`Node::write`] returns only once the change is durable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use automerge::{ActorId, Automerge, transaction::Transaction};
use deskhand_core::authorship::{SignatureBook, Signed};
use deskhand_core::conversation::{ConversationWeek, conversation_doc_id, conversation_genesis};
use deskhand_core::durability::{Durability, StoreWrite};
use deskhand_core::hub::{DocHub, HubOutput, StreamId};
use deskhand_core::ids::ApprovalId;
use deskhand_core::schema::DeviceEntry;
use deskhand_core::schema::{DesktopAddrs, DesktopInfo, ExecutorState, SchemaError, Workspace};
use deskhand_core::session::SessionStats;
use deskhand_core::session::{REVOKED_REASON, close_code};
use deskhand_core::trust::{AcceptAll, ChangeFilter, PhoneWriteRules, Standing};
use deskhand_core::{
    DeviceId, DeviceKey, DocId, PAIR_ALPN, PairingPayload, PairingToken, SYNC_ALPN, SYNC_ALPN_V1,
    SYNC_ALPN_V2, SYNC_ALPN_V3, TaskId,
};

use crate::pairing::PairError;
use iroh::Endpoint;
use iroh::protocol::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::RelaySetting;
use crate::endpoint::{self, EndpointError, NetConfig};
use crate::presence::{Clock, Presence, SystemClock};
use crate::store::{DocKey, Store, StoreError, StoreThread, WriteOp};

mod handles;
mod layout;

/// Give up a connection attempt after this long (iroh's own timeout is ~30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A dial woken (`sync_now`) while connecting starts over only once it is this old.
const RESTART_MIN_AGE: Duration = Duration::from_millis(300);
/// How long a shutdown waits for each step (sessions, router, endpoint) before moving on.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the endpoint gets to close when a dial was abandoned mid-handshake (see
/// `Shared::abandoned_dial`): long enough for the goodbyes of sessions that did run.
const ABANDONED_DIAL_GRACE: Duration = Duration::from_millis(250);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the desktop lets a burst of address changes settle before publishing them.
const ADDRS_SETTLE: Duration = Duration::from_millis(500);
/// The metadata key of the port a node keeps across restarts (`NetConfig::keep_port`).
const LISTEN_PORT_KEY: &str = "listen_port";

/// What kind of device this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// The hub: creates the document, accepts registered phones, relays between them.
    Desktop {
        /// Human name shown on phones.
        name: String,
    },
    /// A remote: starts empty, dials its home desktop.
    Phone,
}

/// A paired device (desktop registry) or the home desktop (phone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Human name.
    pub name: String,
    /// Platform (`ios`, `android`, `terminal`, `desktop`).
    pub platform: String,
    /// When it was paired (unix ms).
    pub paired_at: i64,
    /// When it was revoked, if it was (unix ms).
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// When a session with it last ended (unix ms).
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// Where to dial it (the home desktop's direct addresses, from the pairing code).
    #[serde(default)]
    pub addrs: Vec<SocketAddr>,
    /// Its wall clock minus ours (milliseconds), as learned from its last hello or pairing
    /// answer: a phone adds it to its own clock to show times in the desktop's clock.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    /// The relay the home desktop named in its pairing code, if any.
    #[serde(default)]
    pub relay: Option<String>,
}

/// Settings of a node.
#[derive(Clone)]
pub struct NodeConfig {
    /// Directory holding the database file (created 0700 if missing).
    pub data_dir: PathBuf,
    /// Desktop or phone.
    pub role: NodeRole,
    /// Network settings.
    pub net: NetConfig,
    /// Vets peers' changes before they enter the document (desktop: phone-write rules).
    pub filter: Arc<dyn ChangeFilter>,
    /// The device key, when the platform keeps it (Keychain, Keystore). `None`: the key is
    /// created on first open and kept in the database (desktop, terminal phone).
    pub key: Option<DeviceKey>,
    /// The wall clock this device reads (the system's, or a skewed one in tests).
    pub clock: Arc<dyn Clock>,
}

impl NodeConfig {
    /// A config with default network settings. A desktop vets phones' changes with
    /// [`PhoneWriteRules`]; a phone accepts what its desktop relays.
    pub fn new(data_dir: impl Into<PathBuf>, role: NodeRole) -> Self {
        let filter: Arc<dyn ChangeFilter> = match role {
            NodeRole::Desktop { .. } => Arc::new(PhoneWriteRules),
            NodeRole::Phone => Arc::new(AcceptAll),
        };
        Self {
            data_dir: data_dir.into(),
            role,
            net: NetConfig::default(),
            filter,
            key: None,
            clock: Arc::new(SystemClock),
        }
    }
    /// Reads wall time from `clock` (tests give a phone a skewed clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Uses a key held by the platform; it is never written to the database.
    pub fn with_key(mut self, key: DeviceKey) -> Self {
        self.key = Some(key);
        self
    }
    /// Sets the network settings.
    pub fn with_net(mut self, net: NetConfig) -> Self {
        self.net = net;
        self
    }
    /// Sets the change filter.
    pub fn with_filter(mut self, filter: Arc<dyn ChangeFilter>) -> Self {
        self.filter = filter;
        self
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored document does not load.
    #[error(
        "the workspace document stored in {path} is damaged: {reason}. The file was left untouched"
    )]
    CorruptDocument {
        /// The database file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data directory is unusable.
    #[error("cannot use the data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The document refused the operation.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Networking could not start.
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    /// The operation is for the other role.
    #[error("{0}")]
    WrongRole(&'static str),
    /// The node is shutting down.
    #[error("the node is shut down")]
    ShutDown,
    /// The key handed in belongs to another device than the data directory.
    #[error(
        "the data directory {path} belongs to device {stored}, but the key provided is for device {provided}; use that device's key or another data directory"
    )]
    KeyMismatch {
        /// The data directory.
        path: PathBuf,
        /// The device the directory belongs to.
        stored: String,
        /// The device of the key provided.
        provided: String,
    },
    /// A blob operation failed.
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
    /// The document is not loaded ([`Node::open_doc`] loads it).
    #[error("document {0} is not loaded")]
    NotLoaded(DocKey),
    /// The device does not know its workspace yet (a phone before pairing).
    #[error("this device holds no workspace yet")]
    NoWorkspace,
    /// A time no week can be given for.
    #[error(transparent)]
    Week(#[from] deskhand_core::conversation::WeekError),
}

/// One loaded document with what makes its durability rules hold (see the module docs): each
/// document has its own lock, chunks, signatures and failure state, so a session of one document
/// never waits on another's.
pub(crate) struct DocState {
    /// Where it is stored.
    pub(crate) key: DocKey,
    pub(crate) doc: Automerge,
    /// The document's id, when known (the workspace document: the workspace's id).
    pub(crate) doc_id: Option<DocId>,
    /// The week whose conversation it holds, for a week's document.
    pub(crate) week: Option<ConversationWeek>,
    /// Per actor, the signature of its latest change held here (sent with the changes).
    pub(crate) book: SignatureBook,
    /// The document's sync sessions and storage state, with the durability rules between them
    /// ([`DocHub`]).
    pub(crate) hub: DocHub,
    /// Where the frames of each of `hub`'s sessions go: the stream's driver writes them.
    pub(crate) outboxes: HashMap<StreamId, mpsc::UnboundedSender<deskhand_core::Frame>>,
}

/// A loaded document, shared by the sessions and writers that use it.
pub(crate) type DocHandle = Arc<Mutex<DocState>>;

/// A loaded document in the node's map, with when it was last used ([`Shared::now_ms`]): opened,
/// written, or looked up for a task or an approval. Reads do not count (the executor reads every
/// loaded document at each change).
pub(crate) struct Loaded {
    pub(crate) handle: DocHandle,
    pub(crate) used_ms: u64,
}

/// The document ids of a workspace's weeks (`conversation_doc_id`), from 1970-W01 (where the
/// split puts items without a time) up to the week after this device's now: the documents a
/// peer may open a stream for. Derived ids cannot be reversed, so they are listed; about 3,000
/// SHA-256 digests, worked out once and extended as time goes on.
#[derive(Default)]
struct WeekIds {
    /// The workspace they are of.
    workspace: Option<DocId>,
    /// The last week listed.
    upto: Option<ConversationWeek>,
    by_id: HashMap<DocId, ConversationWeek>,
}

impl WeekIds {
    /// The week whose document is `id` in `workspace`, listing weeks up to `last` first.
    fn week_of(
        &mut self,
        workspace: DocId,
        last: ConversationWeek,
        id: &DocId,
    ) -> Option<ConversationWeek> {
        if self.workspace != Some(workspace) {
            *self = WeekIds {
                workspace: Some(workspace),
                ..WeekIds::default()
            };
        }
        let mut next = match self.upto {
            Some(w) => w.next(),
            None => Some(ConversationWeek::FIRST),
        };
        while let Some(week) = next.filter(|w| *w <= last) {
            self.by_id
                .insert(conversation_doc_id(&workspace, week), week);
            self.upto = Some(week);
            next = week.next();
        }
        self.by_id.get(id).copied()
    }
}

impl DocState {
    /// The document `stored` holds (`None`: nothing is stored under `key` yet, and it starts as
    /// `genesis`), written from now on by a fresh actor of `device`.
    fn from_stored(
        key: DocKey,
        stored: Option<crate::store::LoadedDoc>,
        genesis: impl FnOnce() -> Automerge,
        device: &DeviceId,
        path: &Path,
    ) -> Result<DocState, NodeError> {
        let corrupt = |reason: String| NodeError::CorruptDocument {
            path: path.to_owned(),
            reason: format!("document {key}: {reason}"),
        };
        let is_stored = stored.is_some();
        let (mut doc, chunks, signatures) = match stored {
            Some(stored) => (
                stored.load().map_err(|e| corrupt(e.to_string()))?,
                stored.chunks.len(),
                stored.signatures,
            ),
            None => (genesis(), 0, Vec::new()),
        };
        // A fresh actor for every run: a data directory restored from a backup must never
        // write a second change under a sequence number its lost changes already used.
        doc.set_actor(device.session_actor(random_bytes()));
        let mut book = SignatureBook::new();
        for (actor, bytes) in &signatures {
            match (
                hex::decode(actor).ok().map(ActorId::from),
                Signed::from_bytes(bytes),
            ) {
                (Some(actor), Some(signed)) => {
                    book.insert(actor, signed);
                }
                _ => {
                    tracing::warn!(path = %path.display(), document = %key, "skipping an unreadable change signature of {actor:?}")
                }
            }
        }
        // A new document (its genesis, if any) is stored with its first change.
        let durability = Durability::new(is_stored.then(|| doc.get_heads()), chunks);
        Ok(DocState {
            week: None,
            doc_id: key.doc_id(),
            key,
            doc,
            book,
            hub: DocHub::new(durability),
            outboxes: HashMap::new(),
        })
    }
}

/// Counters of one peer across sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// Sessions opened.
    pub sessions: u64,
    /// Bytes sent over all ended sessions.
    pub bytes_sent: u64,
    /// Bytes received over all ended sessions.
    pub bytes_received: u64,
    /// Bytes sent in the current (live) or last session.
    pub last_session_sent: u64,
    /// Bytes received in the last session.
    pub last_session_received: u64,
}

struct PeerEntry {
    record: PeerRecord,
    presence: Presence,
    live: Option<(u64, CancellationToken)>,
    stats: PeerStats,
    last_error: Option<String>,
    /// Per document of the live connection: its stream's byte counts and whether both sides
    /// hold the same changes of it.
    streams: HashMap<DocKey, (SessionStats, bool)>,
    /// Phone: the live connection has not yet brought the desktop's first catalog (so which
    /// weeks to sync is not known yet).
    awaiting_catalog: bool,
}

impl PeerEntry {
    fn new(record: PeerRecord, presence: Presence) -> Self {
        PeerEntry {
            record,
            presence,
            live: None,
            stats: PeerStats::default(),
            last_error: None,
            streams: HashMap::new(),
            awaiting_catalog: false,
        }
    }
    /// Connected, the weeks to sync are known, and every document it syncs is in sync.
    fn in_sync(&self) -> bool {
        self.live.is_some()
            && !self.awaiting_catalog
            && !self.streams.is_empty()
            && self.streams.values().all(|(_, s)| *s)
    }
}

/// A peer as shown to the user.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    /// Device id.
    pub id: DeviceId,
    /// Registry record.
    pub record: PeerRecord,
    /// Reachability.
    pub presence: Presence,
    /// Byte counters.
    pub stats: PeerStats,
    /// Why the last session ended badly, if it did.
    pub last_error: Option<String>,
    /// Connected, and both sides hold the same changes of every document they sync.
    pub in_sync: bool,
}

pub(crate) struct Shared {
    pub(crate) id: DeviceId,
    /// Signs this device's changes as they are made.
    key: DeviceKey,
    role: NodeRole,
    /// The workspace's document: the one the sync sessions run on.
    main: DocHandle,
    /// Every loaded document by key, `main` too. A document is loaded when first used
    /// ([`Node::open_doc`]); the desktop unloads week documents nobody uses
    /// ([`Shared::unload_idle_weeks`]).
    docs: Mutex<HashMap<DocKey, Loaded>>,
    store: Store,
    /// Bumped when a document was loaded ([`Shared::open_doc`]): a phone opens its stream.
    pub(crate) opened: watch::Sender<u64>,
    /// The ids of this workspace's week documents, as far as they were worked out.
    weeks: Mutex<WeekIds>,
    /// Bumped when the document changed (local: once durable; received: once applied).
    changed: watch::Sender<u64>,
    peers: Mutex<HashMap<DeviceId, PeerEntry>>,
    /// Automerge sync state per (peer, document), as last persisted.
    sync_states: Mutex<HashMap<(DeviceId, DocKey), Vec<u8>>>,
    pub(crate) filter: Arc<dyn ChangeFilter>,
    origin: Instant,
    clock: Arc<dyn Clock>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Names the next sync session in its document's hub ([`StreamId`]).
    pub(crate) next_stream: std::sync::atomic::AtomicU64,
    wake_dialer: Notify,
    path: PathBuf,
    codes: Mutex<crate::pairing::Codes>,
    relay: crate::RelaySetting,
    /// Local-network discovery is on.
    mdns: bool,
    paused: std::sync::atomic::AtomicBool,
    /// A dial was given up while its QUIC handshake was still in flight. The endpoint would wait
    /// for that attempt to time out (seconds) before it counts as closed; nobody waits for a
    /// goodbye on it, so shutdown does not either.
    abandoned_dial: std::sync::atomic::AtomicBool,
    /// Bumped by `sync_now`: live sessions probe their peer.
    pub(crate) probe: watch::Sender<u64>,
    /// Phone: the addresses its desktop last announced on the local network (mDNS), when they
    /// changed. A session whose path is not among them ends, and the dialer redials at once.
    pub(crate) lan_sighting: watch::Sender<Option<LanSighting>>,
    /// What is known of each week's document without loading it (`layout::WeekInfo`).
    infos: Mutex<std::collections::BTreeMap<ConversationWeek, layout::WeekInfo>>,
    /// Bumped when a week's document was stored: catalogs may have changed.
    pub(crate) catalog_gen: watch::Sender<u64>,
    /// Phone: the weeks the desktop announced that are not loaded here, newest first.
    older: Mutex<Vec<ConversationWeek>>,
    /// Phone: the desktop's last catalog.
    desktop_catalog: Mutex<Option<deskhand_core::catalog::Catalog>>,
    /// Phone: a single-document workspace of before the update is set aside (`DocKey::LEGACY`).
    legacy: std::sync::atomic::AtomicBool,
}

/// A peer's addresses as it announced them on the local network (mDNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LanSighting {
    /// Whose they are.
    pub(crate) peer: DeviceId,
    /// Its direct addresses.
    pub(crate) addrs: std::collections::BTreeSet<SocketAddr>,
}

/// Locks `m`, also when a panic poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug; the data it guards is still consistent
    // (every mutation is a single assignment), so keep going rather than cascade.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
    /// Wall-clock Unix milliseconds by this device's clock.
    pub(crate) fn wall_ms(&self) -> i64 {
        self.clock.now_unix_ms()
    }
    /// A peer's hello told its clock: keep `peer − ours`, and store it when it moved by more
    /// than a second (so an offline phone still shows desktop times).
    pub(crate) fn set_clock_offset(&self, peer: &DeviceId, offset_ms: i64) {
        let record = {
            let mut peers = lock(&self.peers);
            let Some(entry) = peers.get_mut(peer) else {
                return;
            };
            let moved = entry
                .record
                .clock_offset_ms
                .is_none_or(|o| (o - offset_ms).abs() > 1_000);
            if !moved {
                return;
            }
            entry.record.clock_offset_ms = Some(offset_ms);
            entry.record.clone()
        };
        self.put_peer_record(peer, &record);
    }
    pub(crate) fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_millis(ms))
    }
    /// Locks the workspace's document.
    pub(crate) fn lock_doc(&self) -> MutexGuard<'_, DocState> {
        lock(&self.main)
    }
    /// Every loaded document.
    pub(crate) fn loaded(&self) -> Vec<DocHandle> {
        lock(&self.docs)
            .values()
            .map(|l| l.handle.clone())
            .collect()
    }
    /// The document a peer's stream asks for by `id`, loaded (or started from its genesis):
    /// one of this workspace's week documents, up to the week after now by this device's
    /// clock.
    ///
    /// # Errors
    /// What to tell the peer: the id is the workspace's own (it syncs on the connection's
    /// first stream), not one of this workspace's documents, or the document does not load.
    pub(crate) async fn stream_doc(&self, id: DocId) -> Result<DocHandle, String> {
        let workspace = lock(&self.main)
            .doc_id
            .ok_or("this device holds no workspace yet")?;
        if id == workspace {
            return Err(
                "the workspace's document syncs on the connection's first stream, not on another"
                    .into(),
            );
        }
        let last = ConversationWeek::of_unix_ms(self.wall_ms())
            .ok()
            .and_then(ConversationWeek::next)
            .ok_or("this device's clock is outside the years a week can name")?;
        let week = lock(&self.weeks)
            .week_of(workspace, last, &id)
            .ok_or_else(|| {
                format!("document {id} is not one of this workspace's, up to the week after now")
            })?;
        self.open_week(workspace, week)
            .await
            .map_err(|e| format!("document {id} ({}) does not load here: {e}", week.label()))
    }

    /// The conversation document of `week` in `workspace`, loaded (or started from its
    /// genesis).
    pub(crate) async fn open_week(
        &self,
        workspace: DocId,
        week: ConversationWeek,
    ) -> Result<DocHandle, NodeError> {
        self.open_doc(
            &DocKey::of(&conversation_doc_id(&workspace, week)),
            || conversation_genesis(&workspace, week),
            Some(week),
        )
        .await
    }

    /// The loaded documents that hold the conversation, oldest first: the workspace's own
    /// document while it is a single-document workspace (schema 1), else the loaded week
    /// documents.
    pub(crate) fn conversation_docs(&self) -> Vec<DocHandle> {
        if Workspace::is_single(&lock(&self.main).doc) {
            return vec![self.main.clone()];
        }
        let mut weeks: Vec<(ConversationWeek, DocHandle)> = self
            .loaded()
            .into_iter()
            .filter_map(|h| {
                let week = lock(&h).week?;
                Some((week, h))
            })
            .collect();
        weeks.sort_by_key(|(w, _)| *w);
        weeks.into_iter().map(|(_, h)| h).collect()
    }
    /// The workspace's document.
    pub(crate) fn main_doc(&self) -> DocHandle {
        self.main.clone()
    }
    /// The loaded document stored under `key`, if it is loaded.
    pub(crate) fn doc(&self, key: &DocKey) -> Option<DocHandle> {
        lock(&self.docs).get(key).map(|l| l.handle.clone())
    }
    /// Like [`Self::doc`], and records that it is in use now (it is not unloaded for a while).
    pub(crate) fn use_doc(&self, key: &DocKey) -> Option<DocHandle> {
        let now = self.now_ms();
        lock(&self.docs).get_mut(key).map(|l| {
            l.used_ms = now;
            l.handle.clone()
        })
    }
    /// The document stored under `key`, loaded from the store on first use; `genesis` makes
    /// it when nothing is stored under `key` yet. `week`: the week whose conversation it holds,
    /// set before any session or writer can reach it (its changes are stored with the week's
    /// `doc_info` record from the first one on).
    ///
    /// # Errors
    /// [`NodeError::Store`] if the store cannot read it; [`NodeError::CorruptDocument`] if it
    /// does not load.
    pub(crate) async fn open_doc(
        &self,
        key: &DocKey,
        genesis: impl FnOnce() -> Automerge,
        week: Option<ConversationWeek>,
    ) -> Result<DocHandle, NodeError> {
        if let Some(h) = self.use_doc(key) {
            return Ok(h);
        }
        // A document is unloaded only once all of it is stored, so what the store holds (read
        // after every write queued before) is all of it.
        let stored = self.store.load_doc(key).await?;
        let mut state = DocState::from_stored(key.clone(), stored, genesis, &self.id, &self.path)?;
        state.week = week;
        // Two callers may have loaded it at once: the first one in is kept.
        let now = self.now_ms();
        let handle = lock(&self.docs)
            .entry(key.clone())
            .or_insert_with(|| Loaded {
                handle: Arc::new(Mutex::new(state)),
                used_ms: now,
            })
            .handle
            .clone();
        self.opened.send_modify(|g| *g += 1);
        Ok(handle)
    }
    pub(crate) fn codes(&self) -> MutexGuard<'_, crate::pairing::Codes> {
        lock(&self.codes)
    }
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
    pub(crate) fn desktop_name(&self) -> String {
        match &self.role {
            NodeRole::Desktop { name } => name.clone(),
            NodeRole::Phone => String::new(),
        }
    }

    /// Adds or updates a registry record (durable), closing a revoked device's live session.
    pub(crate) async fn put_peer(&self, id: DeviceId, record: PeerRecord) -> Result<(), NodeError> {
        let json = serde_json::to_vec(&record).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.store
            .write(WriteOp::PutPeer(id.to_string(), json))
            .await?;
        {
            let mut peers = lock(&self.peers);
            let entry = peers
                .entry(id)
                .or_insert_with(|| PeerEntry::new(record.clone(), Presence::Never));
            entry.record = record;
            if entry.record.revoked_at.is_some()
                && let Some((_, t)) = entry.live.take()
            {
                t.cancel();
            }
        }
        self.wake_dialer.notify_one();
        Ok(())
    }
    /// Does what document `ds`'s hub asked for: frames to its sessions' outboxes, writes to
    /// the store in order (a tracked one reports back to the hub when stored, under the
    /// document's lock, and `done` hears the first one's outcome, or `Ok` at once when there
    /// is none), sync states, the document's id, clock offsets, and wake-ups of readers.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        ds: &mut DocState,
        outputs: Vec<HubOutput>,
        mut done: Option<oneshot::Sender<Result<(), StoreError>>>,
    ) {
        for o in outputs {
            match o {
                HubOutput::Send { stream, frame } => {
                    if let Some(outbox) = ds.outboxes.get(&stream) {
                        let _ = outbox.send(frame);
                    }
                }
                HubOutput::Store(StoreWrite::Signatures(signatures)) => self.store.queue(
                    WriteOp::PutSignatures(ds.key.clone(), signature_records(&signatures)),
                    None,
                ),
                HubOutput::Store(StoreWrite::Compact(bytes)) => self
                    .store
                    .queue(WriteOp::Compact(ds.key.clone(), bytes), None),
                HubOutput::Store(StoreWrite::Chunk {
                    ticket,
                    bytes,
                    snapshot,
                    signatures,
                }) => {
                    let op = if snapshot {
                        WriteOp::Compact(ds.key.clone(), bytes)
                    } else {
                        WriteOp::AppendChunk(ds.key.clone(), bytes)
                    };
                    let op = if signatures.is_empty() {
                        op
                    } else {
                        WriteOp::WithSignatures(
                            Box::new(op),
                            ds.key.clone(),
                            signature_records(&signatures),
                        )
                    };
                    let op = match ds.week {
                        Some(week) => WriteOp::Batch(vec![op, self.note_week_stored(ds, week)]),
                        None => op,
                    };
                    let me = Arc::downgrade(self);
                    let key = ds.key.clone();
                    let done = done.take();
                    self.store.queue(
                        op,
                        Some(Box::new(move |r| {
                            if let Some(me) = me.upgrade()
                                && let Some(handle) = me.doc(&key)
                            {
                                if let Err(e) = &r {
                                    // Saved again with the next chunk; the sessions wait.
                                    tracing::error!("a document change could not be stored: {e}");
                                }
                                let mut guard = lock(&handle);
                                let ds = &mut *guard;
                                let outputs = ds.hub.stored(
                                    ticket,
                                    r.is_ok(),
                                    &ds.doc,
                                    &ds.book,
                                    me.now_ms(),
                                );
                                me.dispatch(ds, outputs, None);
                            }
                            if let Some(d) = done {
                                let _ = d.send(r);
                            }
                        })),
                    );
                }
                HubOutput::PersistSyncState { peer, state } => {
                    self.persist_sync_state(&peer, &ds.key, state)
                }
                HubOutput::AdoptDocId(id) => self.adopt_doc_id(ds, id),
                HubOutput::PeerClockOffset { peer, offset_ms } => {
                    self.set_clock_offset(&peer, offset_ms)
                }
                HubOutput::Changed => self.changed.send_modify(|g| *g += 1),
            }
        }
        if let Some(d) = done {
            let _ = d.send(Ok(()));
        }
    }

    /// The sync state last persisted for `peer` on document `doc`.
    pub(crate) fn sync_state(&self, peer: &DeviceId, doc: &DocKey) -> Option<Vec<u8>> {
        lock(&self.sync_states).get(&(*peer, doc.clone())).cloned()
    }

    pub(crate) fn persist_sync_state(&self, peer: &DeviceId, doc: &DocKey, state: Vec<u8>) {
        self.store.queue(
            WriteOp::PutSyncState {
                peer: peer.to_string(),
                doc: doc.clone(),
                state: state.clone(),
            },
            None,
        );
        lock(&self.sync_states).insert((*peer, doc.clone()), state);
    }

    /// Learns the id of document `ds` from a peer (its hello or the pairing answer). The
    /// workspace document's id is the workspace's, kept in the meta table.
    pub(crate) fn adopt_doc_id(&self, ds: &mut DocState, id: DocId) {
        if ds.doc_id.is_none() {
            ds.doc_id = Some(id);
            if ds.key == DocKey::WORKSPACE {
                self.store
                    .queue(WriteOp::PutMeta("doc_id", id.as_bytes().to_vec()), None);
            }
        }
    }

    /// How this device stands to `device`, the author of changes it receives: itself, a
    /// paired and unrevoked device, or a stranger.
    pub(crate) fn standing_of(&self, device: &DeviceId) -> Standing {
        if *device == self.id {
            Standing::Local
        } else if self.is_allowed(device) {
            Standing::Paired
        } else {
            Standing::Stranger
        }
    }

    /// Whether `peer` is in the registry and revoked.
    pub(crate) fn is_revoked(&self, peer: &DeviceId) -> bool {
        lock(&self.peers)
            .get(peer)
            .is_some_and(|e| e.record.revoked_at.is_some())
    }

    /// A phone's home desktop said it revoked this phone: remembered (the record keeps the
    /// time), so that the phone stops dialling and says so instead of promising to send later.
    pub(crate) fn revoked_by(&self, desktop: &DeviceId) {
        if !matches!(self.role, NodeRole::Phone) {
            return;
        }
        let record = {
            let mut peers = lock(&self.peers);
            let Some(entry) = peers.get_mut(desktop) else {
                return;
            };
            if entry.record.revoked_at.is_some() {
                return;
            }
            entry.record.revoked_at = Some(self.wall_ms());
            entry.last_error = Some(REVOKED_REASON.to_owned());
            entry.record.clone()
        };
        tracing::warn!(desktop = %desktop.short(), "{REVOKED_REASON}");
        self.audit("revoked_by_desktop", desktop, REVOKED_REASON);
        self.put_peer_record(desktop, &record);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Whether `peer` may open a sync session now.
    pub(crate) fn is_allowed(&self, peer: &DeviceId) -> bool {
        lock(&self.peers)
            .get(peer)
            .is_some_and(|e| e.record.revoked_at.is_none())
    }

    pub(crate) fn audit(&self, event: &str, peer: &DeviceId, detail: &str) {
        let line = serde_json::json!({ "at": self.wall_ms(), "event": event, "peer": peer.to_string(), "detail": detail });
        self.store.queue(WriteOp::Audit(line.to_string()), None);
    }

    /// Registers a live session; an older session of the same peer is cancelled.
    pub(crate) fn session_started(&self, peer: &DeviceId) -> Option<(u64, CancellationToken)> {
        let mut peers = lock(&self.peers);
        let entry = peers.get_mut(peer)?;
        if entry.record.revoked_at.is_some() {
            return None;
        }
        let n = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        if let Some((_, old)) = entry.live.replace((n, token.clone())) {
            old.cancel();
        }
        entry.presence = Presence::Connected {
            since: self.wall_ms(),
        };
        entry.stats.sessions += 1;
        entry.streams.clear();
        Some((n, token))
    }

    /// Live byte counts of the current session.
    /// Live byte counts of one document's stream of the current session.
    pub(crate) fn session_progress(
        &self,
        peer: &DeviceId,
        conn: u64,
        doc: &DocKey,
        stats: SessionStats,
        in_sync: bool,
    ) {
        let mut peers = lock(&self.peers);
        if let Some(entry) = peers.get_mut(peer)
            && entry.live.as_ref().is_some_and(|(n, _)| *n == conn)
        {
            entry.streams.insert(doc.clone(), (stats, in_sync));
            let (sent, received) = entry.streams.values().fold((0, 0), |(s, r), (st, _)| {
                (s + st.bytes_sent, r + st.bytes_received)
            });
            entry.stats.last_session_sent = sent;
            entry.stats.last_session_received = received;
        }
    }

    /// Phone: connection `conn` to `peer` is not in sync before the desktop's first catalog.
    pub(crate) fn await_catalog(&self, peer: &DeviceId, conn: u64) {
        self.with_live(peer, conn, |e| e.awaiting_catalog = true);
    }

    /// Phone: the desktop's catalog was heard on connection `conn` and its weeks opened.
    pub(crate) fn catalog_heard(&self, peer: &DeviceId, conn: u64) {
        self.with_live(peer, conn, |e| e.awaiting_catalog = false);
    }

    /// A stream for `doc` is being opened on connection `conn`: not in sync until its
    /// session says so.
    pub(crate) fn stream_opening(&self, peer: &DeviceId, conn: u64, doc: &DocKey) {
        self.with_live(peer, conn, |e| {
            e.streams
                .entry(doc.clone())
                .or_insert((SessionStats::default(), false));
        });
    }

    /// Phone: `docs` were just loaded and their streams open on every live connection soon:
    /// no connection counts as in sync before their sessions say so (a `sync` right after
    /// "load older" waits for the weeks it loaded).
    pub(crate) fn streams_opening(&self, docs: &[DocKey]) {
        for e in lock(&self.peers).values_mut().filter(|e| e.live.is_some()) {
            for doc in docs {
                e.streams
                    .entry(doc.clone())
                    .or_insert((SessionStats::default(), false));
            }
        }
    }

    fn with_live(&self, peer: &DeviceId, conn: u64, f: impl FnOnce(&mut PeerEntry)) {
        let mut peers = lock(&self.peers);
        if let Some(entry) = peers.get_mut(peer)
            && entry.live.as_ref().is_some_and(|(n, _)| *n == conn)
        {
            f(entry);
        }
    }

    /// A document's stream of the current session ended (`error`: why, if it failed); the
    /// others go on. The document no longer counts towards the peer's "in sync".
    pub(crate) fn stream_ended(
        &self,
        peer: &DeviceId,
        conn: u64,
        doc: Option<&DocKey>,
        error: Option<String>,
    ) {
        let mut peers = lock(&self.peers);
        if let Some(entry) = peers.get_mut(peer)
            && entry.live.as_ref().is_some_and(|(n, _)| *n == conn)
        {
            if let Some(doc) = doc {
                entry.streams.remove(doc);
            }
            if error.is_some() {
                entry.last_error = error;
            }
        }
    }

    pub(crate) fn session_ended(
        &self,
        peer: &DeviceId,
        conn: u64,
        stats: SessionStats,
        error: Option<String>,
    ) {
        let now = self.wall_ms();
        let record = {
            let mut peers = lock(&self.peers);
            let Some(entry) = peers.get_mut(peer) else {
                return;
            };
            entry.stats.bytes_sent += stats.bytes_sent;
            entry.stats.bytes_received += stats.bytes_received;
            entry.stats.last_session_sent = stats.bytes_sent;
            entry.stats.last_session_received = stats.bytes_received;
            entry.last_error = error;
            if entry.live.as_ref().is_none_or(|(n, _)| *n == conn) {
                entry.live = None;
                entry.streams.clear();
                entry.presence = Presence::LastSeen { at: now };
            }
            entry.record.last_seen = Some(now);
            entry.record.clone()
        };
        self.put_peer_record(peer, &record);
    }

    fn put_peer_record(&self, peer: &DeviceId, record: &PeerRecord) {
        if let Ok(json) = serde_json::to_vec(record) {
            self.store
                .queue(WriteOp::PutPeer(peer.to_string(), json), None);
        }
    }
}

/// A running device.
pub struct Node {
    shared: Arc<Shared>,
    key: DeviceKey,
    endpoint: Endpoint,
    /// The remembered port this node could not bind again (it listens on another one).
    moved_from: Option<u16>,
    router: Option<Router>,
    #[cfg(feature = "blob-store")]
    blobs: Option<crate::blobs::BlobStore>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    _store_thread: StoreThread,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.id)
            .field("role", &self.shared.role)
            .finish()
    }
}

/// `N` bytes from the operating system's random number generator (keys, tokens, ids).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is unrecoverable for a device that needs keys.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

/// Fresh random bytes for ids.
pub fn random_id_bytes() -> [u8; 16] {
    random_bytes()
}

fn prepare_dir(dir: &Path) -> Result<(), NodeError> {
    let err = |e: std::io::Error| NodeError::DataDir {
        path: dir.to_owned(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

impl Node {
    /// The database file inside a data directory.
    pub fn db_path(data_dir: &Path) -> PathBuf {
        data_dir.join("deskhand.redb")
    }

    /// Opens the device in `config.data_dir` (creating identity and, on a desktop, the
    /// workspace document the first time), binds the endpoint and starts syncing.
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        #[cfg(not(feature = "blob-store"))]
        if matches!(config.role, NodeRole::Desktop { .. }) {
            return Err(NodeError::WrongRole(
                "a desktop node needs deskhand-sync's `blob-store` feature, which this build leaves out",
            ));
        }
        prepare_dir(&config.data_dir)?;
        let path = Self::db_path(&config.data_dir);
        let (store, store_thread, loaded) = Store::open(&path)?;

        let meta: HashMap<String, Vec<u8>> = loaded.meta.into_iter().collect();
        let key = match (&config.key, &loaded.identity) {
            (Some(key), stored) => {
                let provided = key.device_id();
                let stored_id = match stored {
                    Some(bytes) => DeviceKey::from_secret_slice(bytes)
                        .ok()
                        .map(|k| k.device_id()),
                    None => meta
                        .get("device_id")
                        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                        .map(DeviceId::from_bytes),
                };
                match stored_id {
                    Some(s) if s != provided => {
                        return Err(NodeError::KeyMismatch {
                            path: config.data_dir.clone(),
                            stored: s.to_string(),
                            provided: provided.to_string(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        store
                            .write(WriteOp::PutMeta("device_id", provided.as_bytes().to_vec()))
                            .await?;
                    }
                }
                key.clone()
            }
            (None, Some(bytes)) => {
                DeviceKey::from_secret_slice(bytes).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("stored device key: {e}"),
                })?
            }
            (None, None) => {
                let key = DeviceKey::from_secret_bytes(random_bytes());
                store
                    .write(WriteOp::PutIdentity(key.secret_bytes().to_vec()))
                    .await?;
                key
            }
        };
        let id = key.device_id();
        let corrupt = |reason: String| NodeError::CorruptDocument {
            path: path.clone(),
            reason,
        };

        let stored = store.load_doc(&DocKey::WORKSPACE).await?;
        let mut main =
            DocState::from_stored(DocKey::WORKSPACE, stored, Automerge::new, &id, &path)?;
        if !meta.contains_key("own_history_signed") {
            // Once, after the upgrade to signed sync: sign the latest change of each of this
            // device's actors, which vouches for all of its history.
            let signed = main.book.sign_own_history(&main.doc, &key);
            store
                .write(WriteOp::WithSignatures(
                    Box::new(WriteOp::PutMeta("own_history_signed", vec![1])),
                    DocKey::WORKSPACE,
                    signature_records(&signed),
                ))
                .await?;
        }
        main.doc_id = match meta.get("doc_id") {
            Some(b) => {
                Some(DocId::from_bytes(b.as_slice().try_into().map_err(
                    |_| corrupt("document id is not 16 bytes".into()),
                )?))
            }
            None => None,
        };
        let mut peers = HashMap::new();
        for (k, v) in &loaded.peers {
            let (Ok(pid), Ok(record)) = (
                k.parse::<DeviceId>(),
                serde_json::from_slice::<PeerRecord>(v),
            ) else {
                tracing::warn!(path = %path.display(), "skipping an unreadable peer record {k:?}");
                continue;
            };
            let presence = match record.last_seen {
                Some(at) => Presence::LastSeen { at },
                None => Presence::Never,
            };
            peers.insert(pid, PeerEntry::new(record, presence));
        }
        let sync_states = loaded
            .sync_states
            .into_iter()
            .filter_map(|(k, doc, v)| k.parse::<DeviceId>().ok().map(|k| ((k, doc), v)))
            .collect();

        let main = Arc::new(Mutex::new(main));
        let shared = Arc::new(Shared {
            id,
            key: key.clone(),
            role: config.role.clone(),
            docs: Mutex::new(HashMap::from([(
                DocKey::WORKSPACE,
                Loaded {
                    handle: main.clone(),
                    used_ms: 0,
                },
            )])),
            main,
            store: store.clone(),
            opened: watch::channel(0).0,
            weeks: Mutex::new(WeekIds::default()),
            changed: watch::channel(0).0,
            peers: Mutex::new(peers),
            sync_states: Mutex::new(sync_states),
            filter: config.filter.clone(),
            origin: Instant::now(),
            clock: config.clock.clone(),
            next_conn: 0.into(),
            next_stream: 0.into(),
            wake_dialer: Notify::new(),
            path: path.clone(),
            codes: Mutex::new(crate::pairing::Codes::load(&loaded.pairing_tokens)),
            paused: false.into(),
            abandoned_dial: false.into(),
            probe: watch::channel(0).0,
            lan_sighting: watch::channel(None).0,
            infos: Mutex::new(layout::week_infos(&loaded.doc_info)),
            catalog_gen: watch::channel(0).0,
            older: Mutex::new(Vec::new()),
            desktop_catalog: Mutex::new(None),
            legacy: loaded.doc_keys.contains(&DocKey::LEGACY).into(),
            relay: config.net.relay.clone(),
            mdns: config.net.mdns,
        });

        if let NodeRole::Desktop { name } = &config.role {
            let needs_init = matches!(
                Workspace::check_version(&shared.lock_doc().doc),
                Err(SchemaError::Uninitialised)
            );
            if needs_init {
                let new_id = DocId::from_bytes(random_bytes());
                store
                    .write(WriteOp::PutMeta("doc_id", new_id.as_bytes().to_vec()))
                    .await?;
                shared.lock_doc().doc_id = Some(new_id);
                let info = DesktopInfo {
                    id: id.to_string(),
                    name: name.clone(),
                    os: std::env::consts::OS.to_owned(),
                    heartbeat_at: shared.wall_ms(),
                    executor: ExecutorState::Idle,
                };
                write_change(&shared, |tx| Workspace::init_root(tx, &info)).await?;
            } else if Workspace::is_single(&shared.lock_doc().doc) {
                layout::split_workspace(&shared, id).await?;
            } else {
                Workspace::check_version(&shared.lock_doc().doc)?;
            }
        } else if Workspace::is_single(&shared.lock_doc().doc) {
            layout::set_aside_legacy(&shared, id).await?;
        }
        shared
            .load_weeks_at_start(matches!(config.role, NodeRole::Desktop { .. }))
            .await?;

        #[cfg(feature = "blob-store")]
        let blobs = match config.role {
            NodeRole::Desktop { .. } => {
                Some(crate::blobs::BlobStore::open(&config.data_dir.join("blobs")).await?)
            }
            NodeRole::Phone => None,
        };
        let alpns = vec![
            SYNC_ALPN.to_vec(),
            SYNC_ALPN_V1.to_vec(),
            SYNC_ALPN_V2.to_vec(),
            SYNC_ALPN_V3.to_vec(),
            PAIR_ALPN.to_vec(),
            crate::blobs::BLOB_ALPN.to_vec(),
        ];
        let is_desktop = matches!(config.role, NodeRole::Desktop { .. });
        let mut net = config.net.clone();
        if !is_desktop && net.relay == RelaySetting::Off {
            // A phone reaches its desktop through the relay the desktop named: the latest it
            // published into the document, else the one of its pairing code.
            let named = Workspace::desktop_addrs(&shared.lock_doc().doc)
                .relay
                .or_else(|| home_record(&shared).and_then(|(_, r)| r.relay));
            match named.map(|u| endpoint::relay_url(&u).map(|_| u)) {
                Some(Ok(url)) => net.relay = RelaySetting::Url(url),
                Some(Err(e)) => tracing::warn!("not using the relay the desktop named: {e}"),
                None => {}
            }
        }
        let remembered = meta
            .get(LISTEN_PORT_KEY)
            .and_then(|b| <[u8; 2]>::try_from(b.as_slice()).ok())
            .map(u16::from_be_bytes);
        let (endpoint, moved_from, mdns) =
            bind_keeping_port(&key, &net, alpns, is_desktop, remembered).await?;
        if net.keep_port
            && let Some(port) = endpoint.bound_sockets().first().map(|s| s.port())
            && Some(port) != remembered
        {
            store
                .write(WriteOp::PutMeta(
                    LISTEN_PORT_KEY,
                    port.to_be_bytes().to_vec(),
                ))
                .await?;
        }
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if is_desktop {
            tasks.spawn(unload_idle(shared.clone(), cancel.clone()));
            publish_addrs_once(&shared, &endpoint).await;
            tasks.spawn(publish_addrs(
                shared.clone(),
                endpoint.clone(),
                cancel.clone(),
            ));
        } else {
            tasks.spawn(follow_network(
                shared.clone(),
                endpoint.clone(),
                cancel.clone(),
            ));
            if let Some(mdns) = mdns {
                tasks.spawn(follow_lan(shared.clone(), mdns, cancel.clone()));
            }
        }
        let router = match config.role {
            NodeRole::Desktop { .. } => {
                let router = Router::builder(endpoint.clone())
                    .accept(
                        SYNC_ALPN,
                        crate::protocol::SyncProtocol::new(shared.clone()),
                    )
                    .accept(PAIR_ALPN, crate::pairing::PairProtocol::new(shared.clone()))
                    .accept(SYNC_ALPN_V1, crate::protocol::OutdatedSyncProtocol)
                    .accept(SYNC_ALPN_V2, crate::protocol::OutdatedSyncProtocol)
                    .accept(SYNC_ALPN_V3, crate::protocol::OutdatedSyncProtocol);
                #[cfg(feature = "blob-store")]
                let router = router.accept(
                    crate::blobs::BLOB_ALPN,
                    crate::blobs::GatedBlobs::new(
                        shared.clone() as Arc<dyn crate::gate::PeerGate>,
                        blobs
                            .as_ref()
                            .ok_or(NodeError::WrongRole("a desktop has blobs"))?,
                    ),
                );
                Some(router.spawn())
            }
            NodeRole::Phone => {
                tasks.spawn(dial_loop(shared.clone(), endpoint.clone(), cancel.clone()));
                None
            }
        };
        tracing::info!(device = %id.short(), db = %path.display(), "node open");
        Ok(Node {
            shared,
            key,
            endpoint,
            moved_from,
            router,
            #[cfg(feature = "blob-store")]
            blobs,
            tasks,
            cancel,
            _store_thread: store_thread,
        })
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.shared.id
    }

    /// This device's key (for signing approvals).
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// The workspace id, once known.
    pub fn doc_id(&self) -> Option<DocId> {
        self.shared.lock_doc().doc_id
    }

    /// The database file.
    pub fn db_path_of(&self) -> &Path {
        &self.shared.path
    }

    /// Addresses peers can dial.
    pub fn direct_addrs(&self) -> Vec<SocketAddr> {
        endpoint::direct_addrs(&self.endpoint)
    }

    /// The relay URL peers should use to reach this node: its current home relay, else the
    /// configured one (n0's first public relay for `default`); `None` when relays are off.
    pub fn relay_url(&self) -> Option<String> {
        relay_now(&self.shared.relay, &self.endpoint)
    }

    /// Waits (at most `timeout`) until the endpoint has chosen a home relay; at once when relays
    /// are off. Offline, it returns after `timeout`.
    pub async fn wait_for_home_relay(&self, timeout: Duration) {
        use iroh::Watcher as _;
        if self.shared.relay == RelaySetting::Off {
            return;
        }
        let mut watch = self.endpoint.watch_addr();
        let _ = tokio::time::timeout(timeout, async {
            while watch.get().relay_urls().next().is_none() {
                if watch.updated().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// When `NetConfig::keep_port` is on and the port this node bound before was taken: that
    /// port (the node listens on another one, and publishes it).
    pub fn moved_from_port(&self) -> Option<u16> {
        self.moved_from
    }

    /// Phone: what dialling the home desktop tries, for a person ("tried 127.0.0.1:4433; no
    /// relay; local-network discovery off"); `None` when not paired.
    pub fn dial_plan(&self) -> Option<String> {
        home_addrs(&self.shared).map(|(_, to)| tried(&to, self.shared.mdns))
    }

    /// Phone: every address this phone dials its home desktop on — the latest the desktop
    /// published into the document, then those of its pairing code — and the relay, if any.
    /// Local-network discovery (mDNS), when on, adds what it finds at dial time.
    pub fn home_addrs(&self) -> Option<(DeviceId, DesktopAddrs)> {
        home_addrs(&self.shared)
    }

    /// The iroh endpoint (for protocols mounted beside sync).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Makes one local change (one Automerge change) and returns once it is durable.
    pub async fn write<R>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
    ) -> Result<R, NodeError> {
        write_change(&self.shared, f).await
    }

    /// Makes one local change like [`Self::write`] but returns without waiting for the disk: the
    /// change is queued to the store, committed with whatever else is queued (group commit) and,
    /// like every change, sent to peers only once it is durable. For records that nothing is
    /// acted on until a later [`Self::write`] (which returns after everything queued before it
    /// is durable): a task's progress events. A failed commit is logged and the change is saved
    /// again with the next one.
    pub fn write_queued<R>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
    ) -> Result<R, NodeError> {
        local_change(&self.shared, &self.shared.main, f, None)
    }

    /// Loads the document stored under `key`, or starts it as `genesis()` when nothing is
    /// stored under it (the genesis is stored with the document's first change). A loaded
    /// document stays loaded; opening it again does nothing.
    ///
    /// # Errors
    /// [`NodeError::Store`] if the store cannot read it; [`NodeError::CorruptDocument`] if what
    /// is stored does not load (the file is left untouched).
    pub async fn open_doc(
        &self,
        key: &DocKey,
        genesis: impl FnOnce() -> Automerge,
    ) -> Result<(), NodeError> {
        self.shared.open_doc(key, genesis, None).await.map(|_| ())
    }

    /// Reads the loaded document stored under `key`; `None` if it is not loaded.
    pub fn read_doc<R>(&self, key: &DocKey, f: impl FnOnce(&Automerge) -> R) -> Option<R> {
        self.shared.doc(key).map(|h| f(&lock(&h).doc))
    }

    /// Loads the conversation document of `week` (or starts it from its genesis), and returns
    /// its key.
    ///
    /// # Errors
    /// [`NodeError::NoWorkspace`] before this device knows its workspace; otherwise as
    /// [`Self::open_doc`].
    pub async fn open_week(&self, week: ConversationWeek) -> Result<DocKey, NodeError> {
        let workspace = self.doc_id().ok_or(NodeError::NoWorkspace)?;
        let handle = self.shared.open_week(workspace, week).await?;
        Ok(lock(&handle).key.clone())
    }

    /// The loaded documents that hold the conversation (messages, tasks and their approvals),
    /// oldest first. A single-document workspace (schema 1) keeps it in the workspace's own
    /// document ([`DocKey::WORKSPACE`]); a workspace of several documents in one document per
    /// week, of which these are the ones loaded.
    pub fn conversation_docs(&self) -> Vec<DocKey> {
        self.shared
            .conversation_docs()
            .iter()
            .map(|h| lock(h).key.clone())
            .collect()
    }

    /// The conversation document that items written at `at_ms` (Unix ms, the desktop's
    /// clock) go to, loaded: the workspace's own document in a single-document workspace,
    /// else the document of that instant's week (started from its genesis if it is new).
    ///
    /// # Errors
    /// [`NodeError::NoWorkspace`] before this device knows its workspace;
    /// [`NodeError::Week`] for an instant no week holds; otherwise as [`Self::open_doc`].
    pub async fn conversation_doc_at(&self, at_ms: i64) -> Result<DocKey, NodeError> {
        if Workspace::is_single(&self.shared.lock_doc().doc) {
            return Ok(DocKey::WORKSPACE);
        }
        let week = ConversationWeek::of_unix_ms(at_ms)?;
        self.open_week(week).await
    }

    /// The weeks whose conversation documents this device holds, each with its heads digest
    /// and what it holds (messages; open tasks and pending approvals as last counted), oldest
    /// first: what the desktop announces to its phones.
    pub fn catalog(&self) -> deskhand_core::catalog::Catalog {
        self.shared.catalog()
    }

    /// The workspace as one view: its own document (a single-document workspace whole; a root
    /// with `desktop` and `devices`) and the conversation of every loaded week, oldest first.
    ///
    /// # Errors
    /// [`SchemaError`] if the workspace's document is empty or of an unknown schema, or a week's
    /// collections are malformed.
    pub fn read_workspace(&self) -> Result<Workspace, SchemaError> {
        let mut ws = self.read(Workspace::read)?;
        for key in self.conversation_docs() {
            if key != DocKey::WORKSPACE
                && let Some(r) = self.read_doc(&key, |d| ws.add_conversation(d))
            {
                r?;
            }
        }
        Ok(ws)
    }

    /// Loads every week document this device holds (as its catalog lists them). For tools and
    /// tests: the whole history of a year-old workspace is large. Returns how many weeks are
    /// held.
    ///
    /// # Errors
    /// As [`Self::open_week`].
    pub async fn open_all_weeks(&self) -> Result<usize, NodeError> {
        let weeks: Vec<ConversationWeek> = lock(&self.shared.infos).keys().copied().collect();
        for week in &weeks {
            self.open_week(*week).await?;
        }
        Ok(weeks.len())
    }

    /// Phone: whether a single-document workspace of before the update is set aside, with
    /// writes of this phone's that may not have reached the desktop ([`DocKey::LEGACY`]).
    pub fn has_legacy(&self) -> bool {
        self.shared.legacy.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Phone: drops the set-aside workspace (its writes are all in their weeks now).
    ///
    /// # Errors
    /// [`NodeError::Store`] if the store cannot remove it.
    pub async fn drop_legacy(&self) -> Result<(), NodeError> {
        self.shared
            .store
            .write(WriteOp::DropDoc(DocKey::LEGACY))
            .await?;
        lock(&self.shared.docs).remove(&DocKey::LEGACY);
        self.shared
            .legacy
            .store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Phone: the weeks the desktop announced that this phone has not loaded, newest first:
    /// the pages [`Self::load_older`] loads.
    pub fn older_weeks(&self) -> Vec<ConversationWeek> {
        lock(&self.shared.older).clone()
    }

    /// Phone: loads the next `weeks` of [`Self::older_weeks`]; they sync on the live
    /// connection (or the next one). Returns the weeks loaded, newest first (none when there
    /// is nothing older).
    ///
    /// # Errors
    /// [`NodeError::NoWorkspace`] before pairing; otherwise as [`Self::open_doc`].
    pub async fn load_older(&self, weeks: usize) -> Result<Vec<ConversationWeek>, NodeError> {
        self.shared.load_older(weeks).await
    }

    /// The loaded conversation document that holds task `id`, if one does (where the task's
    /// status, events, result and approval requests are written).
    pub fn task_doc(&self, id: &TaskId) -> Option<DocKey> {
        let key = self.shared.conversation_docs().iter().find_map(|h| {
            let ds = lock(h);
            matches!(Workspace::task(&ds.doc, id), Ok(Some(_))).then(|| ds.key.clone())
        })?;
        self.shared.use_doc(&key);
        Some(key)
    }

    /// The loaded conversation document that holds approval request `id`, if one does.
    pub fn approval_doc(&self, id: &ApprovalId) -> Option<DocKey> {
        let key = self.shared.conversation_docs().iter().find_map(|h| {
            let ds = lock(h);
            matches!(Workspace::approval(&ds.doc, id), Ok(Some(_))).then(|| ds.key.clone())
        })?;
        self.shared.use_doc(&key);
        Some(key)
    }

    /// Makes one local change to the loaded document stored under `key` like
    /// [`Self::write_queued`]: queued to the store without waiting for the disk.
    ///
    /// # Errors
    /// [`NodeError::NotLoaded`] unless it is loaded; otherwise as [`Self::write_queued`].
    pub fn write_doc_queued<R>(
        &self,
        key: &DocKey,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
    ) -> Result<R, NodeError> {
        local_change(&self.shared, &self.loaded_doc(key)?, f, None)
    }

    /// The loaded document stored under `key` (recorded as in use), or
    /// [`NodeError::NotLoaded`].
    fn loaded_doc(&self, key: &DocKey) -> Result<DocHandle, NodeError> {
        self.shared
            .use_doc(key)
            .ok_or_else(|| NodeError::NotLoaded(key.clone()))
    }

    /// Desktop: unloads the week documents unused for `idle` or longer that nothing needs at
    /// hand; the desktop does so by itself every minute for documents unused for five. Kept
    /// loaded: this week's, any week with open tasks or pending approvals (or counts not yet
    /// taken at its latest heads), any with a change not yet stored, and any a sync session or
    /// a writer holds. An unloaded week loads again when a phone asks for it or a writer opens
    /// it. Returns how many were unloaded (on a phone, which keeps what its screen shows: 0).
    pub fn unload_idle_weeks(&self, idle: Duration) -> usize {
        if matches!(self.shared.role, NodeRole::Phone) {
            return 0;
        }
        self.shared.recount_weeks();
        self.shared.unload_idle_weeks(idle)
    }

    /// Makes one local change to the loaded document stored under `key`, like
    /// [`Self::write`] (signed, stored, then sent), and returns once it is durable.
    ///
    /// # Errors
    /// [`NodeError::NotLoaded`] unless [`Self::open_doc`] loaded it; otherwise as
    /// [`Self::write`].
    pub async fn write_doc<R>(
        &self,
        key: &DocKey,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
    ) -> Result<R, NodeError> {
        write_change_to(&self.shared, &self.loaded_doc(key)?, f).await
    }

    /// Returns once every change made so far is committed to the disk; an error if one of them
    /// could not be stored (it is saved again with the next change).
    pub async fn flush(&self) -> Result<(), NodeError> {
        // A read runs only after everything queued before it is committed.
        self.shared.store.read(|_| ()).await?;
        if self
            .shared
            .loaded()
            .iter()
            .any(|d| lock(d).hub.durability().undurable())
        {
            return Err(NodeError::Store(StoreError::Io {
                path: self.shared.path.clone(),
                reason: "a document change could not be stored (see the log)".into(),
            }));
        }
        Ok(())
    }

    /// The desktop's blob store (`None` on a phone).
    #[cfg(feature = "blob-store")]
    pub fn blobs(&self) -> Option<&crate::blobs::BlobStore> {
        self.blobs.as_ref()
    }

    /// Fetches a blob from the home desktop (a phone) and verifies its BLAKE3 hash.
    pub async fn fetch_blob(&self, hash: &str) -> Result<Vec<u8>, crate::blobs::BlobError> {
        use crate::blobs::BlobError;
        crate::blobs::parse_hash(hash)?;
        let (home, to) = self.home_addrs().ok_or(BlobError::NotPaired)?;
        let unreachable = |reason: String| BlobError::Unreachable {
            hash: hash.to_owned(),
            reason,
        };
        let addr = endpoint::peer_addr(&home, &to.addrs, to.relay.as_deref())
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.endpoint.connect(addr, crate::blobs::BLOB_ALPN),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
        crate::blobs::fetch_over(conn, hash, Duration::from_secs(30)).await
    }

    /// Reads the document.
    pub fn read<R>(&self, f: impl FnOnce(&Automerge) -> R) -> R {
        f(&self.shared.lock_doc().doc)
    }

    /// A receiver bumped whenever the document changed (own changes once durable, received
    /// changes once applied).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Adds or updates a device in the registry (desktop: who may sync; phone: its home).
    pub async fn put_peer(&self, id: DeviceId, record: PeerRecord) -> Result<(), NodeError> {
        self.shared.put_peer(id, record).await
    }

    /// Revokes a device: its live session is closed at once and it cannot reconnect.
    pub async fn revoke_peer(&self, id: &DeviceId) -> Result<bool, NodeError> {
        let record = {
            let peers = lock(&self.shared.peers);
            match peers.get(id) {
                Some(e) => e.record.clone(),
                None => return Ok(false),
            }
        };
        let now = self.shared.wall_ms();
        self.put_peer(
            *id,
            PeerRecord {
                revoked_at: Some(now),
                ..record.clone()
            },
        )
        .await?;
        self.shared.audit("revoked", id, "device revoked");
        if matches!(self.shared.role, NodeRole::Desktop { .. }) {
            let entry = DeviceEntry {
                name: record.name,
                platform: record.platform,
                paired_at: record.paired_at,
                revoked_at: Some(now),
            };
            write_change(&self.shared, |tx| Workspace::put_device(tx, id, &entry)).await?;
        }
        Ok(true)
    }

    /// Renames a device in the registry (and in the document's display copy on a desktop).
    pub async fn rename_peer(&self, id: &DeviceId, name: &str) -> Result<bool, NodeError> {
        let Some(record) = lock(&self.shared.peers).get(id).map(|e| e.record.clone()) else {
            return Ok(false);
        };
        self.put_peer(
            *id,
            PeerRecord {
                name: name.to_owned(),
                ..record.clone()
            },
        )
        .await?;
        if matches!(self.shared.role, NodeRole::Desktop { .. }) {
            let entry = DeviceEntry {
                name: name.to_owned(),
                platform: record.platform,
                paired_at: record.paired_at,
                revoked_at: record.revoked_at,
            };
            write_change(&self.shared, |tx| Workspace::put_device(tx, id, &entry)).await?;
        }
        Ok(true)
    }

    /// Desktop: a fresh one-time pairing code valid for `ttl`.
    pub fn create_pairing(&self, ttl: Duration) -> Result<PairingPayload, NodeError> {
        let NodeRole::Desktop { name } = &self.shared.role else {
            return Err(NodeError::WrongRole(
                "only a desktop hands out pairing codes",
            ));
        };
        let token = PairingToken::from_bytes(random_bytes());
        let record = crate::pairing::new_code(
            &mut self.shared.codes(),
            self.shared.store(),
            ttl,
            token.clone(),
        );
        Ok(PairingPayload {
            desktop: self.id(),
            addrs: self.direct_addrs(),
            relay: self.relay_url(),
            token,
            name: name.clone(),
            expires_at: record.expires_at,
        })
    }

    /// Phone: pairs with the desktop of `payload`, which becomes this phone's home.
    pub async fn pair(
        &self,
        payload: &PairingPayload,
        name: &str,
        platform: &str,
    ) -> Result<(), PairError> {
        if !matches!(self.shared.role, NodeRole::Phone) {
            return Err(PairError::WrongRole);
        }
        if let Some((home, record)) = self.home()
            && home != payload.desktop
        {
            return Err(PairError::AlreadyPaired {
                name: record.name,
                id: home.short(),
            });
        }
        // Reach the desktop through the relay it names, for this pairing and from now on.
        if let Some(relay) = &payload.relay
            && let Err(e) = endpoint::add_relay(&self.endpoint, relay).await
        {
            tracing::warn!("not using the relay the desktop named: {e}");
        }
        let paired = crate::pairing::pair_with(&self.endpoint, payload, name, platform).await?;
        let now = self.shared.wall_ms();
        if let Some(id) = paired.doc_id {
            let mut ds = self.shared.lock_doc();
            self.shared.adopt_doc_id(&mut ds, id);
        }
        let record = PeerRecord {
            name: payload.name.clone(),
            platform: "desktop".into(),
            paired_at: now,
            revoked_at: None,
            last_seen: None,
            addrs: payload.addrs.clone(),
            clock_offset_ms: paired.desktop_clock_ms.map(|d| d.saturating_sub(now)),
            relay: payload.relay.clone(),
        };
        self.put_peer(payload.desktop, record)
            .await
            .map_err(|e| PairError::Storage(e.to_string()))?;
        Ok(())
    }

    /// Phone: the home desktop that revoked this phone (its record holds when), if it did.
    pub fn revoked_home(&self) -> Option<(DeviceId, PeerRecord)> {
        lock(&self.shared.peers)
            .iter()
            .find(|(_, e)| e.record.platform == "desktop" && e.record.revoked_at.is_some())
            .map(|(id, e)| (*id, e.record.clone()))
    }

    /// Phone: the home desktop, if paired.
    pub fn home(&self) -> Option<(DeviceId, PeerRecord)> {
        let (id, _) = home_record(&self.shared)?;
        lock(&self.shared.peers)
            .get(&id)
            .map(|e| (id, e.record.clone()))
    }

    /// Phone: forgets the home desktop and its workspace, so that it can pair anew.
    pub async fn forget_desktop(&self) -> Result<(), NodeError> {
        let home = self.home().or_else(|| self.revoked_home());
        {
            let mut peers = lock(&self.shared.peers);
            for e in peers.values_mut() {
                if let Some((_, t)) = e.live.take() {
                    t.cancel();
                }
            }
            peers.clear();
        }
        if let Some((id, _)) = home {
            self.shared
                .store
                .write(WriteOp::RemovePeer(id.to_string()))
                .await?;
        }
        {
            // Every document but the workspace's is unloaded; that one starts empty.
            lock(&self.shared.docs).retain(|k, _| *k == DocKey::WORKSPACE);
            let mut ds = self.shared.lock_doc();
            ds.doc = Automerge::new().with_actor(self.shared.id.session_actor(random_bytes()));
            ds.book.clear();
            ds.doc_id = None;
            ds.hub.durability_mut().replaced(Vec::new());
            lock(&self.shared.sync_states).clear();
            self.shared.forget_weeks();
            self.shared.store.queue(WriteOp::ClearDocuments, None);
        }
        self.shared.store.read(|_| ()).await?;
        self.shared.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Every known peer with presence and counters.
    pub fn peers(&self) -> Vec<PeerView> {
        let mut v: Vec<PeerView> = lock(&self.shared.peers)
            .iter()
            .map(|(id, e)| PeerView {
                id: *id,
                record: e.record.clone(),
                presence: e.presence,
                stats: e.stats,
                last_error: e.last_error.clone(),
                in_sync: e.in_sync(),
            })
            .collect();
        v.sort_by_key(|p| p.record.paired_at);
        v
    }

    /// Phone: pauses syncing (the live session ends; nothing is dialled) or resumes it. Writes
    /// go on locally while paused and are sent on resume.
    pub fn set_sync_paused(&self, paused: bool) {
        self.shared
            .paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
        if paused {
            for e in lock(&self.shared.peers).values_mut() {
                if let Some((_, t)) = e.live.take() {
                    t.cancel();
                }
            }
        }
        self.shared.wake_dialer.notify_one();
    }

    /// Syncs now (network change, app foregrounded): the dialer retries at once, and a live
    /// session checks that its peer is still there, reconnecting within seconds if not.
    pub fn sync_now(&self) {
        self.shared.probe.send_modify(|g| *g += 1);
        self.shared.wake_dialer.notify_one();
    }

    /// Appends an event to the audit log (never secrets: ids, kinds and reasons only).
    pub fn audit(&self, event: &str, peer: &DeviceId, detail: &str) {
        self.shared.audit(event, peer, detail);
    }

    /// Whether `peer` is paired and not revoked (desktop registry).
    pub fn is_paired(&self, peer: &DeviceId) -> bool {
        self.shared.is_allowed(peer)
    }

    /// Reads the audit log (JSON lines, oldest first).
    pub async fn audit_log(&self) -> Result<Vec<String>, NodeError> {
        let path = self.shared.path.clone();
        self.shared
            .store
            .read(crate::store::read_audit)
            .await?
            .map_err(|e| {
                NodeError::Store(StoreError::Io {
                    path,
                    reason: e.to_string(),
                })
            })
    }

    /// Stops everything: sessions end with a goodbye, the endpoint closes, the store flushes.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for e in lock(&self.shared.peers).values_mut() {
            if let Some((_, t)) = e.live.take() {
                t.cancel();
            }
        }
        // Sessions end with a goodbye at once; a peer that does not read it (gone, or stuck
        // mid-handshake) must not hold up the shutdown.
        let tasks = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks).await.is_err() {
            tracing::warn!("sync tasks did not stop within {SHUTDOWN_GRACE:?}; aborting them");
            self.tasks.shutdown().await;
        }
        if let Some(router) = self.router.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, router.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("the router did not stop within {SHUTDOWN_GRACE:?}");
        }
        #[cfg(feature = "blob-store")]
        if let Some(blobs) = &self.blobs
            && tokio::time::timeout(SHUTDOWN_GRACE, blobs.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("the blob store did not stop within {SHUTDOWN_GRACE:?}");
        }
        let abandoned = self
            .shared
            .abandoned_dial
            .load(std::sync::atomic::Ordering::SeqCst);
        let grace = if abandoned {
            ABANDONED_DIAL_GRACE
        } else {
            SHUTDOWN_GRACE
        };
        // The close runs in a task of its own: if it outlasts the grace (the QUIC drain of a
        // handshake given up, up to ~3 s), it still completes in the background rather than
        // being dropped midway, which would abort the endpoint ungracefully. A one-shot
        // program that exits meanwhile (the terminal phone) ends it with the process.
        let endpoint = self.endpoint.clone();
        let mut closing = tokio::spawn(async move { endpoint.close().await });
        if tokio::time::timeout(grace, &mut closing).await.is_err() {
            if abandoned {
                tracing::debug!("the endpoint finishes closing in the background (abandoned dial)");
            } else {
                tracing::warn!(
                    "the endpoint did not close within {SHUTDOWN_GRACE:?}; it finishes in the background"
                );
            }
        }
        // Count what the loaded weeks hold, so that the next start knows without loading them.
        self.shared.catalog_entries();
        // Leave a single snapshot of each document behind so that the next start loads one
        // compact document instead of replaying every incremental chunk.
        for doc in self.shared.loaded() {
            let mut guard = lock(&doc);
            let ds = &mut *guard;
            if let Some(snapshot) = ds.hub.durability_mut().snapshot_due(&ds.doc) {
                self.shared
                    .store
                    .queue(WriteOp::Compact(ds.key.clone(), snapshot), None);
            }
        }
        // Wait for queued writes (sync states, peer records, snapshot) to be committed.
        let _ = self.shared.store.read(|_| ()).await;
    }
}

/// How often the desktop looks for week documents to unload.
const UNLOAD_EVERY: Duration = Duration::from_secs(60);
/// How long a week document must have gone unused before the desktop unloads it.
const UNLOAD_IDLE: Duration = Duration::from_secs(300);

/// Desktop: every [`UNLOAD_EVERY`], recounts the loaded weeks and unloads those idle for
/// [`UNLOAD_IDLE`] ([`Shared::unload_idle_weeks`]), so that memory follows what is in use, not
/// what phones once paged through.
async fn unload_idle(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(UNLOAD_EVERY) => {}
        }
        shared.recount_weeks();
        let n = shared.unload_idle_weeks(UNLOAD_IDLE);
        if n > 0 {
            tracing::info!(
                weeks = n,
                "unloaded week documents nobody used for {UNLOAD_IDLE:?}"
            );
        }
    }
}

/// Makes one local change to the workspace's document and returns once it is durable.
pub(crate) async fn write_change<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
) -> Result<R, NodeError> {
    write_change_to(shared, &shared.main, f).await
}

/// Makes one local change to document `doc` and returns once it is durable.
async fn write_change_to<R>(
    shared: &Arc<Shared>,
    doc: &DocHandle,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
) -> Result<R, NodeError> {
    let (tx, rx) = oneshot::channel();
    let out = local_change(shared, doc, f, Some(tx))?;
    rx.await.map_err(|_| NodeError::ShutDown)??;
    Ok(out)
}

/// Makes one local change to `doc` and queues it to the store; `done` hears when it is durable.
fn local_change<R>(
    shared: &Arc<Shared>,
    doc: &DocHandle,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<R, SchemaError>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<R, NodeError> {
    let mut ds = lock(doc);
    let r = ds.doc.transact(f).map_err(|failure| failure.error)?;
    let mut signatures = Vec::new();
    if let Some(hash) = r.hash {
        let ds = &mut *ds;
        signatures.extend(ds.book.sign_local(&ds.doc, &shared.key, hash));
    }
    let ds = &mut *ds;
    let outputs = ds.hub.local_change(&ds.doc, &mut ds.book, signatures);
    shared.dispatch(ds, outputs, done);
    Ok(r.result)
}

/// Change signatures as stored: (actor hex, [`Signed::to_bytes`]).
fn signature_records(signed: &[(ActorId, Signed)]) -> Vec<(String, Vec<u8>)> {
    signed
        .iter()
        .map(|(a, s)| (a.to_hex_string(), s.to_bytes().to_vec()))
        .collect()
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
    /// Capped exponential with full jitter in [d/2, d].
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let r = u32::from_le_bytes(random_bytes::<4>()) as f64 / u32::MAX as f64;
        d.mul_f64(0.5 + r / 2.0)
    }
}

fn home_record(shared: &Shared) -> Option<(DeviceId, PeerRecord)> {
    lock(&shared.peers)
        .iter()
        .find(|(_, e)| e.record.platform == "desktop" && e.record.revoked_at.is_none())
        .map(|(id, e)| (*id, e.record.clone()))
}

/// The home desktop's addresses: published into the document (newest) first, then the pairing
/// code's; the published relay, else the pairing code's.
fn home_addrs(shared: &Shared) -> Option<(DeviceId, DesktopAddrs)> {
    let (id, record) = home_record(shared)?;
    let mut to = Workspace::desktop_addrs(&shared.lock_doc().doc);
    for a in record.addrs {
        if !to.addrs.contains(&a) {
            to.addrs.push(a);
        }
    }
    if to.relay.is_none() {
        to.relay = record.relay;
    }
    Some((id, to))
}

/// What a phone tried, for a person: "127.0.0.1:4433, 10.0.0.2:4433; relay https://…; local
/// network discovery on".
fn tried(to: &DesktopAddrs, mdns: bool) -> String {
    let addrs: Vec<String> = to.addrs.iter().map(|a| a.to_string()).collect();
    format!(
        "tried {}; {}; local-network discovery {}",
        if addrs.is_empty() {
            "no direct address".to_owned()
        } else {
            addrs.join(", ")
        },
        match &to.relay {
            Some(r) => format!("relay {r}"),
            None => "no relay".to_owned(),
        },
        if mdns { "on" } else { "off" }
    )
}

/// Binds the endpoint; with `keep_port` and port 0, the port remembered from last time first.
/// Returns the endpoint, when the remembered port was taken that port, and mDNS when it runs.
async fn bind_keeping_port(
    key: &DeviceKey,
    net: &NetConfig,
    alpns: Vec<Vec<u8>>,
    advertise: bool,
    remembered: Option<u16>,
) -> Result<(Endpoint, Option<u16>, Option<endpoint::MdnsAddressLookup>), EndpointError> {
    if let Some(port) = remembered.filter(|_| net.keep_port && net.listen.port() == 0) {
        let want = SocketAddr::new(net.listen.ip(), port);
        let again = net.clone().with_listen(want);
        match endpoint::bind_as(key, &again, alpns.clone(), advertise, !advertise).await {
            Ok((ep, mdns)) => return Ok((ep, None, mdns)),
            Err(e @ EndpointError::Bind { .. }) => {
                let (ep, mdns) = endpoint::bind_as(key, net, alpns, advertise, !advertise).await?;
                let now: Vec<String> = endpoint::direct_addrs(&ep)
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                tracing::warn!(
                    "the port this desktop listened on before ({port}) is taken ({e}); listening on {} instead. Paired phones learn the new address from the workspace document, local-network discovery or the relay",
                    now.join(", ")
                );
                return Ok((ep, Some(port), mdns));
            }
            Err(e) => return Err(e),
        }
    }
    // A phone (it does not advertise) can take on its desktop's relay when it pairs.
    let (ep, mdns) = endpoint::bind_as(key, net, alpns, advertise, !advertise).await?;
    Ok((ep, None, mdns))
}

/// The relay URL peers should use now (see [`Node::relay_url`]).
fn relay_now(setting: &RelaySetting, endpoint: &Endpoint) -> Option<String> {
    if *setting == RelaySetting::Off {
        return None;
    }
    endpoint
        .addr()
        .relay_urls()
        .next()
        .map(|u| u.to_string())
        .or_else(|| setting.fallback_url())
}

/// Desktop: writes where it can be reached into the document, if that changed.
async fn publish_addrs_once(shared: &Arc<Shared>, endpoint: &Endpoint) {
    let now = DesktopAddrs {
        addrs: endpoint::direct_addrs(endpoint),
        relay: relay_now(&shared.relay, endpoint),
    };
    if Workspace::desktop_addrs(&shared.lock_doc().doc) == now {
        return;
    }
    match write_change(shared, |tx| Workspace::set_desktop_addrs(tx, &now)).await {
        Ok(()) => {
            tracing::debug!(addrs = ?now.addrs, relay = ?now.relay, "published the desktop's addresses")
        }
        Err(e) => tracing::warn!("could not publish the desktop's addresses: {e}"),
    }
}

/// Desktop: publishes its addresses again whenever the endpoint's change (a new network, a
/// new home relay), after they settle.
async fn publish_addrs(shared: Arc<Shared>, endpoint: Endpoint, cancel: CancellationToken) {
    use iroh::Watcher as _;
    let mut watch = endpoint.watch_addr();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = watch.updated() => if r.is_err() { return },
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(ADDRS_SETTLE) => {}
        }
        publish_addrs_once(&shared, &endpoint).await;
    }
}

/// Phone: when its own addresses change (it moved to another network, an interface went
/// down), it acts as on [`Node::sync_now`] — a live session probes the desktop and reconnects
/// within [`deskhand_core::session::PROBE_TIMEOUT_MS`] if the old path is gone, the dialer
/// retries at once — instead of waiting for the session to find its peer silent.
async fn follow_network(shared: Arc<Shared>, endpoint: Endpoint, cancel: CancellationToken) {
    use iroh::Watcher as _;
    let mut watch = endpoint.watch_addr();
    let addrs = || -> std::collections::BTreeSet<SocketAddr> {
        endpoint.addr().ip_addrs().copied().collect()
    };
    let mut known = addrs();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = watch.updated() => if r.is_err() { return },
        }
        let now = addrs();
        if now != known {
            tracing::debug!(from = ?known, to = ?now, "this device's addresses changed: checking the desktop");
            known = now;
            shared.probe.send_modify(|g| *g += 1);
            shared.wake_dialer.notify_one();
        }
    }
}

/// Phone: follows what local-network discovery (mDNS) sees of the home desktop. When the
/// desktop announces a changed set of addresses (it got a new address on the LAN, say a new
/// DHCP lease), live sessions check that their path is still among them (see the driver) and
/// the dialer, if it is waiting, tries again at once.
///
/// It keeps a lookup of the desktop running (mDNS hands a changed announcement to running
/// lookups, not to its subscribers, while iroh itself looks the desktop up); each lookup ends
/// after mDNS's lookup time (10 s) and the next begins with mDNS's cached answer, which counts
/// only when it differs from the last one seen.
async fn follow_lan(
    shared: Arc<Shared>,
    mdns: endpoint::MdnsAddressLookup,
    cancel: CancellationToken,
) {
    use iroh::address_lookup::AddressLookup as _;
    use n0_future::StreamExt as _;
    let mut last: Option<LanSighting> = None;
    loop {
        let Some((home, _)) = home_addrs(&shared) else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        let Ok(id) = iroh::PublicKey::from_bytes(home.as_bytes()) else {
            return;
        };
        let Some(mut found) = mdns.resolve(id) else {
            return;
        };
        let began = tokio::time::Instant::now();
        loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => return,
                i = found.next() => match i { Some(i) => i, None => break },
            };
            let Ok(item) = item else { continue };
            let addrs = item.endpoint_info().ip_addrs().copied().collect();
            let seen = LanSighting { peer: home, addrs };
            if seen.addrs.is_empty() || last.as_ref() == Some(&seen) {
                continue;
            }
            tracing::debug!(peer = %home.short(), addrs = ?seen.addrs, "the desktop announces these addresses on the local network");
            last = Some(seen.clone());
            shared.lan_sighting.send_replace(Some(seen));
            shared.wake_dialer.notify_one();
        }
        // A lookup that ended at once (mDNS stopped) must not turn this into a busy loop.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(began + Duration::from_secs(1)) => {}
        }
    }
}

async fn dial_loop(shared: Arc<Shared>, endpoint: Endpoint, cancel: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let paused = shared.paused.load(std::sync::atomic::Ordering::SeqCst);
        let wait = match home_addrs(&shared) {
            _ if paused => None,
            None => None,
            Some((home, to)) => match dial_once(&shared, &endpoint, home, &to, &cancel).await {
                Ok(Dialed::Restart) => {
                    backoff.reset();
                    Some(Duration::ZERO)
                }
                Ok(Dialed::SessionEnded) => {
                    backoff.reset();
                    Some(BACKOFF_MIN)
                }
                Err(e) => {
                    tracing::debug!(peer = %home.short(), "sync with home desktop failed: {e}");
                    if let Some(entry) = lock(&shared.peers).get_mut(&home) {
                        entry.last_error = Some(e);
                    }
                    Some(backoff.step())
                }
            },
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.wake_dialer.notified() => backoff.reset(),
            _ = async { match wait { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
        }
    }
}

/// How a dial that did not fail ended.
enum Dialed {
    /// A session ran and ended (or the node is shutting down).
    SessionEnded,
    /// Woken while connecting (`sync_now`, a new address, pause): dial again at once. A QUIC
    /// handshake whose first packet went to a desktop that was not up yet would otherwise wait
    /// for its retransmission timer (about a second) before reaching the desktop now listening.
    Restart,
}

/// Why a connection to the desktop failed, in words a user can act on. A desktop that does not
/// offer `deskhand/sync/4` fails the TLS handshake with `no_application_protocol` (alert 120).
fn connect_error(e: &str) -> String {
    if e.contains("no_application_protocol")
        || e.contains("error 120")
        || e.contains("known protocol")
    {
        "the desktop does not speak sync protocol 4 (a workspace of one document per week): it runs an older Deskhand; update Deskhand on the desktop".into()
    } else {
        format!("cannot connect to the desktop: {e}")
    }
}

async fn dial_once(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    home: DeviceId,
    to: &DesktopAddrs,
    cancel: &CancellationToken,
) -> Result<Dialed, String> {
    let addr =
        endpoint::peer_addr(&home, &to.addrs, to.relay.as_deref()).map_err(|e| e.to_string())?;
    let abandon = || {
        shared
            .abandoned_dial
            .store(true, std::sync::atomic::Ordering::SeqCst)
    };
    let started = tokio::time::Instant::now();
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(addr, SYNC_ALPN));
    tokio::pin!(connect);
    // Woken while connecting: start over, but not before the dial is RESTART_MIN_AGE old. A
    // younger dial's first packet reached the same desktop a moment ago, so starting over gains
    // nothing, and the handshake given up must drain (seconds) before the endpoint can close.
    let mut restart_at: Option<tokio::time::Instant> = None;
    let conn = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                abandon();
                return Ok(Dialed::SessionEnded);
            }
            _ = shared.wake_dialer.notified(), if restart_at.is_none() => {
                restart_at = Some(started + RESTART_MIN_AGE);
            }
            _ = tokio::time::sleep_until(restart_at.unwrap_or(started)), if restart_at.is_some() => {
                abandon();
                return Ok(Dialed::Restart);
            }
            r = &mut connect => match r {
                Err(_) => {
                    abandon();
                    return Err(format!(
                        "no answer from the desktop within {CONNECT_TIMEOUT:?} ({})",
                        tried(to, shared.mdns)
                    ));
                }
                Ok(Err(e)) => {
                    return Err(format!(
                        "{} ({})",
                        connect_error(&e.to_string()),
                        tried(to, shared.mdns)
                    ));
                }
                Ok(Ok(c)) => break c,
            }
        }
    };
    let (send, recv) = tokio::select! {
        _ = cancel.cancelled() => return Ok(Dialed::SessionEnded),
        r = conn.open_bi() => r.map_err(|e| {
            if let Some(iroh::endpoint::ConnectionError::ApplicationClosed(c)) = conn.close_reason()
                && c.error_code.into_inner() == u64::from(close_code::REVOKED)
            {
                shared.revoked_by(&home);
            }
            format!("desktop closed the connection: {e}")
        })?,
    };
    crate::driver::run_peer(
        shared.clone(),
        home,
        conn,
        send,
        recv,
        crate::driver::Side::Dial,
    )
    .await?;
    Ok(Dialed::SessionEnded)
}
