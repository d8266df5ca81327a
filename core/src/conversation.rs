//! Conversation documents by week: the first step of the multi-document workspace (issue 16).
//!
//! A workspace used for a year must not make every start, relay and phone pay for its history,
//! so the conversation is to be split into one Automerge document per ISO 8601 week (UTC, the
//! desktop's clock). Every such document must stay writable by any device at any time — a phone
//! offline across a week boundary writes into the week of the day it wrote — and two devices
//! that start the same week independently must not create a conflict.
//!
//! That last rule is what this module settles. If two devices each made a fresh document for a
//! week, each with its own `messages` list, Automerge would keep both lists as a conflict at one
//! key and show only one of them: half the week's messages would be hidden. So a week's first
//! change — its *genesis* — is the same bytes on every device: a fixed actor derived from the
//! workspace and the week, time 0, no message, the same operations. Automerge identifies changes
//! by hash, so the geneses of two devices are one change, and their later changes (each with its
//! own actor) land in the one `messages` list, `tasks` map and `approvals` map. The document's
//! id is derived the same way, so every device names the week's document alike without asking.
//!
//! Not yet wired into the workspace, the store or the sync protocol (the next steps of
//! issue 16); its tests show the property the design rests on, on the Automerge this project
//! uses.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value};
use sha2::{Digest, Sha256};

use crate::DocId;

/// Schema version written into every conversation document.
pub const CONVERSATION_SCHEMA_VERSION: u64 = 2;

/// An ISO 8601 week: the week-numbering year and the week (1–53), as `2026-W48`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationWeek {
    /// ISO week-numbering year (may differ from the calendar year around New Year).
    pub year: i32,
    /// Week of that year, 1–53.
    pub week: u8,
}

/// Why a time or a label does not name a week.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeekError {
    /// The time is outside what a calendar date can hold (±9999 years).
    #[error("{0} ms is not a time a week can be given for")]
    OutOfRange(i64),
    /// The label is not `YYYY-Www` with a week that year has.
    #[error("{0:?} is not an ISO 8601 week (YYYY-Www, e.g. 2026-W48)")]
    BadLabel(String),
}

impl ConversationWeek {
    /// 1970-W01, the first week a workspace's documents use: the split puts items without a
    /// time there.
    pub const FIRST: ConversationWeek = ConversationWeek {
        year: 1970,
        week: 1,
    };

    /// The week after this one; `None` after the last week the calendar can hold.
    pub fn next(self) -> Option<Self> {
        const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
        Self::of_unix_ms(self.start_unix_ms().checked_add(WEEK_MS)?).ok()
    }

    /// The week holding the instant `unix_ms` (milliseconds since 1970-01-01T00:00Z, UTC).
    pub fn of_unix_ms(unix_ms: i64) -> Result<Self, WeekError> {
        let t = time::OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
            .map_err(|_| WeekError::OutOfRange(unix_ms))?;
        let (year, week, _) = t.to_iso_week_date();
        Ok(Self { year, week })
    }

    /// Week `week` of ISO year `year`, if that year has it (52 or 53 weeks; the time crate's
    /// years, ±9999).
    ///
    /// # Errors
    /// [`WeekError::BadLabel`] naming the week that does not exist.
    pub fn new(year: i32, week: u8) -> Result<Self, WeekError> {
        time::Date::from_iso_week_date(year, week, time::Weekday::Monday)
            .map(|_| Self { year, week })
            .map_err(|_| WeekError::BadLabel(format!("{year:04}-W{week:02}")))
    }

    /// Monday 00:00 UTC of this week, in unix milliseconds.
    pub fn start_unix_ms(self) -> i64 {
        // A week built by `of_unix_ms` or `parse` always has a Monday.
        time::Date::from_iso_week_date(self.year, self.week, time::Weekday::Monday)
            .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
            .unwrap_or(i64::MIN)
    }

    /// The label, `YYYY-Www` (ISO 8601 extended week date without the day).
    pub fn label(self) -> String {
        format!("{:04}-W{:02}", self.year, self.week)
    }

