//! The workspace's layout on a node: a root document and one conversation document per week
//! (issue 16), of which only those in use are loaded.
//!
//! - What the node knows of each week without loading it ([`WeekInfo`]: heads, counts) is kept
//!   in memory and in the store's `doc_info` table, written in the same transaction as each of
//!   the week's changes.
//! - The desktop announces it to each phone as a [`Catalog`] on the connection's catalog stream;
//!   the phone compares it with its own ([`choose`]) and opens the weeks it needs now; the rest
//!   it keeps as "older", loaded page by page.
//! - A single-document workspace (schema 1) is split when the desktop opens it
//!   ([`split_workspace`]); a phone that still holds one sets it aside.

use std::collections::BTreeMap;
use std::sync::Arc;

use automerge::{Automerge, ChangeHash};
use deskhand_core::catalog::{Catalog, HeadsDigest, choose};
use deskhand_core::conversation::{
    ConversationWeek, SplitPlan, WeekCounts, conversation_doc_id, week_counts,
};
use deskhand_core::schema::Workspace;
use deskhand_core::{DeviceId, DocId};

use super::{DocState, NodeError, Shared, lock, random_bytes};
use crate::store::{DocInfo, DocKey, StoreError, WriteOp};

/// The messages a phone wants at hand without asking: the newest weeks that together hold at
/// least this many are loaded at start and synced first.
pub(crate) const RECENT_MESSAGES: u64 = 50;

/// What a node knows of one week's document without loading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WeekInfo {
    pub(crate) key: DocKey,
    /// Its heads as stored.
    pub(crate) heads: Vec<ChangeHash>,
    /// Messages (always current); open tasks and pending approvals as of `counted`.
    pub(crate) counts: WeekCounts,
    /// The heads the open tasks and pending approvals were counted at.
    pub(crate) counted: Vec<ChangeHash>,
}

impl WeekInfo {
    fn to_record(&self, week: ConversationWeek) -> DocInfo {
        let hex = |hs: &[ChangeHash]| hs.iter().map(|h| h.to_string()).collect();
        DocInfo {
            week: week.label(),
            heads: hex(&self.heads),
            messages: self.counts.messages,
            open_tasks: self.counts.open_tasks,
            pending_approvals: self.counts.pending_approvals,
            counted: hex(&self.counted),
        }
    }

    fn bytes(&self, week: ConversationWeek) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(&self.to_record(week)).unwrap_or_default()
    }

    /// The record read from the store; `None` when its week or a hash does not parse.
    pub(crate) fn from_record(key: DocKey, r: &DocInfo) -> Option<(ConversationWeek, WeekInfo)> {
        let week = ConversationWeek::parse(&r.week).ok()?;
        let hashes = |hs: &[String]| -> Option<Vec<ChangeHash>> {
            hs.iter().map(|h| h.parse().ok()).collect()
        };
        Some((
            week,
            WeekInfo {
                key,
                heads: hashes(&r.heads)?,
                counts: WeekCounts {
                    messages: r.messages,
                    open_tasks: r.open_tasks,
                    pending_approvals: r.pending_approvals,
                },
                counted: hashes(&r.counted)?,
            },
        ))
    }

    /// Whether the week must be loaded for the executor or the user to act on it: open tasks
    /// or pending approvals, or counts that may be stale.
    fn active(&self) -> bool {
        self.counts.open_tasks > 0 || self.counts.pending_approvals > 0 || !self.counted_now()
    }

    fn counted_now(&self) -> bool {
        same_heads(&self.counted, &self.heads)
    }
}

