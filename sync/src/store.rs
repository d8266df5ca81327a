//! The redb store: one database file per device, one thread that owns it, an async handle.
//!
//! Writes are queued and executed by the store thread in arrival order; everything queued while
//! a commit is in progress goes into the next transaction, which is committed durably once
//! (group commit). A caller that must not go on before its write is on disk awaits it; others
//! pass a callback that runs after the commit. No transaction ever lives across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
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
        "no space left on the disk of {path}: the change was not saved (it is kept in memory, not sent, and saved with the next change once there is space)"
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

/// Writes the store thread performs.
#[derive(Debug)]
pub enum WriteOp {
    /// Appends an incremental document chunk.
    AppendChunk(Vec<u8>),
    /// Replaces the snapshot and drops every chunk stored so far (they are all in it: see
    /// the caller's ordering rule in `node.rs`).
    Compact(Vec<u8>),
    /// Sync state for a peer.
    PutSyncState(String, Vec<u8>),
    /// A peer record.
    PutPeer(String, Vec<u8>),
    /// Removes a peer record and its sync state.
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
    /// Drops the whole document, its id, every sync state and change signature (a phone
    /// forgetting its desktop).
    ClearDocument,
    /// The inner write together with change signatures (actor hex, `Signed` bytes), in one
    /// transaction: a change is never stored without the signature that proves it.
    WithSignatures(Box<WriteOp>, Vec<(String, Vec<u8>)>),
    /// Change signatures alone (actor hex, `Signed` bytes).
    PutSignatures(Vec<(String, Vec<u8>)>),
}