    /// Reads a label written by [`ConversationWeek::label`].
    pub fn parse(label: &str) -> Result<Self, WeekError> {
        let bad = || WeekError::BadLabel(label.chars().take(32).collect());
        let (y, w) = label.split_once("-W").ok_or_else(bad)?;
        if y.len() != 4 || w.len() != 2 || !(y.bytes().chain(w.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let (year, week) = (
            y.parse::<i32>().map_err(|_| bad())?,
            w.parse::<u8>().map_err(|_| bad())?,
        );
        time::Date::from_iso_week_date(year, week, time::Weekday::Monday).map_err(|_| bad())?;
        Ok(Self { year, week })
    }
}

/// 32 bytes derived from the workspace, the week and a purpose (SHA-256 over a domain-separated
/// input): the same on every device.
fn derive(workspace: &DocId, week: ConversationWeek, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"deskhand/conversation/v1\0");
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(workspace.as_bytes());
    h.update(week.label().as_bytes());
    h.finalize().into()
}

/// The id of the conversation document of `week` in `workspace`: derived, so every device names
/// it alike without asking.
pub fn conversation_doc_id(workspace: &DocId, week: ConversationWeek) -> DocId {
    let d = derive(workspace, week, "doc id");
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    DocId::from_bytes(id)
}

/// The actor of a week's genesis change. No device writes with it after the genesis.
pub fn genesis_actor(workspace: &DocId, week: ConversationWeek) -> ActorId {
    ActorId::from(&derive(workspace, week, "genesis actor")[..16])
}

/// The conversation document of `week` as it starts on every device: one change, byte for byte
/// the same everywhere (actor [`genesis_actor`], time 0, no message), holding
/// `schema_version`, `kind: "conversation"`, `week` (its label), and the empty `messages` list,
/// `tasks` map and `approvals` map. The caller sets its own actor before writing to it.
pub fn conversation_genesis(workspace: &DocId, week: ConversationWeek) -> Automerge {
    let mut doc = Automerge::new().with_actor(genesis_actor(workspace, week));
    let mut tx = doc.transaction();
    // Infallible on a fresh document: every key is new and every object is made here.
    let _ = tx.put(ROOT, "schema_version", CONVERSATION_SCHEMA_VERSION);
    let _ = tx.put(ROOT, "kind", "conversation");
    let _ = tx.put(ROOT, "week", week.label());
    let _ = tx.put_object(ROOT, "messages", ObjType::List);
    let _ = tx.put_object(ROOT, "tasks", ObjType::Map);
    let _ = tx.put_object(ROOT, "approvals", ObjType::Map);
    tx.commit_with(CommitOptions::default().with_time(0));
    doc
}

/// Schema version of the root document of a multi-document workspace.
pub const ROOT_SCHEMA_VERSION: u64 = 2;

/// A single-document (schema 1) workspace split into the multi-document layout.
#[derive(Debug)]
pub struct SplitWorkspace {
    /// The root: `schema_version` 2, `desktop` and `devices` as they were. It holds no index of
    /// the weeks: week documents are named by derivation ([`conversation_doc_id`]) and
    /// announced in the catalog (`crate::catalog`), so the root does not grow with history.
    pub root: Automerge,
    /// One conversation document per week that holds anything: its genesis, then one change
    /// with the week's messages (in conversation order), tasks and approvals.
    pub weeks: BTreeMap<ConversationWeek, Automerge>,
    /// What each of those weeks holds.
    pub counts: BTreeMap<ConversationWeek, WeekCounts>,
}

/// Why a document could not be split.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// It is not a schema-1 workspace.
    #[error("not a version-1 workspace: {0}")]
    NotVersion1(String),
    /// Automerge refused a read or a write while copying.
    #[error("copying the workspace failed: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// Splits the single-document workspace `v1` (schema 1) of `workspace` into a root and one
/// conversation document per ISO week, copying every value as it is (unknown fields too, and
/// items the typed schema would skip), so nothing of the conversation is lost:
/// - a message goes to the week of its `created_at` (the epoch's week when it has none);
/// - a task goes with the message it answers (`m-<message id>`), else to the week of its
///   `created_at`;
/// - an approval goes with its task, else to the week of its `requested_at`.
///
/// The result depends only on `v1`'s content: the copying changes are written by an actor
/// derived from the workspace and `v1`'s heads, at time 0, so devices that split the same
/// document get byte-identical documents (and each week's document starts with the same
/// genesis as [`conversation_genesis`]).
///
/// This is [`SplitPlan::new`], [`SplitPlan::build_week`] for every week in order, then
/// [`SplitPlan::build_root`]; a caller that wants the weeks on several threads, or the newest
/// first, calls those itself (the result is the same).
pub fn split_v1(v1: &Automerge, workspace: &DocId) -> Result<SplitWorkspace, SplitError> {
    let plan = SplitPlan::new(v1, workspace)?;
    let mut weeks = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for week in plan.weeks() {
        let (doc, c) = plan.build_week(v1, week)?;
        weeks.insert(week, doc);
        counts.insert(week, c);
    }
    let root = plan.build_root(v1)?;
    Ok(SplitWorkspace {
        root,
        weeks,
        counts,
    })
}

/// What a week's document holds after the split, for the root's index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeekCounts {
    /// Messages.
    pub messages: u64,
    /// Tasks not in a final state.
    pub open_tasks: u64,
    /// Approval requests not yet decided.
    pub pending_approvals: u64,
}

