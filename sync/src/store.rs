//! The redb store: one database file per device, one thread that owns it, an async handle.
//!
//! Writes are queued and executed by the store thread in arrival order; everything queued while
//! a commit is in progress goes into the next transaction, which is committed durably once
//! (group commit). A caller that must not go on before its write is on disk awaits it; others
//! pass a callback that runs after the commit. No transaction ever lives across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::migrations;
use crate::tables::*;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened.
    #[error("cannot open the database {path}: {reason}. The file was left untouched")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The database opened but its contents are damaged.
    #[error("the database {path} is damaged: {reason}. The file was left untouched")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is damaged.
        reason: String,
    },
    /// The disk is full; nothing of the failed write was kept, earlier commits are intact.
    #[error(
        "no space left on the disk of {path}: the change was not saved (it is kept in memory, not sent, and saved once there is space: with the next change, or retried while a peer is connected)"
    )]
    DiskFull {
        /// The file.
        path: PathBuf,
    },
    /// Any other storage failure.
    #[error("storage error in {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store thread has stopped.
    #[error("the store is closed")]
    Closed,
}

/// Which document a snapshot, chunk or sync state belongs to: the key of the document tables
/// (`tables::DOC_SNAPSHOTS`, `DOC_CHUNKS`, `SYNC_STATES`), ASCII: `workspace` or a document id
/// in hex.
///
/// Today a workspace is the one document [`DocKey::WORKSPACE`] (schema 1). The layout of several
/// documents (issue 16: a root and one conversation document per week) stores each under its own
/// key beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey(std::borrow::Cow<'static, str>);

impl DocKey {
    /// The workspace's own document: its root (schema 2), or the whole workspace in one
    /// document (schema 1; everything before migration 4 is stored here).
    pub const WORKSPACE: DocKey = DocKey(std::borrow::Cow::Borrowed("workspace"));

    /// A phone's single-document workspace of before the multi-document layout, set aside
    /// until its own unsent writes are written again into their weeks.
    pub const LEGACY: DocKey = DocKey(std::borrow::Cow::Borrowed("legacy"));

    /// A document stored under its own id (32 lowercase hex digits), such as a week's
    /// conversation document (`deskhand_core::conversation_doc_id`).
    pub fn of(id: &deskhand_core::DocId) -> DocKey {
        DocKey(std::borrow::Cow::Owned(id.to_string()))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the document stored under this key, when the key is one
    /// ([`DocKey::of`]); `None` for [`DocKey::WORKSPACE`].
    pub fn doc_id(&self) -> Option<deskhand_core::DocId> {
        self.0.parse().ok()
    }
}

impl std::fmt::Display for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stored document as [`Store::load_doc`] reads it.
#[derive(Debug, Default)]
pub struct LoadedDoc {
    /// The snapshot, if one was written.
    pub snapshot: Option<Vec<u8>>,
    /// Chunks after the snapshot, in the order they were written.
    pub chunks: Vec<Vec<u8>>,
    /// Per actor (hex), the signature of its latest change in this document (`Signed` bytes).
    pub signatures: Vec<(String, Vec<u8>)>,
}

impl LoadedDoc {
    /// The document: the snapshot (or an empty document) with every chunk loaded after it.
    ///
    /// # Errors
    /// [`LoadDocError`] names the part that does not load.
    pub fn load(&self) -> Result<automerge::Automerge, LoadDocError> {
        let mut doc = match &self.snapshot {
            Some(s) => {
                automerge::Automerge::load(s).map_err(|e| LoadDocError::Snapshot(Box::new(e)))?
            }
            None => automerge::Automerge::new(),
        };
        for (index, chunk) in self.chunks.iter().enumerate() {
            doc.load_incremental(chunk)
                .map_err(|e| LoadDocError::Chunk {
                    index,
                    source: Box::new(e),
                })?;
        }
        Ok(doc)
    }
}

/// Why a stored document does not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadDocError {
    /// The snapshot is not an Automerge document.
    #[error("snapshot: {0}")]
    Snapshot(Box<automerge::AutomergeError>),
    /// A chunk is not Automerge changes.
    #[error("chunk {index} after the snapshot: {source}")]
    Chunk {
        /// Its position after the snapshot (0-based).
        index: usize,
        /// What Automerge said.
        source: Box<automerge::AutomergeError>,
    },
}