fn same_heads(a: &[ChangeHash], b: &[ChangeHash]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

impl Shared {
    /// Records that week document `ds` is about to be stored at `heads`, and returns the
    /// `doc_info` record to store in the same transaction. Its message count is read now (a
    /// list's length); open tasks and pending approvals are recounted when a catalog is
    /// built ([`Shared::catalog`]), off the path of every change.
    pub(crate) fn note_week_stored(&self, ds: &DocState, week: ConversationWeek) -> WriteOp {
        let heads = ds.doc.get_heads();
        let messages = Workspace::message_count(&ds.doc) as u64;
        let bytes = {
            let mut infos = lock(&self.infos);
            let info = infos.entry(week).or_insert_with(|| WeekInfo {
                key: ds.key.clone(),
                heads: Vec::new(),
                counts: WeekCounts::default(),
                counted: Vec::new(),
            });
            info.heads = heads;
            info.counts.messages = messages;
            info.bytes(week)
        };
        self.catalog_gen.send_modify(|g| *g += 1);
        WriteOp::PutDocInfo(ds.key.clone(), bytes)
    }

    /// Per week this device holds, its document's key, heads digest and counts, oldest first.
    /// Loaded weeks whose open tasks and pending approvals were counted at older heads are
    /// recounted first (and the counts stored).
    pub(crate) fn catalog_entries(
        &self,
    ) -> Vec<(ConversationWeek, DocKey, HeadsDigest, WeekCounts)> {
        self.recount_weeks();
        self.known_weeks()
    }

    /// Per week this device holds, as last recorded (no document is read: cheap enough for
    /// every change), oldest first.
    pub(crate) fn known_weeks(&self) -> Vec<(ConversationWeek, DocKey, HeadsDigest, WeekCounts)> {
        lock(&self.infos)
            .iter()
            .map(|(w, i)| (*w, i.key.clone(), HeadsDigest::of(&i.heads), i.counts))
            .collect()
    }

    /// Recounts the open tasks and pending approvals of the loaded weeks counted at older
    /// heads, and stores the counts. Reads every task of such a week under its lock, so it runs
    /// when a catalog is sent and at shutdown, not with every change.
    pub(crate) fn recount_weeks(&self) {
        for handle in self.loaded() {
            let ds = lock(&handle);
            let Some(week) = ds.week else { continue };
            let heads = ds.doc.get_heads();
            let stale = lock(&self.infos)
                .get(&week)
                .is_some_and(|i| !same_heads(&i.counted, &heads));
            if !stale {
                continue;
            }
            let counts = week_counts(&ds.doc);
            let key = ds.key.clone();
            drop(ds);
            let bytes = {
                let mut infos = lock(&self.infos);
                let Some(info) = infos.get_mut(&week) else {
                    continue;
                };
                info.counts = counts;
                info.counted = heads;
                info.bytes(week)
            };
            self.store.queue(WriteOp::PutDocInfo(key, bytes), None);
        }
    }

    /// This device's catalog (see [`Shared::catalog_entries`]).
    pub(crate) fn catalog(&self) -> Catalog {
        Catalog::with_counts(
            self.catalog_entries()
                .into_iter()
                .map(|(w, _, d, c)| (w, d, c)),
        )
    }

    /// Phone: the desktop announced `desktop`. Opens the weeks to sync now ([`choose`]) and
    /// keeps the rest as the older pages. Returns the keys of every week that now syncs.
    pub(crate) async fn on_desktop_catalog(&self, desktop: Catalog) -> Vec<DocKey> {
        let Some(workspace) = lock(&self.main).doc_id else {
            return Vec::new();
        };
        // Only the phone's digests matter to `choose`: no week is recounted for it.
        let held = Catalog::new(self.known_weeks().into_iter().map(|(w, _, d, _)| (w, d)));
        let choice = choose(&desktop, &held, RECENT_MESSAGES);
        let mut keys = Vec::new();
        for week in &choice.now {
            match self.open_week(workspace, *week).await {
                Ok(h) => keys.push(lock(&h).key.clone()),
                Err(e) => tracing::warn!("cannot open the conversation of {}: {e}", week.label()),
            }
        }
        let loaded: std::collections::HashSet<DocKey> = lock(&self.docs).keys().cloned().collect();
        *lock(&self.older) = choice
            .later
            .into_iter()
            .filter(|w| !loaded.contains(&DocKey::of(&conversation_doc_id(&workspace, *w))))
            .collect();
        *lock(&self.desktop_catalog) = Some(desktop);
        keys
    }

    /// Phone: loads the next `weeks` older weeks (newest first) of those the desktop
    /// announced and this phone has not loaded; their streams open on the live connection.
    /// Returns the weeks loaded.
    pub(crate) async fn load_older(
        &self,
        weeks: usize,
    ) -> Result<Vec<ConversationWeek>, NodeError> {
        let workspace = lock(&self.main).doc_id.ok_or(NodeError::NoWorkspace)?;
        let take: Vec<ConversationWeek> = {
            let mut older = lock(&self.older);
            let n = weeks.min(older.len());
            older.drain(..n).collect()
        };
        let mut keys = Vec::new();
        for week in &take {
            let handle = self.open_week(workspace, *week).await?;
            keys.push(lock(&handle).key.clone());
        }
        self.streams_opening(&keys);
        Ok(take)
    }

    /// Loads, at start, the weeks this device needs at hand:
    /// - the desktop: the current week, and every week with open tasks or pending approvals
    ///   (or counts that may be stale), so that the executor sees them;
    /// - a phone: its newest weeks that together hold [`RECENT_MESSAGES`] messages, and every
    ///   week with open tasks or pending approvals.
    ///
    /// The rest stays on disk until a peer or the user asks for it; a phone lists it as its
    /// older pages ([`Shared::load_older`]), so that it pages back offline too.
    pub(crate) async fn load_weeks_at_start(&self, desktop: bool) -> Result<(), NodeError> {
        let Some(workspace) = lock(&self.main).doc_id else {
            return Ok(());
        };
        if Workspace::is_single(&lock(&self.main).doc) {
            return Ok(());
        }
        let infos: Vec<(ConversationWeek, WeekInfo)> = lock(&self.infos)
            .iter()
            .map(|(w, i)| (*w, i.clone()))
            .collect();
        let mut wanted: Vec<ConversationWeek> = infos
            .iter()
            .filter(|(_, i)| i.active())
            .map(|(w, _)| *w)
            .collect();
        if desktop {
            wanted.push(ConversationWeek::of_unix_ms(self.wall_ms())?);
        } else {
            let mut seen = 0u64;
            for (w, i) in infos.iter().rev() {
                if seen >= RECENT_MESSAGES {
                    break;
                }
                seen += i.counts.messages;
                wanted.push(*w);
            }
        }
        wanted.sort();
        wanted.dedup();
        if !desktop {
            // Until the desktop's catalog says more, the older pages are the weeks held here.
            *lock(&self.older) = infos
                .iter()
                .rev()
                .map(|(w, _)| *w)
                .filter(|w| wanted.binary_search(w).is_err())
                .collect();
        }
        for week in wanted {
            self.open_week(workspace, week).await?;
        }
        Ok(())
    }

    /// Unloads the week documents unused for `idle` (see [`super::Node::unload_idle_weeks`]).
    /// A document is dropped only when this map holds its one handle (no session, writer or
    /// reader has it), its lock is free, everything of it is stored, and its recorded counts
    /// were taken at its heads and show no open task or pending approval. Returns how many.
    pub(crate) fn unload_idle_weeks(&self, idle: std::time::Duration) -> usize {
        let now = self.now_ms();
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let this_week = ConversationWeek::of_unix_ms(self.wall_ms()).ok();
        let infos = lock(&self.infos).clone();
        let mut docs = lock(&self.docs);
        let before = docs.len();
        docs.retain(|_, l| {
            if Arc::strong_count(&l.handle) > 1 || now.saturating_sub(l.used_ms) < idle_ms {
                return true;
            }
            // Held by someone right now: kept (never waited for, under the map's lock).
            let Ok(ds) = l.handle.try_lock() else {
                return true;
            };
            let Some(week) = ds.week else { return true };
            if Some(week) == this_week
                || ds.hub.durability().is_dirty()
                || ds.hub.durability().book_unsaved()
            {
                return true;
            }
            let quiet = infos
                .get(&week)
                .is_some_and(|i| !i.active() && same_heads(&i.heads, &ds.doc.get_heads()));
            !quiet
        });
        before - docs.len()
    }

    /// Forgets what is known of the weeks (a phone forgetting its desktop).
    pub(crate) fn forget_weeks(&self) {
        lock(&self.infos).clear();
        lock(&self.older).clear();
        *lock(&self.desktop_catalog) = None;
    }
}

/// Reads the `doc_info` records loaded at open.
pub(crate) fn week_infos(records: &[(DocKey, DocInfo)]) -> BTreeMap<ConversationWeek, WeekInfo> {
    records
        .iter()
        .filter_map(|(k, r)| {
            let parsed = WeekInfo::from_record(k.clone(), r);
            if parsed.is_none() {
                tracing::warn!(document = %k, "skipping an unreadable document record");
            }
            parsed
        })
        .collect()
}

/// Desktop: splits the single-document workspace (schema 1) in `shared.main` into a root and
/// one document per week ([`deskhand_core::conversation::split_v1`]'s rules, the weeks built on
/// two threads), and stores them: every week first, each with its `doc_info` record, then the
/// root in place of the old document, with the old document's signatures and sync states
/// dropped. A crash before the root is stored leaves the old document, which splits again to
/// the same bytes on the next start. Nothing of the conversation is lost: every value is copied
/// as it is.
///
/// # Errors
/// [`NodeError::NoWorkspace`] without a workspace id; [`NodeError::CorruptDocument`] if the
/// split fails; [`NodeError::Store`] if a write fails (the old document stays).
pub(crate) async fn split_workspace(
    shared: &Arc<Shared>,
    device: DeviceId,
) -> Result<(), NodeError> {
    let workspace: DocId = lock(&shared.main).doc_id.ok_or(NodeError::NoWorkspace)?;
    let started = std::time::Instant::now();
    // Moved out while it is split (nothing else runs yet), put back if the split fails.
    let v1 = std::mem::take(&mut lock(&shared.main).doc);
    let built = tokio::task::spawn_blocking(move || {
        let r = build_split(&v1, &workspace);
        (v1, r)
    })
    .await
    .map_err(|e| NodeError::CorruptDocument {
        path: shared.path.clone(),
        reason: format!("splitting the workspace failed: {e}"),
    })?;
    let (v1, result) = built;
    let (weeks, root) = match result {
        Ok(r) => r,
        Err(e) => {
            lock(&shared.main).doc = v1;
            return Err(NodeError::CorruptDocument {
                path: shared.path.clone(),
                reason: format!("splitting the workspace into weeks failed: {e}"),
            });
        }
    };
    let count = weeks.len();
    let mut infos = BTreeMap::new();
    for (week, bytes, counts, heads) in weeks {
        let key = DocKey::of(&conversation_doc_id(&workspace, week));
        let info = WeekInfo {
            key: key.clone(),
            counted: heads.clone(),
            heads,
            counts,
        };
        let record = info.bytes(week);
        let written = shared
            .store
            .write(WriteOp::Batch(vec![
                WriteOp::Compact(key.clone(), bytes),
                WriteOp::ResetDoc(key.clone()),
                WriteOp::PutDocInfo(key, record),
            ]))
            .await;
        if let Err(e) = written {
            lock(&shared.main).doc = v1;
            return Err(e.into());
        }
        infos.insert(week, info);
    }
    let root_bytes = root.save();
    if let Err(e) = shared
        .store
        .write(WriteOp::Batch(vec![
            WriteOp::Compact(DocKey::WORKSPACE, root_bytes),
            WriteOp::ResetDoc(DocKey::WORKSPACE),
        ]))
        .await
    {
        lock(&shared.main).doc = v1;
        return Err(e.into());
    }
    drop(v1);
    {
        let mut ds = lock(&shared.main);
        ds.doc = root;
        ds.doc.set_actor(device.session_actor(random_bytes()));
        let heads = ds.doc.get_heads();
        ds.hub.durability_mut().replaced(heads);
        ds.book.clear();
    }
    lock(&shared.sync_states).retain(|(_, d), _| *d != DocKey::WORKSPACE);
    *lock(&shared.infos) = infos;
    tracing::info!(
        weeks = count,
        ms = started.elapsed().as_millis() as u64,
        "split the single-document workspace into a root and one document per week"
    );
    Ok(())
}

type BuiltWeek = (ConversationWeek, Vec<u8>, WeekCounts, Vec<ChangeHash>);

/// The split of `v1`: per week its saved document, counts and heads, and the root.
fn build_split(
    v1: &Automerge,
    workspace: &DocId,
) -> Result<(Vec<BuiltWeek>, Automerge), deskhand_core::conversation::SplitError> {
    let plan = SplitPlan::new(v1, workspace)?;
    let weeks: Vec<ConversationWeek> = plan.weeks().collect();
    let (a, b) = weeks.split_at(weeks.len() / 2);
    let build = |part: &[ConversationWeek]| {
        part.iter()
            .map(|w| {
                let (doc, counts) = plan.build_week(v1, *w)?;
                Ok((*w, doc.save(), counts, doc.get_heads()))
            })
            .collect::<Result<Vec<BuiltWeek>, deskhand_core::conversation::SplitError>>()
    };
    let (first, second) = std::thread::scope(|s| {
        let other = s.spawn(|| build(b));
        let first = build(a);
        (first, other.join())
    });
    let mut out = first?;
    match second {
        Ok(r) => out.extend(r?),
        Err(_) => {
            return Err(deskhand_core::conversation::SplitError::NotVersion1(
                "a thread building weeks panicked".into(),
            ));
        }
    }
    let root = plan.build_root(v1)?;
    Ok((out, root))
}

/// Phone: a workspace document still in the single-document layout (schema 1, from before the
/// update) is set aside under [`DocKey::LEGACY`] and the workspace starts empty: the desktop
/// sends its root and weeks. The legacy document is kept so that this phone's writes the
/// desktop never received can be written again into their weeks.
pub(crate) async fn set_aside_legacy(
    shared: &Arc<Shared>,
    device: DeviceId,
) -> Result<(), StoreError> {
    let bytes = {
        let ds = lock(&shared.main);
        if !Workspace::is_single(&ds.doc) {
            return Ok(());
        }
        ds.doc.save()
    };
    shared
        .store
        .write(WriteOp::Batch(vec![
            WriteOp::Compact(DocKey::LEGACY, bytes),
            WriteOp::DropDoc(DocKey::WORKSPACE),
        ]))
        .await?;
    let mut ds = lock(&shared.main);
    ds.doc = Automerge::new().with_actor(device.session_actor(random_bytes()));
    ds.hub.durability_mut().replaced(Vec::new());
    ds.book.clear();
    drop(ds);
    lock(&shared.sync_states).retain(|(_, d), _| *d != DocKey::WORKSPACE);
    shared
        .legacy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(
        "set aside the single-document workspace of before the update; the desktop sends the new layout"
    );
    Ok(())
}