/// Where each item of a version-1 workspace goes (see [`split_v1`] for the rules), worked out
/// once from the document; the week documents are then built from it independently, in any
/// order or on several threads (each build only reads `v1`).
#[derive(Debug)]
pub struct SplitPlan {
    workspace: DocId,
    actor: ActorId,
    messages: Option<ObjId>,
    tasks: Option<ObjId>,
    approvals: Option<ObjId>,
    /// Per week, the indexes of its messages in the v1 list, in conversation order.
    by_week: BTreeMap<ConversationWeek, Vec<usize>>,
    message_week: BTreeMap<String, ConversationWeek>,
    task_week: BTreeMap<String, ConversationWeek>,
    approval_week: BTreeMap<String, ConversationWeek>,
    weeks: Vec<ConversationWeek>,
}

impl SplitPlan {
    /// Routes every item of `v1`.
    ///
    /// # Errors
    /// [`SplitError::NotVersion1`] unless `schema_version` is 1; [`SplitError::Automerge`] if a
    /// read fails.
    pub fn new(v1: &Automerge, workspace: &DocId) -> Result<Self, SplitError> {
        match v1.get(ROOT, "schema_version")? {
            Some((Value::Scalar(s), _)) if s.as_u64() == Some(1) => {}
            other => {
                return Err(SplitError::NotVersion1(format!(
                    "schema_version is {other:?}"
                )));
            }
        }
        let actor = {
            let mut h = Sha256::new();
            h.update(b"deskhand/conversation/v1\0migration 1 to 2\0");
            h.update(workspace.as_bytes());
            let mut heads = v1.get_heads();
            heads.sort();
            for head in heads {
                h.update(head.0);
            }
            ActorId::from(&h.finalize()[..16])
        };
        let messages = child(v1, &ROOT, "messages")?;
        let tasks = child(v1, &ROOT, "tasks")?;
        let approvals = child(v1, &ROOT, "approvals")?;
        let mut message_week: BTreeMap<String, ConversationWeek> = BTreeMap::new();
        let mut by_week: BTreeMap<ConversationWeek, Vec<usize>> = BTreeMap::new();
        if let Some(list) = &messages {
            for i in 0..v1.length(list) {
                let m = v1
                    .get(list, i)?
                    .and_then(|(v, id)| v.is_object().then_some(id));
                let week = week_at(m.as_ref().and_then(|m| int(v1, m, "created_at")));
                if let Some(id) = m.as_ref().and_then(|m| text(v1, m, "id")) {
                    message_week.insert(id, week);
                }
                by_week.entry(week).or_default().push(i);
            }
        }
        let mut task_week: BTreeMap<String, ConversationWeek> = BTreeMap::new();
        if let Some(map) = &tasks {
            for key in v1.keys(map) {
                let t = v1.get(map, key.as_str())?.map(|(_, id)| id);
                let week = key
                    .strip_prefix("m-")
                    .and_then(|m| message_week.get(m).copied())
                    .unwrap_or_else(|| week_at(t.as_ref().and_then(|t| int(v1, t, "created_at"))));
                task_week.insert(key, week);
            }
        }
        let mut approval_week: BTreeMap<String, ConversationWeek> = BTreeMap::new();
        if let Some(map) = &approvals {
            for key in v1.keys(map) {
                let a = v1.get(map, key.as_str())?.map(|(_, id)| id);
                let week = a
                    .as_ref()
                    .and_then(|a| text(v1, a, "task_id"))
                    .and_then(|t| task_week.get(&t).copied())
                    .unwrap_or_else(|| {
                        week_at(a.as_ref().and_then(|a| int(v1, a, "requested_at")))
                    });
                approval_week.insert(key, week);
            }
        }
        let mut weeks: Vec<ConversationWeek> = by_week.keys().copied().collect();
        weeks.extend(task_week.values().copied());
        weeks.extend(approval_week.values().copied());
        weeks.sort();
        weeks.dedup();
        Ok(Self {
            workspace: *workspace,
            actor,
            messages,
            tasks,
            approvals,
            by_week,
            message_week,
            task_week,
            approval_week,
            weeks,
        })
    }