impl WriteOp {
    /// Whether the write replaces the snapshot (and drops the chunks).
    fn compacts(&self) -> bool {
        match self {
            WriteOp::Compact(_) => true,
            WriteOp::WithSignatures(inner, _) => inner.compacts(),
            _ => false,
        }
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type ReadFn = Box<dyn FnOnce(&Database) + Send>;

enum Req {
    Write(WriteOp, Option<Done>),
    Read(ReadFn),
    /// Sent when the owner goes away: finish what is queued, then stop, even if handles remain.
    Stop,
}

/// Everything read at open: what the node needs to start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The snapshot, if one was written.
    pub snapshot: Option<Vec<u8>>,
    /// Chunks after the snapshot, in order.
    pub chunks: Vec<Vec<u8>>,
    /// The secret key, if one was stored.
    pub identity: Option<Vec<u8>>,
    /// Meta values.
    pub meta: Vec<(String, Vec<u8>)>,
    /// Peers (id, JSON).
    pub peers: Vec<(String, Vec<u8>)>,
    /// Sync states (id, bytes).
    pub sync_states: Vec<(String, Vec<u8>)>,
    /// Pairing token records (hash hex, JSON).
    pub pairing_tokens: Vec<(String, Vec<u8>)>,
    /// Change signatures (actor hex, `Signed` bytes).
    pub signatures: Vec<(String, Vec<u8>)>,
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
        let db = std::panic::catch_unwind(|| Database::create(path))
            .map_err(|_| corrupt(&"the file is not a readable database"))?
            .map_err(open_err)?;
        restrict_permissions(path);
        let tx = db.begin_write().map_err(|e| corrupt(&e))?;
        migrations::run(&tx).map_err(|e| corrupt(&e))?;
        tx.commit().map_err(|e| io_error(path, e))?;
        let loaded = load(&db).map_err(|e| corrupt(&e))?;

        let (sender, rx) = mpsc::channel();
        let thread_path = path.to_owned();
        let handle = std::thread::Builder::new()
            .name("deskhand-store".into())
            .spawn(move || run(db, rx, thread_path))
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

fn load(db: &Database) -> Result<Loaded, redb::Error> {
    let rx = db.begin_read()?;
    let mut out = Loaded {
        snapshot: rx
            .open_table(DOC_SNAPSHOT)?
            .get("current")?
            .map(|v| v.value().to_vec()),
        ..Loaded::default()
    };
    for item in rx.open_table(DOC_CHUNKS)?.iter()? {
        let (_, v) = item?;
        out.chunks.push(v.value().to_vec());
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
        out.sync_states
            .push((k.value().to_owned(), v.value().to_vec()));
    }
    for item in rx.open_table(PAIRING_TOKENS)?.iter()? {
        let (k, v) = item?;
        out.pairing_tokens
            .push((k.value().to_owned(), v.value().to_vec()));
    }
    for item in rx.open_table(CHANGE_SIGNATURES)?.iter()? {
        let (k, v) = item?;
        out.signatures
            .push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

struct Counters {
    next_chunk: u64,
    next_audit: u64,
}

fn run(db: Database, rx: mpsc::Receiver<Req>, path: PathBuf) {
    let mut counters = counters_of(&db, &path);
    // None after an I/O error: redb must be closed and opened again before it is used.
    let mut db = Some(db);
    let mut pending_read: Option<ReadFn> = None;
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
            db = reopen(&path);
            if let Some(d) = &db {
                counters = counters_of(d, &path);
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
                    done(Err(StoreError::Io {
                        path: path.clone(),
                        reason: "the database could not be reopened after an I/O error".into(),
                    }));
                }
            }
            if stop {
                return;
            }
            continue;
        };
        let compacted = batch.iter().any(|(op, _)| op.compacts());
        match commit_batch(d, &mut counters, batch.iter().map(|(op, _)| op)) {
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
                    let r = commit_batch(d, &mut counters, std::iter::once(&op))
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

fn counters_of(db: &Database, path: &Path) -> Counters {
    next_keys(db).unwrap_or_else(|e| {
        tracing::error!(path = %path.display(), "store cannot read its counters: {e}");
        Counters {
            next_chunk: u64::MAX / 2,
            next_audit: u64::MAX / 2,
        }
    })
}

fn reopen(path: &Path) -> Option<Database> {
    match Database::create(path) {
        Ok(db) => Some(db),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot reopen the database: {e}");
            None
        }
    }
}

fn next_keys(db: &Database) -> Result<Counters, redb::Error> {
    let rx = db.begin_read()?;
    let next_chunk = rx
        .open_table(DOC_CHUNKS)?
        .last()?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(0);
    let next_audit = rx
        .open_table(AUDIT)?
        .last()?
        .map(|(k, _)| k.value() + 1)
        .unwrap_or(0);
    Ok(Counters {
        next_chunk,
        next_audit,
    })
}

fn commit_batch<'a>(
    db: &Database,
    counters: &mut Counters,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    let (mut chunk, mut audit) = (counters.next_chunk, counters.next_audit);
    for op in ops {
        apply_op(&tx, op, &mut chunk, &mut audit)?;
    }
    tx.commit()?;
    counters.next_chunk = chunk;
    counters.next_audit = audit;
    Ok(())
}

fn apply_op(
    tx: &redb::WriteTransaction,
    op: &WriteOp,
    chunk: &mut u64,
    audit: &mut u64,
) -> Result<(), redb::Error> {
    match op {
        WriteOp::AppendChunk(bytes) => {
            tx.open_table(DOC_CHUNKS)?
                .insert(*chunk, bytes.as_slice())?;
            *chunk += 1;
        }
        WriteOp::Compact(snapshot) => {
            tx.open_table(DOC_SNAPSHOT)?
                .insert("current", snapshot.as_slice())?;
            let mut chunks = tx.open_table(DOC_CHUNKS)?;
            chunks.retain(|_, _| false)?;
            debug_assert_eq!(chunks.len()?, 0);
        }
        WriteOp::PutSyncState(k, v) => {
            tx.open_table(SYNC_STATES)?
                .insert(k.as_str(), v.as_slice())?;
        }
        WriteOp::PutPeer(k, v) => {
            tx.open_table(PEERS)?.insert(k.as_str(), v.as_slice())?;
        }
        WriteOp::RemovePeer(k) => {
            tx.open_table(PEERS)?.remove(k.as_str())?;
            tx.open_table(SYNC_STATES)?.remove(k.as_str())?;
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
        WriteOp::ClearDocument => {
            tx.open_table(DOC_SNAPSHOT)?.retain(|_, _| false)?;
            tx.open_table(DOC_CHUNKS)?.retain(|_, _| false)?;
            tx.open_table(SYNC_STATES)?.retain(|_, _| false)?;
            tx.open_table(META)?.remove("doc_id")?;
            tx.open_table(CHANGE_SIGNATURES)?.retain(|_, _| false)?;
            tx.open_table(META)?.remove("own_history_signed")?;
        }
        WriteOp::WithSignatures(inner, signatures) => {
            apply_op(tx, inner, chunk, audit)?;
            put_signatures(tx, signatures)?;
        }
        WriteOp::PutSignatures(signatures) => put_signatures(tx, signatures)?,
        WriteOp::Audit(event) => {
            tx.open_table(AUDIT)?.insert(*audit, event.as_str())?;
            *audit += 1;
        }
    }
    Ok(())
}

fn put_signatures(
    tx: &redb::WriteTransaction,
    signatures: &[(String, Vec<u8>)],
) -> Result<(), redb::Error> {
    let mut t = tx.open_table(CHANGE_SIGNATURES)?;
    for (actor, signed) in signatures {
        t.insert(actor.as_str(), signed.as_slice())?;
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