/// Writes the store thread performs.
#[derive(Debug)]
pub enum WriteOp {
    /// Appends an incremental chunk to a document.
    AppendChunk(DocKey, Vec<u8>),
    /// Replaces a document's snapshot and drops every chunk of that document stored so far
    /// (they are all in it: see the caller's ordering rule in `node.rs`). Other documents'
    /// chunks stay.
    Compact(DocKey, Vec<u8>),
    /// Sync state of a peer (device id) for a document.
    PutSyncState {
        /// The peer's device id.
        peer: String,
        /// The document.
        doc: DocKey,
        /// Automerge's encoded `sync::State`.
        state: Vec<u8>,
    },
    /// A peer record.
    PutPeer(String, Vec<u8>),
    /// Removes a peer record and its sync states for every document.
    RemovePeer(String),
    /// A meta value.
    PutMeta(&'static str, Vec<u8>),
    /// Removes a meta value.
    DeleteMeta(&'static str),
    /// The device's secret key.
    PutIdentity(Vec<u8>),
    /// An audit event (JSON).
    Audit(String),
    /// A pairing token record (key: SHA-256 of the token, hex).
    PutPairingToken(String, Vec<u8>),
    /// Drops every document, the workspace's id, every sync state and change signature (a
    /// phone forgetting its desktop).
    ClearDocuments,
    /// The inner write together with change signatures of a document (actor hex, `Signed`
    /// bytes), in one transaction: a change is never stored without the signature that proves
    /// it.
    WithSignatures(Box<WriteOp>, DocKey, Vec<(String, Vec<u8>)>),
    /// Change signatures of a document alone (actor hex, `Signed` bytes).
    PutSignatures(DocKey, Vec<(String, Vec<u8>)>),
    /// What the node knows of a conversation document without loading it ([`DocInfo`]).
    PutDocInfo(DocKey, Vec<u8>),
    /// Forgets a document's change signatures and every peer's sync state of it: its history
    /// was replaced (the root a split workspace starts from).
    ResetDoc(DocKey),
    /// Removes a document: its snapshot, chunks, signatures, sync states and record.
    DropDoc(DocKey),
    /// Several writes in one transaction, in order.
    Batch(Vec<WriteOp>),
}

impl WriteOp {
    /// Whether the write replaces the snapshot (and drops the chunks).
    fn compacts(&self) -> bool {
        match self {
            WriteOp::Compact(..) => true,
            WriteOp::WithSignatures(inner, ..) => inner.compacts(),
            WriteOp::Batch(ops) => ops.iter().any(WriteOp::compacts),
            _ => false,
        }
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Opens the database file (again, after an I/O error): redb's file backend, or in tests a
/// backend that fails on purpose.
type Opener = Arc<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;
type ReadFn = Box<dyn FnOnce(&Database) + Send>;

enum Req {
    Write(WriteOp, Option<Done>),
    Read(ReadFn),
    /// Sent when the owner goes away: finish what is queued, then stop, even if handles remain.
    Stop,
}

/// Everything read at open: what the node needs to start. Documents are not read here: each is
/// loaded when it is needed ([`Store::load_doc`]).
#[derive(Debug, Default)]
pub struct Loaded {
    /// The key of every stored document.
    pub doc_keys: std::collections::BTreeSet<DocKey>,
    /// The secret key, if one was stored.
    pub identity: Option<Vec<u8>>,
    /// Meta values.
    pub meta: Vec<(String, Vec<u8>)>,
    /// Peers (id, JSON).
    pub peers: Vec<(String, Vec<u8>)>,
    /// Sync states (peer device id, document, bytes).
    pub sync_states: Vec<(String, DocKey, Vec<u8>)>,
    /// Pairing token records (hash hex, JSON).
    pub pairing_tokens: Vec<(String, Vec<u8>)>,
    /// What is known of each conversation document without loading it.
    pub doc_info: Vec<(DocKey, DocInfo)>,
}

/// What a node keeps of a conversation document outside it, so that it can announce the
/// document and decide whether to load it without reading it. JSON in the `doc_info` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocInfo {
    /// Its week (ISO 8601 label, `2026-W48`).
    pub week: String,
    /// Its heads as stored (hex change hashes).
    pub heads: Vec<String>,
    /// Messages it holds (always current).
    pub messages: u64,
    /// Tasks not in a final state, as last counted.
    pub open_tasks: u64,
    /// Approval requests without a resolution, as last counted.
    pub pending_approvals: u64,
    /// The heads at which `open_tasks` and `pending_approvals` were counted: when they differ
    /// from `heads`, the counts may be stale (the document is loaded at start to recount).
    pub counted: Vec<String>,
}

/// Async handle to the store thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    tx: mpsc::Sender<Req>,
    path: PathBuf,
}

/// Owns the thread; joining it on drop makes sure the last commit finished.
#[derive(Debug)]
pub struct StoreThread {
    handle: Option<JoinHandle<()>>,
    tx: mpsc::Sender<Req>,
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        let _ = self.tx.send(Req::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    let reason = e.to_string();
    if reason.contains("No space left")
        || reason.contains("StorageFull")
        || reason.contains("os error 28")
    {
        StoreError::DiskFull {
            path: path.to_owned(),
        }
    } else {
        StoreError::Io {
            path: path.to_owned(),
            reason,
        }
    }
}

impl Store {
    /// Opens (or creates) the database file, migrates it, reads what the node needs, and starts
    /// the store thread. The thread stops when every handle is dropped.
    pub fn open(path: &Path) -> Result<(Store, StoreThread, Loaded), StoreError> {
        let file = path.to_owned();
        Self::open_with(path, Arc::new(move || create_database(&file)))
    }

    fn open_with(path: &Path, opener: Opener) -> Result<(Store, StoreThread, Loaded), StoreError> {
        let open_err = |e: redb::DatabaseError| StoreError::Open {
            path: path.to_owned(),
            reason: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "it is already open in another Deskhand process".to_owned()
                }
                other => other.to_string(),
            },
        };
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // A file that is absent or empty holds nothing. If creating the database in it fails
        // (a full disk), it is removed again: a half-written header would make every later
        // start fail with "not a redb database".
        let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        let opened = (|| {
            let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opener()))
                .map_err(|_| corrupt(&"the file is not a readable database"))?
                .map_err(open_err)?;
            restrict_permissions(path);
            let tx = db.begin_write().map_err(|e| corrupt(&e))?;
            migrations::run(&tx).map_err(|e| corrupt(&e))?;
            tx.commit().map_err(|e| io_error(path, e))?;
            let loaded = load(&db).map_err(|e| corrupt(&e))?;
            Ok((db, loaded))
        })();
        let (db, loaded) = match opened {
            Ok(v) => v,
            Err(e) => {
                if fresh {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };

        let (sender, rx) = mpsc::channel();
        let thread_path = path.to_owned();
        let handle = std::thread::Builder::new()
            .name("deskhand-store".into())
            .spawn(move || run(db, rx, thread_path, opener))
            .map_err(|e| io_error(path, e))?;
        Ok((
            Store {
                tx: sender.clone(),
                path: path.to_owned(),
            },
            StoreThread {
                handle: Some(handle),
                tx: sender,
            },
            loaded,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write; `done` runs on the store thread after the commit that holds it.
    /// Never blocks, so it may be called while holding a lock (this is how callers keep the
    /// order of their writes equal to the order of their document changes).
    pub fn queue(&self, op: WriteOp, done: Option<Done>) {
        if let Err(mpsc::SendError(Req::Write(_, Some(done)))) = self.tx.send(Req::Write(op, done))
        {
            done(Err(StoreError::Closed));
        }
    }

    /// Writes and waits until the write is durable.
    pub async fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue(
            op,
            Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        );
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The document stored under `key` (snapshot, chunks and change signatures), read on the
    /// store thread after every write queued before; `None` if nothing is stored under it.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the tables do not read; [`StoreError::Closed`] if the store
    /// thread is gone (or could not reopen the file after an I/O error).
    pub async fn load_doc(&self, key: &DocKey) -> Result<Option<LoadedDoc>, StoreError> {
        let key = key.clone();
        let path = self.path.clone();
        self.read(move |db| read_doc(db, &key))
            .await?
            .map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// [`Store::load_doc`] for code that is not async (tests, tools): blocks the calling
    /// thread until the store thread answers. Never call it from an async task.
    ///
    /// # Errors
    /// As [`Store::load_doc`].
    pub fn load_doc_blocking(&self, key: &DocKey) -> Result<Option<LoadedDoc>, StoreError> {
        let (tx, rx) = mpsc::channel();
        let key = key.clone();
        self.tx
            .send(Req::Read(Box::new(move |db| {
                let _ = tx.send(read_doc(db, &key));
            })))
            .map_err(|_| StoreError::Closed)?;
        rx.recv()
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Runs `f` on the store thread with the database (for reads).
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Req::Read(Box::new(move |db| {
                let _ = tx.send(f(db));
            })))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}
#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}

/// Everything the node needs at start (documents are loaded one by one: [`read_doc`]).
fn load(db: &Database) -> Result<Loaded, redb::Error> {
    let rx = db.begin_read()?;
    let mut out = Loaded::default();
    for item in rx.open_table(DOC_SNAPSHOTS)?.iter()? {
        let (k, _) = item?;
        out.doc_keys.insert(doc_key(k.value()));
    }
    // A document with chunks but no snapshot yet: one seek per such document.
    let chunks = rx.open_table(DOC_CHUNKS)?;
    let mut from = String::new();
    while let Some(item) = chunks.range((from.as_str(), 0)..)?.next() {
        let (k, _) = item?;
        let doc = k.value().0.to_owned();
        out.doc_keys.insert(doc_key(&doc));
        // The next key after every chunk of `doc`: `doc` followed by the smallest character.
        from = doc + "\0";
    }
    out.identity = rx
        .open_table(IDENTITY)?
        .get("secret")?
        .map(|v| v.value().to_vec());
    for item in rx.open_table(META)?.iter()? {
        let (k, v) = item?;
        out.meta.push((k.value().to_owned(), v.value().to_vec()));
    }
    for item in rx.open_table(PEERS)?.iter()? {
        let (k, v) = item?;
        out.peers.push((k.value().to_owned(), v.value().to_vec()));
    }
    for item in rx.open_table(SYNC_STATES)?.iter()? {
        let (k, v) = item?;
        let (peer, doc) = k.value();
        out.sync_states
            .push((peer.to_owned(), doc_key(doc), v.value().to_vec()));
    }
    for item in rx.open_table(PAIRING_TOKENS)?.iter()? {
        let (k, v) = item?;
        out.pairing_tokens
            .push((k.value().to_owned(), v.value().to_vec()));
    }
    for item in rx.open_table(DOC_INFO)?.iter()? {
        let (k, v) = item?;
        match serde_json::from_slice::<DocInfo>(v.value()) {
            Ok(info) => out.doc_info.push((doc_key(k.value()), info)),
            // Without it the document is still stored: it is announced once it is loaded.
            Err(e) => tracing::warn!(
                "skipping the unreadable record of document {}: {e}",
                k.value()
            ),
        }
    }
    Ok(out)
}

/// The document stored under `key`, or `None`.
fn read_doc(db: &Database, key: &DocKey) -> Result<Option<LoadedDoc>, redb::Error> {
    let rx = db.begin_read()?;
    let k = key.as_str();
    let mut out = LoadedDoc {
        snapshot: rx
            .open_table(DOC_SNAPSHOTS)?
            .get(k)?
            .map(|v| v.value().to_vec()),
        ..LoadedDoc::default()
    };
    for item in rx.open_table(DOC_CHUNKS)?.range((k, 0)..=(k, u64::MAX))? {
        out.chunks.push(item?.1.value().to_vec());
    }
    if out.snapshot.is_none() && out.chunks.is_empty() {
        return Ok(None);
    }
    for item in rx.open_table(CHANGE_SIGNATURES)?.range((k, "")..)? {
        let (key, v) = item?;
        let (doc, actor) = key.value();
        if doc != k {
            break;
        }
        out.signatures.push((actor.to_owned(), v.value().to_vec()));
    }
    Ok(Some(out))
}

/// A stored key as a `DocKey` (the known ones without allocating).
fn doc_key(stored: &str) -> DocKey {
    if stored == DocKey::WORKSPACE.as_str() {
        DocKey::WORKSPACE
    } else {
        DocKey(std::borrow::Cow::Owned(stored.to_owned()))
    }
}

fn run(db: Database, rx: mpsc::Receiver<Req>, path: PathBuf, opener: Opener) {
    let mut next_audit = audit_counter(&db, &path);
    // None after an I/O error: redb must be closed and opened again before it is used.
    let mut db = Some(db);
    let mut pending_read: Option<ReadFn> = None;
    // Why the last reopen failed, for the errors of the writes it fails.
    let mut reopen_error: Option<String> = None;
    loop {
        if let Some(f) = pending_read.take()
            && let Some(d) = &db
        {
            f(d);
        }
        let first = match rx.recv() {
            Ok(Req::Stop) | Err(_) => return,
            Ok(r) => r,
        };
        if db.is_none() {
            match reopen(&path, &opener) {
                Ok(d) => {
                    next_audit = audit_counter(&d, &path);
                    db = Some(d);
                    reopen_error = None;
                }
                Err(e) => reopen_error = Some(e),
            }
        }
        let mut batch = Vec::new();
        match first {
            Req::Read(f) => {
                // Without a database the reply channel is dropped: the caller sees `Closed`.
                if let Some(d) = &db {
                    f(d);
                }
                continue;
            }
            Req::Write(op, done) => batch.push((op, done)),
            Req::Stop => return,
        }
        let mut stop = false;
        while let Ok(r) = rx.try_recv() {
            match r {
                Req::Write(op, done) => batch.push((op, done)),
                Req::Stop => {
                    stop = true;
                    break;
                }
                Req::Read(f) => {
                    // Reads see everything queued before them: run after this batch.
                    pending_read = Some(f);
                    break;
                }
            }
        }
        let Some(d) = db.as_mut() else {
            for (_, done) in batch {
                if let Some(done) = done {
                    // Classified by its cause: a disk still full is reported as full.
                    done(Err(io_error(
                        &path,
                        format!(
                            "the database could not be reopened after an I/O error: {}",
                            reopen_error.as_deref().unwrap_or("unknown")
                        ),
                    )));
                }
            }
            if stop {
                return;
            }
            continue;
        };
        let compacted = batch.iter().any(|(op, _)| op.compacts());
        match commit_batch(d, &mut next_audit, batch.iter().map(|(op, _)| op)) {
            Ok(()) => {
                batch.into_iter().for_each(|(_, done)| {
                    if let Some(done) = done {
                        done(Ok(()))
                    }
                });
                if compacted {
                    // The chunks a snapshot replaced leave free pages behind: give them back to
                    // the file system (redb copies live pages down and truncates the file).
                    if let Err(e) = d.compact() {
                        tracing::debug!(path = %path.display(), "could not shrink the database file: {e}");
                    }
                }
            }
            Err(e @ (redb::Error::Io(_) | redb::Error::PreviousIo)) => {
                // The whole batch failed on the disk (full, or failing). Nothing of it was
                // committed; earlier commits are intact. Report it and reopen before the next.
                let text = e.to_string();
                tracing::error!(path = %path.display(), "writing failed: {text}");
                for (_, done) in batch {
                    if let Some(done) = done {
                        done(Err(io_error(&path, &text)));
                    }
                }
                db = None;
            }
            Err(e) => {
                // One bad write must not sink the others: retry one by one.
                tracing::warn!(path = %path.display(), "group commit failed ({e}); retrying writes one by one");
                for (op, done) in batch {
                    let r = commit_batch(d, &mut next_audit, std::iter::once(&op))
                        .map_err(|e| io_error(&path, e));
                    if let Err(e) = &r {
                        tracing::error!(path = %path.display(), "write failed: {e}");
                    }
                    if let Some(done) = done {
                        done(r)
                    }
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// The audit log's next sequence number as the file holds it.
fn audit_counter(db: &Database, path: &Path) -> u64 {
    next_audit(db).unwrap_or_else(|e| {
        tracing::error!(path = %path.display(), "store cannot read its audit counter: {e}");
        u64::MAX / 2
    })
}

/// `Database::create`, or with the fault-injection build and a store crash point armed, the same
/// through a backend that dies at that point.
fn create_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    #[cfg(feature = "fault-injection")]
    if crate::fault::wants(crate::fault::STORE_WRITE)
        || crate::fault::wants(crate::fault::STORE_SYNC)
    {
        return crate::fault::open_database(path);
    }
    Database::create(path)
}

/// Opens the database again after an I/O error; on failure, why (a disk still full says so).
fn reopen(path: &Path, opener: &Opener) -> Result<Database, String> {
    opener().map_err(|e| {
        tracing::error!(path = %path.display(), "cannot reopen the database: {e}");
        e.to_string()
    })
}

fn next_audit(db: &Database) -> Result<u64, redb::Error> {
    Ok(db
        .begin_read()?
        .open_table(AUDIT)?
        .last()?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(0))
}

fn commit_batch<'a>(
    db: &Database,
    next_audit: &mut u64,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    let mut audit = *next_audit;
    for op in ops {
        apply_op(&tx, op, &mut audit)?;
    }
    tx.commit()?;
    *next_audit = audit;
    Ok(())
}

fn apply_op(tx: &redb::WriteTransaction, op: &WriteOp, audit: &mut u64) -> Result<(), redb::Error> {
    match op {
        WriteOp::AppendChunk(doc, bytes) => {
            // Each document counts its own chunks: the next after its last (a seek).
            let doc = doc.as_str();
            let mut chunks = tx.open_table(DOC_CHUNKS)?;
            let next = chunks
                .range((doc, 0)..=(doc, u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value().1 + 1);
            chunks.insert((doc, next), bytes.as_slice())?;
        }
        WriteOp::Compact(doc, snapshot) => {
            tx.open_table(DOC_SNAPSHOTS)?
                .insert(doc.as_str(), snapshot.as_slice())?;
            tx.open_table(DOC_CHUNKS)?
                .retain_in((doc.as_str(), 0)..=(doc.as_str(), u64::MAX), |_, _| false)?;
        }
        WriteOp::PutSyncState { peer, doc, state } => {
            tx.open_table(SYNC_STATES)?
                .insert((peer.as_str(), doc.as_str()), state.as_slice())?;
        }
        WriteOp::PutPeer(k, v) => {
            tx.open_table(PEERS)?.insert(k.as_str(), v.as_slice())?;
        }
        WriteOp::RemovePeer(k) => {
            tx.open_table(PEERS)?.remove(k.as_str())?;
            tx.open_table(SYNC_STATES)?
                .retain(|(peer, _), _| peer != k.as_str())?;
        }
        WriteOp::PutMeta(k, v) => {
            tx.open_table(META)?.insert(*k, v.as_slice())?;
        }
        WriteOp::DeleteMeta(k) => {
            tx.open_table(META)?.remove(*k)?;
        }
        WriteOp::PutIdentity(v) => {
            tx.open_table(IDENTITY)?.insert("secret", v.as_slice())?;
        }
        WriteOp::PutPairingToken(k, v) => {
            tx.open_table(PAIRING_TOKENS)?
                .insert(k.as_str(), v.as_slice())?;
        }
        WriteOp::ClearDocuments => {
            tx.open_table(DOC_SNAPSHOTS)?.retain(|_, _| false)?;
            tx.open_table(DOC_CHUNKS)?.retain(|_, _| false)?;
            tx.open_table(SYNC_STATES)?.retain(|_, _| false)?;
            tx.open_table(META)?.remove("doc_id")?;
            tx.open_table(CHANGE_SIGNATURES)?.retain(|_, _| false)?;
            tx.open_table(DOC_INFO)?.retain(|_, _| false)?;
            tx.open_table(META)?.remove("own_history_signed")?;
        }
        WriteOp::WithSignatures(inner, doc, signatures) => {
            apply_op(tx, inner, audit)?;
            put_signatures(tx, doc, signatures)?;
        }
        WriteOp::PutSignatures(doc, signatures) => put_signatures(tx, doc, signatures)?,
        WriteOp::PutDocInfo(doc, info) => {
            tx.open_table(DOC_INFO)?
                .insert(doc.as_str(), info.as_slice())?;
        }
        WriteOp::ResetDoc(doc) => {
            let doc = doc.as_str();
            tx.open_table(CHANGE_SIGNATURES)?
                .retain(|(d, _), _| d != doc)?;
            tx.open_table(SYNC_STATES)?.retain(|(_, d), _| d != doc)?;
        }
        WriteOp::DropDoc(doc) => {
            let key = doc.as_str();
            tx.open_table(DOC_SNAPSHOTS)?.remove(key)?;
            tx.open_table(DOC_CHUNKS)?
                .retain_in((key, 0)..=(key, u64::MAX), |_, _| false)?;
            tx.open_table(DOC_INFO)?.remove(key)?;
            apply_op(tx, &WriteOp::ResetDoc(doc.clone()), audit)?;
        }
        WriteOp::Batch(ops) => {
            for op in ops {
                apply_op(tx, op, audit)?;
            }
        }
        WriteOp::Audit(event) => {
            tx.open_table(AUDIT)?.insert(*audit, event.as_str())?;
            *audit += 1;
        }
    }
    Ok(())
}

fn put_signatures(
    tx: &redb::WriteTransaction,
    doc: &DocKey,
    signatures: &[(String, Vec<u8>)],
) -> Result<(), redb::Error> {
    let mut t = tx.open_table(CHANGE_SIGNATURES)?;
    for (actor, signed) in signatures {
        t.insert((doc.as_str(), actor.as_str()), signed.as_slice())?;
    }
    Ok(())
}

/// Reads the audit log (oldest first).
pub fn read_audit(db: &Database) -> Result<Vec<String>, redb::Error> {
    let rx = db.begin_read()?;
    let t = rx.open_table(AUDIT)?;
    t.iter()?
        .map(|i| {
            i.map(|(_, v)| v.value().to_owned())
                .map_err(redb::Error::from)
        })
        .collect()
}

/// Documents stored apart, and migration 4 from the single-document tables.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test: a failure is a broken test
mod tests {
    use super::*;
    use redb::TableHandle;

    fn week() -> DocKey {
        DocKey::of(&deskhand_core::DocId::from_bytes([7; 16]))
    }

    fn stored(store: &Store, doc: &DocKey) -> LoadedDoc {
        store.load_doc_blocking(doc).unwrap().unwrap_or_default()
    }

    fn chunks(store: &Store, doc: &DocKey) -> Vec<Vec<u8>> {
        stored(store, doc).chunks
    }

    fn state(peer: &str, doc: DocKey, state: &[u8]) -> WriteOp {
        WriteOp::PutSyncState {
            peer: peer.into(),
            doc,
            state: state.to_vec(),
        }
    }

    #[tokio::test]
    async fn each_document_keeps_its_own_snapshot_chunks_and_sync_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deskhand.redb");
        let ws = DocKey::WORKSPACE;
        {
            let (store, _thread, _) = Store::open(&path).unwrap();
            for op in [
                WriteOp::AppendChunk(ws.clone(), b"w1".to_vec()),
                WriteOp::AppendChunk(week(), b"k1".to_vec()),
                WriteOp::AppendChunk(ws.clone(), b"w2".to_vec()),
                // Compacting one document leaves the other's chunks.
                WriteOp::Compact(ws.clone(), b"W".to_vec()),
                WriteOp::AppendChunk(ws.clone(), b"w3".to_vec()),
                state("alpha", ws.clone(), b"a-ws"),
                state("alpha", week(), b"a-week"),
                state("beta", week(), b"b-week"),
            ] {
                store.write(op).await.unwrap();
            }
        }
        {
            let (store, _thread, loaded) = Store::open(&path).unwrap();
            assert_eq!(loaded.doc_keys, [ws.clone(), week()].into());
            assert_eq!(stored(&store, &ws).snapshot.as_deref(), Some(&b"W"[..]));
            assert_eq!(chunks(&store, &ws), [b"w3"]);
            assert_eq!(stored(&store, &week()).snapshot, None);
            assert_eq!(chunks(&store, &week()), [b"k1"]);
            assert_eq!(loaded.sync_states.len(), 3);
            // After a restart, sequence numbers go on: a new chunk loads after the old ones.
            store
                .write(WriteOp::AppendChunk(week(), b"k2".to_vec()))
                .await
                .unwrap();
            // A removed peer loses its sync state for every document, no one else's.
            store
                .write(WriteOp::RemovePeer("alpha".into()))
                .await
                .unwrap();
        }
        {
            let (store, _thread, loaded) = Store::open(&path).unwrap();
            assert_eq!(chunks(&store, &week()), [b"k1", b"k2"]);
            assert_eq!(
                loaded.sync_states,
                [("beta".to_owned(), week(), b"b-week".to_vec())]
            );
            store.write(WriteOp::ClearDocuments).await.unwrap();
        }
        let (store, _thread, loaded) = Store::open(&path).unwrap();
        assert!(loaded.doc_keys.is_empty(), "{:?}", loaded.doc_keys);
        assert!(store.load_doc_blocking(&ws).unwrap().is_none());
        assert!(loaded.sync_states.is_empty());
    }

    /// A database as migrations 1–3 left it, written table by table: migration 4 moves its one
    /// document under `workspace`, keeps the chunks' order and each peer's sync state, and
    /// deletes the old tables.
    #[test]
    fn migration_4_moves_the_one_document_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deskhand.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(IDENTITY).unwrap();
            tx.open_table(PEERS).unwrap();
            tx.open_table(AUDIT).unwrap();
            tx.open_table(PAIRING_TOKENS).unwrap();
            tx.open_table(CHANGE_SIGNATURES_V1)
                .unwrap()
                .insert("a1", &b"signed"[..])
                .unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("migration", 3u64.to_be_bytes().as_slice())
                .unwrap();
            tx.open_table(DOC_SNAPSHOT_V1)
                .unwrap()
                .insert("current", &b"snapshot"[..])
                .unwrap();
            let mut c = tx.open_table(DOC_CHUNKS_V1).unwrap();
            // Out of insertion order on purpose: the sequence number orders them.
            c.insert(12, &b"third"[..]).unwrap();
            c.insert(3, &b"first"[..]).unwrap();
            c.insert(7, &b"second"[..]).unwrap();
            drop(c);
            let mut s = tx.open_table(SYNC_STATES_V1).unwrap();
            s.insert("alpha", &b"sa"[..]).unwrap();
            s.insert("beta", &b"sb"[..]).unwrap();
            drop(s);
            tx.commit().unwrap();
        }
        let (store, thread, loaded) = Store::open(&path).unwrap();
        let ws = DocKey::WORKSPACE;
        assert_eq!(loaded.doc_keys, [ws.clone()].into());
        let doc = stored(&store, &ws);
        assert_eq!(doc.snapshot.as_deref(), Some(&b"snapshot"[..]));
        assert_eq!(doc.chunks, [&b"first"[..], &b"second"[..], &b"third"[..]]);
        // Migration 5: the signatures belong to the one document.
        assert_eq!(doc.signatures, [("a1".to_owned(), b"signed".to_vec())]);
        assert_eq!(
            loaded.sync_states,
            [
                ("alpha".to_owned(), ws.clone(), b"sa".to_vec()),
                ("beta".to_owned(), ws.clone(), b"sb".to_vec()),
            ]
        );
        drop(store);
        drop(thread);
        let db = Database::open(&path).unwrap();
        let rx = db.begin_read().unwrap();
        let names: Vec<String> = rx
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        for old in [
            "doc_snapshot_v1",
            "doc_chunks_v1",
            "sync_states_v1",
            "change_signatures_v1",
        ] {
            assert!(!names.iter().any(|n| n == old), "{old} is left: {names:?}");
        }
        let meta = rx.open_table(META).unwrap();
        let m = meta.get("migration").unwrap().unwrap();
        assert_eq!(m.value(), migrations::LATEST.to_be_bytes());
        // Chunks written after the migration come after the moved ones.
        drop(meta);
        drop(rx);
        drop(db);
        let (store, _thread, _) = Store::open(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.write(WriteOp::AppendChunk(ws.clone(), b"fourth".to_vec())))
            .unwrap();
        drop(store);
        drop(_thread);
        let (store, _thread, _) = Store::open(&path).unwrap();
        assert_eq!(chunks(&store, &ws).last(), Some(&b"fourth".to_vec()));
    }
}

/// The store on a failing disk (redb's file backend wrapped by `fault::FaultyBackend`): each
/// round writes seeded groups of chunks while one fault happens at a seeded write or sync call,
/// then reopens the file through the plain backend and checks it.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test: a failure is a broken test
mod disk_fault_tests {
    use super::*;
    use crate::fault::{DiskFault, DiskFaults, FaultyBackend};

    fn workspace_chunks(path: &Path) -> Vec<Vec<u8>> {
        let (store, _thread, _) = Store::open(path)
            .unwrap_or_else(|e| panic!("the file does not open after the fault: {e}"));
        store
            .load_doc_blocking(&DocKey::WORKSPACE)
            .unwrap()
            .map_or(Vec::new(), |d| d.chunks)
    }

    /// splitmix64: each round is reproducible from its seed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    /// Rounds per fault: a few in the normal suite, `DESKHAND_STORE_FAULT_ROUNDS` in the long run
    /// (`scripts/faults crash`).
    fn rounds() -> u64 {
        std::env::var("DESKHAND_STORE_FAULT_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6)
    }

    fn opener(path: &Path, faults: Arc<DiskFaults>) -> Opener {
        let path = path.to_owned();
        Arc::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            Database::builder().create_with_backend(FaultyBackend::new(file, faults.clone())?)
        })
    }

    async fn round(fault: DiskFault, seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deskhand.redb");
        let mut rng = Rng(seed);
        // Opening (migrations) writes too: the fault may hit the open itself.
        let nth = 1 + rng.below(60);
        let faults = DiskFaults::at(fault, nth);
        let ctx = format!("{fault:?} at call {nth}, seed {seed}");
        let (mut acked, mut written) = (Vec::new(), Vec::new());
        let mut errors = Vec::new();
        let fired_in_use;
        match Store::open_with(&path, opener(&path, faults.clone())) {
            Err(e) => {
                assert!(faults.fired(), "{ctx}: open failed without a fault: {e}");
                fired_in_use = true;
                errors.push(e);
            }
            Ok((store, thread, _)) => {
                let groups = 30;
                for g in 0..groups {
                    // Several writes queued at once: one group commit.
                    let mut waiting = Vec::new();
                    for j in 0..1 + rng.below(4) {
                        let len = 16 + rng.below(9000) as usize;
                        let mut bytes = format!("chunk {seed} {g} {j} ").into_bytes();
                        bytes.resize(len, b'a' + (g % 26) as u8);
                        let (tx, rx) = oneshot::channel();
                        store.queue(
                            WriteOp::AppendChunk(DocKey::WORKSPACE, bytes.clone()),
                            Some(Box::new(move |r| {
                                let _ = tx.send(r);
                            })),
                        );
                        waiting.push((bytes, rx));
                    }
                    for (bytes, rx) in waiting {
                        written.push(bytes.clone());
                        match rx.await.unwrap() {
                            Ok(()) => acked.push(bytes),
                            Err(e) => errors.push(e),
                        }
                    }
                    // The disk comes back (space freed, the device replaced) two thirds in.
                    if g == groups * 2 / 3 {
                        faults.heal();
                    }
                }
                // After the fault the store recovers: the last write is stored (a fault that has
                // not happened yet is called off, so it cannot be this write's).
                faults.plan.lock().unwrap().take_if(|_| !faults.fired());
                let last = b"after the fault".to_vec();
                written.push(last.clone());
                store
                    .write(WriteOp::AppendChunk(DocKey::WORKSPACE, last.clone()))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{ctx}: the store did not recover after the disk came back: {e}")
                    });
                acked.push(last);
                // Only a fault while in use must show as an error (redb syncs again at close).
                fired_in_use = faults.fired();
                drop(store);
                drop(thread);
            }
        }
        if fired_in_use {
            assert!(
                !errors.is_empty(),
                "{ctx}: a fault fired and nothing failed"
            );
        }
        for e in &errors {
            let text = e.to_string();
            match (fault, e) {
                (DiskFault::DiskFull, StoreError::DiskFull { .. }) => {}
                // At open, redb's own error: "cannot open …: No space left on device".
                (DiskFault::DiskFull, StoreError::Open { .. } | StoreError::Corrupt { .. })
                    if text.contains("No space left") => {}
                (DiskFault::DiskFull, other) => {
                    panic!("{ctx}: a full disk reported as something else: {other}")
                }
                (
                    _,
                    StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::Open { .. },
                ) => {}
                (_, other) => panic!("{ctx}: unexpected error {other}"),
            }
            assert!(
                text.contains("deskhand.redb"),
                "{ctx}: {text} names no file"
            );
        }
        // A consistent store through redb's own file backend, with every acknowledged chunk,
        // in order, and nothing that was never written.
        let stored = workspace_chunks(&path);
        let mut at = 0;
        for a in &acked {
            let found = stored[at..].iter().position(|c| c == a);
            let Some(i) = found else {
                panic!(
                    "{ctx}: an acknowledged chunk ({} bytes) is missing or out of order",
                    a.len()
                )
            };
            at += i + 1;
        }
        for c in &stored {
            assert!(written.contains(c), "{ctx}: a chunk that was never written");
        }
    }

    async fn rounds_of(fault: DiskFault, base: u64) {
        for r in 0..rounds() {
            round(fault, base.wrapping_mul(1_000_003).wrapping_add(r)).await;
        }
    }

    /// Regression: a full disk while the file was being created left a half-written header,
    /// and every later start failed with "not a redb database".
    #[tokio::test]
    async fn a_database_whose_creation_hit_a_full_disk_is_created_afresh_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deskhand.redb");
        let faults = DiskFaults::at(DiskFault::DiskFull, 2);
        let e = Store::open_with(&path, opener(&path, faults.clone())).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        let (store, _thread, _) = Store::open(&path).unwrap();
        store
            .write(WriteOp::AppendChunk(DocKey::WORKSPACE, b"x".to_vec()))
            .await
            .unwrap();
    }

    /// Regression: while the disk stayed full, writes failed with "could not be reopened after
    /// an I/O error" instead of saying the disk is full.
    #[tokio::test]
    async fn writes_on_a_disk_that_stays_full_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deskhand.redb");
        let faults = DiskFaults::none();
        let (store, _thread, _) = Store::open_with(&path, opener(&path, faults.clone())).unwrap();
        store
            .write(WriteOp::AppendChunk(DocKey::WORKSPACE, b"kept".to_vec()))
            .await
            .unwrap();
        *faults.plan.lock().unwrap() = Some((DiskFault::DiskFull, 1));
        faults.writes.store(0, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            let e = store
                .write(WriteOp::AppendChunk(DocKey::WORKSPACE, b"lost".to_vec()))
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
        }
        faults.heal();
        store
            .write(WriteOp::AppendChunk(DocKey::WORKSPACE, b"after".to_vec()))
            .await
            .unwrap();
        drop(store);
        drop(_thread);
        assert_eq!(
            workspace_chunks(&path),
            vec![b"kept".to_vec(), b"after".to_vec()]
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_and_loses_nothing_acknowledged() {
        rounds_of(DiskFault::FailWrite, 1).await;
    }

    #[tokio::test]
    async fn a_failed_sync_is_reported_and_loses_nothing_acknowledged() {
        rounds_of(DiskFault::FailSync, 2).await;
    }

    #[tokio::test]
    async fn a_torn_write_is_reported_and_the_file_reopens_with_everything_acknowledged() {
        rounds_of(DiskFault::TearWrite, 3).await;
    }

    #[tokio::test]
    async fn a_full_disk_is_reported_as_such_and_the_store_resumes_once_space_is_freed() {
        rounds_of(DiskFault::DiskFull, 4).await;
    }
}