    /// Every week that gets a document, oldest first.
    pub fn weeks(&self) -> impl DoubleEndedIterator<Item = ConversationWeek> + '_ {
        self.weeks.iter().copied()
    }

    /// The document of `week` (its genesis, then one change copying the week's messages in
    /// conversation order, tasks and approvals), and what it holds. `v1` must be the document
    /// the plan was made from. A week the plan does not list gets its genesis and a change with
    /// nothing in it.
    ///
    /// # Errors
    /// [`SplitError::Automerge`] if a read or a write fails.
    pub fn build_week(
        &self,
        v1: &Automerge,
        week: ConversationWeek,
    ) -> Result<(Automerge, WeekCounts), SplitError> {
        let mut doc = conversation_genesis(&self.workspace, week);
        doc.set_actor(self.actor.clone());
        let mut counts = WeekCounts::default();
        let mut tx = doc.transaction();
        let dst_messages = child(&tx, &ROOT, "messages")?.unwrap_or(ROOT);
        let dst_tasks = child(&tx, &ROOT, "tasks")?.unwrap_or(ROOT);
        let dst_approvals = child(&tx, &ROOT, "approvals")?.unwrap_or(ROOT);
        let picked = self.by_week.get(&week).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(list) = &self.messages {
            for (n, &i) in picked.iter().enumerate() {
                copy(v1, list, i.into(), &mut tx, &dst_messages, Slot::Insert(n))?;
            }
        }
        counts.messages = picked.len() as u64;
        if let Some(map) = &self.tasks {
            counts.open_tasks =
                copy_items(v1, map, &self.task_week, week, &mut tx, &dst_tasks, |t| {
                    !text(v1, t, "status")
                        .is_some_and(|s| s.parse::<crate::TaskStatus>().is_ok_and(|t| t.is_final()))
                })?;
        }
        if let Some(map) = &self.approvals {
            // An open request's `resolution` is absent or null.
            counts.pending_approvals = copy_items(
                v1,
                map,
                &self.approval_week,
                week,
                &mut tx,
                &dst_approvals,
                |a| !matches!(v1.get(a, "resolution"), Ok(Some((v, _))) if v.is_object()),
            )?;
        }
        tx.commit_with(split_commit());
        Ok((doc, counts))
    }

    /// The root: `schema_version` 2, and `desktop` and `devices` copied from `v1`.
    ///
    /// # Errors
    /// [`SplitError::Automerge`] if a read or a write fails.
    pub fn build_root(&self, v1: &Automerge) -> Result<Automerge, SplitError> {
        let mut root = Automerge::new().with_actor(self.actor.clone());
        let mut tx = root.transaction();
        tx.put(ROOT, "schema_version", ROOT_SCHEMA_VERSION)?;
        for key in ["desktop", "devices"] {
            copy(v1, &ROOT, key.into(), &mut tx, &ROOT, Slot::Key(key))?;
        }
        tx.commit_with(split_commit());
        Ok(root)
    }

    /// The week a message of `v1` (by id) went to, if the plan routed one with that id.
    pub fn message_week(&self, id: &str) -> Option<ConversationWeek> {
        self.message_week.get(id).copied()
    }

    /// The week task `id` of `v1` went to, if the plan routed it.
    pub fn task_week(&self, id: &str) -> Option<ConversationWeek> {
        self.task_week.get(id).copied()
    }

    /// The week approval request `id` of `v1` went to, if the plan routed it.
    pub fn approval_week(&self, id: &str) -> Option<ConversationWeek> {
        self.approval_week.get(id).copied()
    }
}

/// What a conversation document holds now, read without hydrating: its messages, its tasks
/// not in a final state, and its approval requests without a resolution. Costs a read of every
/// task's status and every request's resolution (about a microsecond each).
pub fn week_counts(doc: &Automerge) -> WeekCounts {
    let mut counts = WeekCounts::default();
    if let Ok(Some(list)) = child(doc, &ROOT, "messages") {
        counts.messages = doc.length(&list) as u64;
    }
    if let Ok(Some(tasks)) = child(doc, &ROOT, "tasks") {
        for key in doc.keys(&tasks) {
            let open = match doc.get(&tasks, key.as_str()) {
                Ok(Some((Value::Object(_), t))) => !text(doc, &t, "status")
                    .is_some_and(|s| s.parse::<crate::TaskStatus>().is_ok_and(|t| t.is_final())),
                _ => false,
            };
            counts.open_tasks += u64::from(open);
        }
    }
    if let Ok(Some(approvals)) = child(doc, &ROOT, "approvals") {
        for key in doc.keys(&approvals) {
            let pending = match doc.get(&approvals, key.as_str()) {
                Ok(Some((Value::Object(_), a))) => {
                    !matches!(doc.get(&a, "resolution"), Ok(Some((v, _))) if v.is_object())
                }
                _ => false,
            };
            counts.pending_approvals += u64::from(pending);
        }
    }
    counts
}

/// The split's changes: time 0, so their bytes depend only on the content.
fn split_commit() -> CommitOptions {
    CommitOptions::default().with_time(0)
}

/// Copies the items of map `map` (tasks or approvals) routed to `week` into `to`; returns how
/// many of them `open` holds true for.
fn copy_items<T: Transactable>(
    src: &Automerge,
    map: &ObjId,
    routes: &BTreeMap<String, ConversationWeek>,
    week: ConversationWeek,
    tx: &mut T,
    to: &ObjId,
    open: impl Fn(&ObjId) -> bool,
) -> Result<u64, SplitError> {
    let mut count = 0;
    for (key, _) in routes.iter().filter(|(_, w)| **w == week) {
        copy(src, map, key.as_str().into(), tx, to, Slot::Key(key))?;
        if src
            .get(map, key.as_str())?
            .is_some_and(|(_, item)| open(&item))
        {
            count += 1;
        }
    }
    Ok(count)
}

/// The week of `at` (unix ms); the epoch's week for a missing or impossible time.
fn week_at(at: Option<i64>) -> ConversationWeek {
    at.and_then(|ms| ConversationWeek::of_unix_ms(ms).ok())
        .unwrap_or(ConversationWeek::FIRST)
}

/// The object at `key` of `obj`, if there is one.
fn child<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<ObjId>, SplitError> {
    Ok(doc
        .get(obj, key)?
        .and_then(|(v, id)| v.is_object().then_some(id)))
}

/// A string scalar at `key` of `obj`.
fn text<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// An integer scalar (signed, unsigned or a timestamp) at `key` of `obj`.
fn int<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<i64> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(*i),
            ScalarValue::Uint(u) => i64::try_from(*u).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Where a copied value goes.
enum Slot<'a> {
    /// Under this key of a map.
    Key(&'a str),
    /// Inserted at this index of a list.
    Insert(usize),
}

/// Copies the value at `prop` of `from` in `src` (a scalar, or an object with everything under
/// it: maps, lists, text) to `slot` of `to` in `tx`. Conflicting values copy as their winner.
fn copy<T: Transactable>(
    src: &Automerge,
    from: &ObjId,
    prop: Prop,
    tx: &mut T,
    to: &ObjId,
    slot: Slot<'_>,
) -> Result<(), SplitError> {
    let Some((value, id)) = src.get(from, prop)? else {
        return Ok(());
    };
    let made = match (value, slot) {
        (Value::Scalar(s), Slot::Key(k)) => {
            tx.put(to, k, s.into_owned())?;
            return Ok(());
        }
        (Value::Scalar(s), Slot::Insert(i)) => {
            tx.insert(to, i, s.into_owned())?;
            return Ok(());
        }
        (Value::Object(t), Slot::Key(k)) => (t, tx.put_object(to, k, t)?),
        (Value::Object(t), Slot::Insert(i)) => (t, tx.insert_object(to, i, t)?),
    };
    match made {
        (ObjType::Text, new) => {
            let text = src.text(&id)?;
            tx.splice_text(&new, 0, 0, &text)?;
        }
        (ObjType::List, new) => {
            for i in 0..src.length(&id) {
                copy(src, &id, i.into(), tx, &new, Slot::Insert(i))?;
            }
        }
        (ObjType::Map | ObjType::Table, new) => {
            for key in src.keys(&id) {
                copy(src, &id, key.as_str().into(), tx, &new, Slot::Key(&key))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{AutoCommit, ReadDoc};

    fn ws(b: u8) -> DocId {
        DocId::from_bytes([b; 16])
    }

    /// Week `n` of 2026.
    fn week(n: u8) -> ConversationWeek {
        ConversationWeek {
            year: 2026,
            week: n,
        }
    }

    /// Unix ms of a UTC date at noon.
    fn noon(y: i32, m: u8, d: u8) -> i64 {
        let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
        (date.midnight().assume_utc().unix_timestamp() + 12 * 3600) * 1000
    }

    #[test]
    fn weeks_follow_iso_8601_across_new_year() {
        let w = |y, m, d| ConversationWeek::of_unix_ms(noon(y, m, d)).unwrap().label();
        assert_eq!(w(2026, 11, 30), "2026-W49");
        // 2026 starts on a Thursday: it has 53 weeks, and 1 January 2027 is in its last.
        assert_eq!(w(2026, 12, 31), "2026-W53");
        assert_eq!(w(2027, 1, 1), "2026-W53");
        assert_eq!(w(2027, 1, 4), "2027-W01");
        // 30 December 2024 (a Monday) already belongs to 2025.
        assert_eq!(w(2024, 12, 30), "2025-W01");
        assert_eq!(w(1970, 1, 1), "1970-W01");
        // Before the epoch: Monday 29 December 1969 starts 1970-W01, and the millisecond before
        // it is in 1969-W52 (milliseconds round down, not toward zero).
        let monday = -3 * 86_400_000;
        assert_eq!(
            ConversationWeek::of_unix_ms(monday).unwrap().label(),
            "1970-W01"
        );
        assert_eq!(
            ConversationWeek::of_unix_ms(monday - 1).unwrap().label(),
            "1969-W52"
        );
        assert!(matches!(
            ConversationWeek::of_unix_ms(i64::MAX),
            Err(WeekError::OutOfRange(_))
        ));
    }

    #[test]
    fn a_week_starts_on_monday_and_its_label_reads_back() {
        let week = ConversationWeek::of_unix_ms(noon(2026, 12, 3)).unwrap();
        assert_eq!(week.start_unix_ms(), noon(2026, 11, 30) - 12 * 3_600_000);
        assert_eq!(ConversationWeek::of_unix_ms(week.start_unix_ms()), Ok(week));
        assert_eq!(
            ConversationWeek::of_unix_ms(week.start_unix_ms() - 1)
                .unwrap()
                .week,
            48
        );
        assert_eq!(ConversationWeek::parse(&week.label()), Ok(week));
        for bad in [
            "2026-W54", "2025-W53", "2026-W00", "2026-w49", "26-W49", "2026-W4", "", "2026-W+9",
        ] {
            assert!(ConversationWeek::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ConversationWeek::parse("2026-W53").unwrap().week, 53);
    }

    #[test]
    fn the_week_after_crosses_years_with_52_and_53_weeks() {
        let w = |l: &str| ConversationWeek::parse(l).unwrap();
        let next = |l: &str| w(l).next().unwrap().label();
        assert_eq!(next("2026-W52"), "2026-W53");
        assert_eq!(next("2026-W53"), "2027-W01");
        assert_eq!(next("2025-W52"), "2026-W01");
        assert_eq!(ConversationWeek::FIRST.label(), "1970-W01");
        assert_eq!(ConversationWeek::FIRST.next().unwrap().label(), "1970-W02");
        // From the first week to 2026-W49, one step at a time, in order.
        let (mut week, mut steps) = (ConversationWeek::FIRST, 0);
        while week < w("2026-W49") {
            let after = week.next().unwrap();
            assert!(after > week);
            week = after;
            steps += 1;
        }
        assert_eq!(week, w("2026-W49"));
        assert_eq!(
            steps,
            (w("2026-W49").start_unix_ms() - week_ms_of_first()) / (7 * 86_400_000)
        );
    }

    fn week_ms_of_first() -> i64 {
        ConversationWeek::FIRST.start_unix_ms()
    }

    #[test]
    fn two_devices_start_a_week_apart_and_their_messages_share_one_list() {
        let week = week(49);
        let mut phone = conversation_genesis(&ws(7), week);
        let mut desk = conversation_genesis(&ws(7), week);
        assert_eq!(phone.get_heads(), desk.get_heads(), "one genesis change");
        assert_eq!(phone.save(), desk.save(), "byte for byte");

        // Each writes with its own actor, offline from the other.
        phone.set_actor(ActorId::from([1u8; 16]));
        desk.set_actor(ActorId::from([2u8; 16]));
        for (doc, text) in [
            (&mut phone, "from the phone"),
            (&mut desk, "from the desktop"),
        ] {
            let mut tx = doc.transaction();
            let (_, list) = tx.get(ROOT, "messages").unwrap().unwrap();
            let m = tx.insert_object(&list, 0, ObjType::Map).unwrap();
            tx.put(&m, "text", text).unwrap();
            tx.commit();
        }
        desk.merge(&mut phone).unwrap();
        assert_eq!(
            desk.get_all(ROOT, "messages").unwrap().len(),
            1,
            "no conflict"
        );
        let (_, list) = desk.get(ROOT, "messages").unwrap().unwrap();
        let mut texts: Vec<String> = (0..desk.length(&list))
            .map(|i| {
                let (_, m) = desk.get(&list, i).unwrap().unwrap();
                desk.get(&m, "text")
                    .unwrap()
                    .unwrap()
                    .0
                    .into_string()
                    .unwrap()
            })
            .collect();
        texts.sort();
        assert_eq!(texts, ["from the desktop", "from the phone"]);
        assert_eq!(
            desk.get_changes(&[]).len(),
            3,
            "the genesis once, and one change each"
        );
    }

    #[test]
    fn without_a_shared_genesis_one_side_of_the_week_would_be_hidden() {
        // What the shared genesis prevents: two devices that each make the week's lists.
        let fresh = |actor: u8, text: &str| {
            let mut d = AutoCommit::new().with_actor(ActorId::from([actor; 16]));
            let list = d.put_object(ROOT, "messages", ObjType::List).unwrap();
            let m = d.insert_object(&list, 0, ObjType::Map).unwrap();
            d.put(&m, "text", text).unwrap();
            d
        };
        let (mut a, mut b) = (fresh(1, "a"), fresh(2, "b"));
        a.merge(&mut b).unwrap();
        assert_eq!(a.get_all(ROOT, "messages").unwrap().len(), 2, "a conflict");
        let (_, shown) = a.get(ROOT, "messages").unwrap().unwrap();
        assert_eq!(a.length(&shown), 1, "only one side's message is shown");
    }

    #[test]
    fn weeks_and_workspaces_get_their_own_documents() {
        let (w48, w49) = (week(48), week(49));
        assert_eq!(
            conversation_doc_id(&ws(1), w49),
            conversation_doc_id(&ws(1), w49)
        );
        assert_ne!(
            conversation_doc_id(&ws(1), w48),
            conversation_doc_id(&ws(1), w49)
        );
        assert_ne!(
            conversation_doc_id(&ws(1), w49),
            conversation_doc_id(&ws(2), w49)
        );
        assert_ne!(
            conversation_genesis(&ws(1), w48).get_heads(),
            conversation_genesis(&ws(1), w49).get_heads()
        );
        let g = conversation_genesis(&ws(1), w49);
        assert_eq!(
            g.get(ROOT, "week")
                .unwrap()
                .unwrap()
                .0
                .into_string()
                .unwrap(),
            "2026-W49"
        );
        assert_eq!(g.get_changes(&[]).len(), 1);
        assert_eq!(g.get_changes(&[])[0].timestamp(), 0);
    }

    /// A version-1 workspace with messages in weeks 48 and 49 of 2026 (one of them a message a
    /// slow phone dated into week 48 but that merged after week 49's), their tasks, a task of
    /// its own, an open approval, and a device.
    fn v1_workspace() -> (DocId, Automerge) {
        use crate::approval::{Approval, Risk};
        use crate::schema::{DeviceEntry, Message, Role, Task, Workspace};
        use crate::{DeviceId, MessageId, SchemaError, TaskId};
        let desk = DeviceId::from_bytes([3; 32]);
        let mut doc = crate::testing::desktop_doc(desk);
        let w48 = noon(2026, 11, 26);
        let w49 = noon(2026, 12, 2);
        let msg = |id: u8, text: &str, at: i64| Message {
            id: MessageId::from_random([id; 16]),
            author: "phone".into(),
            role: Role::User,
            text: text.into(),
            created_at: at,
            task_id: None,
        };
        doc.transact::<_, _, SchemaError>(|tx| {
            Workspace::put_device(
                tx,
                &DeviceId::from_bytes([4; 32]),
                &DeviceEntry {
                    name: "pixel".into(),
                    platform: "android".into(),
                    paired_at: 1,
                    revoked_at: None,
                },
            )?;
            for m in [
                msg(1, "one", w48),
                msg(2, "two", w48 + 1),
                msg(3, "three", w49),
                msg(4, "late", w48 + 2),
            ] {
                Workspace::append_message(tx, &m)?;
            }
            let answered = TaskId::from(format!("m-{}", MessageId::from_random([3; 16])).as_str());
            let mut done = Task::queued(answered, "three", &desk, w49);
            done.status = crate::schema::TaskStatus::Done;
            Workspace::add_task(tx, &done)?;
            Workspace::add_task(
                tx,
                &Task::queued(TaskId::from("t-own"), "list ~", &desk, w48),
            )?;
            let req = Approval::new(
                "ap1".into(),
                "t-own".into(),
                "trash",
                "{}",
                "Move x to the trash",
                Risk::Medium,
                w48,
                w48 + 300_000,
                &desk,
            );
            Workspace::put_approval(tx, &req)
        })
        .unwrap();
        (ws(9), doc)
    }

    fn texts_of(doc: &Automerge) -> Vec<String> {
        let (_, list) = doc.get(ROOT, "messages").unwrap().unwrap();
        (0..doc.length(&list))
            .map(|i| {
                let (_, m) = doc.get(&list, i).unwrap().unwrap();
                text(doc, &m, "text").unwrap()
            })
            .collect()
    }

    #[test]
    fn a_v1_workspace_splits_by_week_and_keeps_everything() {
        let (workspace, v1) = v1_workspace();
        let split = split_v1(&v1, &workspace).unwrap();
        let (w48, w49) = (week(48), week(49));
        assert_eq!(split.weeks.keys().copied().collect::<Vec<_>>(), [w48, w49]);
        // Messages in their week, in conversation order; tasks with their message or their
        // own date; the approval with its task.
        assert_eq!(texts_of(&split.weeks[&w48]), ["one", "two", "late"]);
        assert_eq!(texts_of(&split.weeks[&w49]), ["three"]);
        let keys = |d: &Automerge, k: &str| {
            let (_, m) = d.get(ROOT, k).unwrap().unwrap();
            d.keys(&m).collect::<Vec<_>>()
        };
        assert_eq!(keys(&split.weeks[&w48], "tasks"), ["t-own"]);
        assert_eq!(keys(&split.weeks[&w49], "tasks").len(), 1);
        assert!(keys(&split.weeks[&w49], "tasks")[0].starts_with("m-"));
        assert_eq!(keys(&split.weeks[&w48], "approvals"), ["ap1"]);
        assert!(keys(&split.weeks[&w49], "approvals").is_empty());
        // Every field came along (the approval's whole map, the task's events list).
        let (_, aps) = split.weeks[&w48].get(ROOT, "approvals").unwrap().unwrap();
        let (_, ap) = split.weeks[&w48].get(&aps, "ap1").unwrap().unwrap();
        let (_, v1aps) = v1.get(ROOT, "approvals").unwrap().unwrap();
        let (_, v1ap) = v1.get(&v1aps, "ap1").unwrap().unwrap();
        assert_eq!(
            split.weeks[&w48].keys(&ap).collect::<Vec<_>>(),
            v1.keys(&v1ap).collect::<Vec<_>>()
        );
        assert_eq!(
            text(&split.weeks[&w48], &ap, "summary").unwrap(),
            "Move x to the trash"
        );
        // Each week document is its genesis plus the copy.
        for (week, doc) in &split.weeks {
            let genesis = conversation_genesis(&workspace, *week).get_heads()[0];
            assert!(doc.get_change_by_hash(&genesis).is_some());
            assert_eq!(doc.get_changes(&[]).len(), 2);
        }
        // The root: the desktop and the devices, no index (the catalog announces weeks).
        let root = &split.root;
        assert_eq!(int(root, &ROOT, "schema_version"), Some(2));
        assert_eq!(keys(root, "devices").len(), 1);
        assert!(root.get(ROOT, "desktop").unwrap().is_some());
        assert!(root.get(ROOT, "messages").unwrap().is_none());
        assert!(root.get(ROOT, "conversations").unwrap().is_none());
        // What each week holds, as the split counted it and as read back from the document.
        assert_eq!(
            split.counts[&w48],
            WeekCounts {
                messages: 3,
                open_tasks: 1,
                pending_approvals: 1
            }
        );
        assert_eq!(split.counts[&w49].messages, 1);
        assert_eq!(split.counts[&w49].open_tasks, 0);
        for (w, doc) in &split.weeks {
            assert_eq!(week_counts(doc), split.counts[w], "{}", w.label());
        }
        // Where each item went, for a phone rewriting its unsent items after the update.
        let plan = SplitPlan::new(&v1, &workspace).unwrap();
        assert_eq!(plan.task_week("t-own"), Some(w48));
        assert_eq!(plan.approval_week("ap1"), Some(w48));
        assert_eq!(plan.task_week("nope"), None);
    }

    #[test]
    fn weeks_built_apart_newest_first_or_on_another_thread_are_the_split() {
        let (workspace, v1) = v1_workspace();
        let whole = split_v1(&v1, &workspace).unwrap();
        let plan = SplitPlan::new(&v1, &workspace).unwrap();
        assert_eq!(plan.weeks().collect::<Vec<_>>(), [week(48), week(49)]);
        let mut counts = BTreeMap::new();
        for w in plan.weeks().rev() {
            let (doc, c) = std::thread::scope(|s| s.spawn(|| plan.build_week(&v1, w)).join())
                .unwrap()
                .unwrap();
            assert_eq!(doc.save(), whole.weeks[&w].save(), "{}", w.label());
            counts.insert(w, c);
        }
        assert_eq!(counts[&week(48)].messages, 3);
        assert_eq!(plan.build_root(&v1).unwrap().save(), whole.root.save());
    }

    #[test]
    fn two_devices_split_the_same_workspace_to_the_same_bytes() {
        let (workspace, v1) = v1_workspace();
        let mut copy = Automerge::new().with_actor(ActorId::from([5u8; 16]));
        copy.merge(&mut v1.clone()).unwrap();
        let (a, b) = (
            split_v1(&v1, &workspace).unwrap(),
            split_v1(&copy, &workspace).unwrap(),
        );
        assert_eq!(a.root.save(), b.root.save());
        assert_eq!(a.weeks.len(), b.weeks.len());
        for (week, doc) in &a.weeks {
            assert_eq!(doc.save(), b.weeks[week].save(), "{}", week.label());
        }
        // A device whose document holds one more change splits differently (its own actor):
        // the migration of phones with unsent v1 changes needs the one-time exchange of the plan.
        let mut more = copy.clone();
        more.transact::<_, _, crate::SchemaError>(|tx| {
            tx.put(ROOT, "note", "x")?;
            Ok(())
        })
        .unwrap();
        assert_ne!(
            split_v1(&more, &workspace).unwrap().root.save(),
            a.root.save()
        );
    }

    #[test]
    fn only_a_version_1_workspace_is_split() {
        let week = week(49);
        let e = split_v1(&conversation_genesis(&ws(1), week), &ws(1)).unwrap_err();
        assert!(
            e.to_string().starts_with("not a version-1 workspace"),
            "{e}"
        );
        assert!(split_v1(&Automerge::new(), &ws(1)).is_err());
    }
}
