//! The workspace's documents and typed access to them.
//!
//! A workspace is a root document (schema 2: `desktop`, `devices`; [`Workspace::init_root`])
//! and one conversation document per week (`messages`, `tasks`, `approvals`; see
//! [`crate::conversation`]). Before that it was one document holding all of it (schema 1,
//! [`Workspace::init`]), which the desktop splits when it opens it. The typed accessors of the
//! conversation work on either kind of document that holds it.
//! The desktop creates the root once; phones start empty and receive it.
//! Writers touch only what they change: appending a message inserts one map into `messages` and
//! never rewrites the rest, so a change stays a handful of operations.
//! Message text is a string scalar (it never changes after it is written), not a Text object.

use std::collections::BTreeMap;

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ROOT, ReadDoc};
use autosurgeon::{Hydrate, HydrateError, Reconcile, hydrate_prop, reconcile_prop};

use crate::approval::Approval;
use crate::conversation::ROOT_SCHEMA_VERSION;
use crate::ids::{ApprovalId, DeviceId, MessageId, TaskId};

/// Version of the single-document workspace (everything in one document), written by builds
/// before the multi-document layout. Still read: the desktop splits it when it opens it.
pub const SCHEMA_VERSION: u64 = 1;

/// What went wrong reading or writing the workspace document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The document has not been initialised by a desktop (a phone that never synced).
    #[error("the workspace document is empty: it has not been received from the desktop yet")]
    Uninitialised,
    /// The document was written by a newer (or unknown) schema.
    #[error(
        "workspace schema version {0} is not supported (this build reads versions {SCHEMA_VERSION} and {ROOT_SCHEMA_VERSION})"
    )]
    UnsupportedVersion(u64),
    /// A value has the wrong shape.
    #[error("workspace document is malformed: {0}")]
    Hydrate(Box<HydrateError>),
    /// Writing failed.
    #[error("could not write to the workspace document: {0}")]
    Reconcile(Box<autosurgeon::ReconcileError>),
    /// Automerge refused an operation.
    #[error("automerge: {0}")]
    Automerge(Box<automerge::AutomergeError>),
    /// The device has no entry under `devices` (it has not received the desktop's record of
    /// its pairing yet).
    #[error("device {0} has no entry in the workspace yet: sync with the desktop first")]
    NoDeviceEntry(String),
}

impl From<HydrateError> for SchemaError {
    fn from(e: HydrateError) -> Self {
        Self::Hydrate(Box::new(e))
    }
}
impl From<autosurgeon::ReconcileError> for SchemaError {
    fn from(e: autosurgeon::ReconcileError) -> Self {
        Self::Reconcile(Box::new(e))
    }
}
impl From<automerge::AutomergeError> for SchemaError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Automerge(Box::new(e))
    }
}

string_enum!(
    /// Who speaks in a message.
    Role { User => "user", Agent => "agent", System => "system" }
);
string_enum!(
    /// Lifecycle of a task. Only the desktop writes it.
    TaskStatus {
        Queued => "queued", Running => "running", WaitingApproval => "waiting_approval",
        Done => "done", Failed => "failed", Cancelled => "cancelled", Interrupted => "interrupted",
    }
);
string_enum!(
    /// What the desktop's executor is doing.
    ExecutorState { Idle => "idle", Busy => "busy", Paused => "paused" }
);

/// The desktop section; only the desktop writes it.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate)]
pub struct DesktopInfo {
    /// The desktop's device id (hex).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Operating system.
    pub os: String,
    /// Last heartbeat, unix milliseconds.
    pub heartbeat_at: i64,
    /// Executor state.
    pub executor: ExecutorState,
}

/// Display copy of a paired device (the desktop's registry is the authority).
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate)]
pub struct DeviceEntry {
    /// Human name.
    pub name: String,
    /// Platform, e.g. `ios`, `android`, `terminal`.
    pub platform: String,
    /// When it was paired, unix milliseconds.
    pub paired_at: i64,
    /// When it was revoked, if it was.
    #[autosurgeon(missing = "Option::default")]
    pub revoked_at: Option<i64>,
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate, serde::Serialize)]
pub struct Message {
    /// Unique id.
    pub id: MessageId,
    /// Device id of the writer (hex).
    pub author: String,
    /// Who speaks.
    pub role: Role,
    /// Immutable text (a string scalar).
    pub text: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The task this message belongs to, if any.
    #[autosurgeon(missing = "Option::default")]
    pub task_id: Option<TaskId>,
}

impl Message {
    /// The message in map `obj`, read in one pass over the map's keys: the same values and
    /// the same refusals as the derived [`Hydrate::hydrate_map`] (each field through the same
    /// `Hydrate` method of its type; a missing or null `task_id` is `None`; other keys are
    /// ignored), without a lookup of its own per field. The desktop judges every message a
    /// phone sends with it, 10,000 at once after a week offline.
    ///
    /// # Errors
    /// The [`HydrateError`] of the first field that does not read (in key order), or of a
    /// required field that is missing.
    pub fn read_map<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        obj: &ObjId,
    ) -> Result<Self, HydrateError> {
        let mut id = None;
        let mut author = None;
        let mut role = None;
        let mut text = None;
        let mut created_at = None;
        let mut task_id = None;
        for item in ReadDoc::map_range(doc, obj, ..) {
            let value = item.value.clone().into_value();
            match item.key.as_ref() {
                "id" => id = Some(field(doc, value, || item.id())?),
                "author" => author = Some(field(doc, value, || item.id())?),
                "role" => role = Some(field(doc, value, || item.id())?),
                "text" => text = Some(field(doc, value, || item.id())?),
                "created_at" => created_at = Some(field(doc, value, || item.id())?),
                "task_id" => {
                    task_id = match value {
                        automerge::Value::Scalar(s) if s.is_null() => None,
                        other => Some(field(doc, other, || item.id())?),
                    }
                }
                _ => {}
            }
        }
        Ok(Message {
            id: id.map_or_else(MessageId::hydrate_none, Ok)?,
            author: author.map_or_else(String::hydrate_none, Ok)?,
            role: role.map_or_else(Role::hydrate_none, Ok)?,
            text: text.map_or_else(String::hydrate_none, Ok)?,
            created_at: created_at.map_or_else(i64::hydrate_none, Ok)?,
            task_id,
        })
    }
}

impl Message {
    /// The message at `index` of list `list`, read as `hydrate_prop` reads it (a value that is
    /// not a map is refused the same way) through [`Message::read_map`].
    ///
    /// # Errors
    /// As [`Message::read_map`]; a missing element or one that is not a map is refused.
    pub fn read_at<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        list: &ObjId,
        index: usize,
    ) -> Result<Self, HydrateError> {
        match ReadDoc::get(doc, list, index)? {
            Some((automerge::Value::Object(ObjType::Map | ObjType::Table), obj)) => {
                Message::read_map(doc, &obj)
            }
            Some((value, obj)) => field(doc, value, || obj),
            None => Message::hydrate_none(),
        }
    }
}

/// One field's value read as `T`, dispatched on its kind as `Hydrate::hydrate` does.
/// `id` gives the value's object id; it is asked for only when the value is an object.
fn field<T: Hydrate, D: ReadDoc + autosurgeon::ReadDoc>(
    doc: &D,
    value: automerge::Value<'_>,
    id: impl FnOnce() -> ObjId,
) -> Result<T, HydrateError> {
    match value {
        automerge::Value::Object(ObjType::Map | ObjType::Table) => T::hydrate_map(doc, &id()),
        automerge::Value::Object(ObjType::List) => T::hydrate_seq(doc, &id()),
        automerge::Value::Object(ObjType::Text) => T::hydrate_text(doc, &id()),
        automerge::Value::Scalar(v) => T::hydrate_scalar(v),
    }
}

/// Parses a blob's BLAKE3 hash from its hex form ([`BlobRef::hash`], or a hash a user or peer
/// asks for): 64 hex digits of either case, surrounding blanks ignored. `None` for anything else.
pub fn parse_blob_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The hex form of a blob hash, as [`BlobRef::hash`] holds it (64 lower-case hex digits).
pub fn blob_hash_hex(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

/// A content-addressed blob held by the desktop (a screenshot, a produced file, a long output).
#[derive(Clone, Debug, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct BlobRef {
    /// BLAKE3 hash, lower-case hex.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type, e.g. `image/png`, `text/plain`.
    pub media_type: String,
    /// A file name to suggest when saving it.
    #[autosurgeon(missing = "Option::default")]
    pub name: Option<String>,
}

/// A progress event of a task.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate, serde::Serialize)]
pub struct TaskEvent {
    /// Unix milliseconds.
    pub at: i64,
    /// Kind, e.g. `progress`, `tool`, `output`, `approval`.
    pub kind: String,
    /// Text.
    pub text: String,
    /// A blob this event produced.
    #[autosurgeon(missing = "Option::default")]
    pub blob: Option<BlobRef>,
}

impl TaskEvent {
    /// An event without a blob.
    pub fn new(at: i64, kind: &str, text: impl Into<String>) -> Self {
        Self {
            at,
            kind: kind.to_owned(),
            text: text.into(),
            blob: None,
        }
    }
}

/// The outcome of a finished task.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate, serde::Serialize)]
pub struct TaskResult {
    /// What happened, for a person.
    pub summary: String,
    /// Blobs the task produced.
    #[autosurgeon(missing = "Vec::new")]
    pub blobs: Vec<BlobRef>,
}

/// A task created by a phone and carried out by the desktop.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate, serde::Serialize)]
pub struct Task {
    /// Unique id (also the key in `tasks`).
    pub id: TaskId,
    /// What the user asked.
    pub prompt: String,
    /// Device id of the creator (hex).
    pub created_by: String,
    /// Unix milliseconds, the creator's clock (a phone's may be wrong: informative only).
    pub created_at: i64,
    /// When the desktop first saw it (Unix ms, the desktop's clock; written by the desktop
    /// only). Tasks are listed in this order, so a phone's wrong clock cannot reorder them.
    #[autosurgeon(missing = "Option::default")]
    pub received_at: Option<i64>,
    /// Lifecycle state.
    pub status: TaskStatus,
    /// Desktop that claimed it.
    #[autosurgeon(missing = "Option::default")]
    pub claimed_by: Option<String>,
    /// Device that asked to cancel it.
    #[autosurgeon(missing = "Option::default")]
    pub cancel_requested_by: Option<String>,
    /// When the desktop started it.
    #[autosurgeon(missing = "Option::default")]
    pub started_at: Option<i64>,
    /// When it reached a final state.
    #[autosurgeon(missing = "Option::default")]
    pub finished_at: Option<i64>,
    /// Progress events.
    #[autosurgeon(missing = "Vec::new")]
    pub events: Vec<TaskEvent>,
    /// The outcome, once finished.
    #[autosurgeon(missing = "Option::default")]
    pub result: Option<TaskResult>,
}

impl Task {
    /// A new queued task, as a phone creates it.
    pub fn queued(id: TaskId, prompt: impl Into<String>, created_by: &DeviceId, at: i64) -> Self {
        Self {
            id,
            prompt: prompt.into(),
            created_by: created_by.to_string(),
            created_at: at,
            received_at: None,
            status: TaskStatus::Queued,
            claimed_by: None,
            cancel_requested_by: None,
            started_at: None,
            finished_at: None,
            events: Vec::new(),
            result: None,
        }
    }
}

impl TaskStatus {
    /// Whether the task reached a final state.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Cancelled | Self::Interrupted
        )
    }
}

/// A whole, hydrated view of the workspace (for display and tests; hot paths read parts).
#[derive(Clone, Debug, PartialEq)]
pub struct Workspace {
    /// Schema version found.
    pub schema_version: u64,
    /// Desktop section.
    pub desktop: DesktopInfo,
    /// Display copy of the paired devices.
    pub devices: BTreeMap<String, DeviceEntry>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tasks by id.
    pub tasks: BTreeMap<String, Task>,
    /// Approval requests by id.
    pub approvals: BTreeMap<String, Approval>,
    /// Items left out because they do not match the schema (where, and why). A bad item never
    /// hides the rest of the workspace.
    pub skipped: Vec<String>,
}

impl Workspace {
    /// Creates the root document of a workspace (schema 2): `schema_version`, `desktop` and
    /// an empty `devices` map. Done once, by the desktop, in its first change.
    pub fn init_root(tx: &mut Transaction<'_>, desktop: &DesktopInfo) -> Result<(), SchemaError> {
        tx.put(ROOT, "schema_version", ROOT_SCHEMA_VERSION)?;
        reconcile_prop(tx, ROOT, "desktop", desktop)?;
        tx.put_object(ROOT, "devices", ObjType::Map)?;
        Ok(())
    }

    /// Creates the single-document (schema 1) skeleton: root and conversation in one document.
    /// What builds before the multi-document layout wrote; kept for tests of the rules (which
    /// hold alike for every document that carries a conversation) and of the migration.
    pub fn init(tx: &mut Transaction<'_>, desktop: &DesktopInfo) -> Result<(), SchemaError> {
        tx.put(ROOT, "schema_version", SCHEMA_VERSION)?;
        reconcile_prop(tx, ROOT, "desktop", desktop)?;
        tx.put_object(ROOT, "devices", ObjType::Map)?;
        tx.put_object(ROOT, "messages", ObjType::List)?;
        tx.put_object(ROOT, "tasks", ObjType::Map)?;
        tx.put_object(ROOT, "approvals", ObjType::Map)?;
        Ok(())
    }

    /// The schema version of a workspace's own document: [`SCHEMA_VERSION`] (one document)
    /// or [`ROOT_SCHEMA_VERSION`] (the root of several); an error if the document is empty or
    /// from an unknown schema.
    pub fn check_version<D: ReadDoc>(doc: &D) -> Result<u64, SchemaError> {
        match doc.get(ROOT, "schema_version")? {
            None => Err(SchemaError::Uninitialised),
            Some((automerge::Value::Scalar(s), _)) => match s.as_u64() {
                Some(v @ (SCHEMA_VERSION | ROOT_SCHEMA_VERSION)) => Ok(v),
                Some(v) => Err(SchemaError::UnsupportedVersion(v)),
                None => Err(SchemaError::UnsupportedVersion(u64::MAX)),
            },
            Some(_) => Err(SchemaError::UnsupportedVersion(u64::MAX)),
        }
    }

    /// Whether `doc` is a single-document workspace (schema 1), whose conversation is in it.
    pub fn is_single<D: ReadDoc>(doc: &D) -> bool {
        matches!(Self::check_version(doc), Ok(SCHEMA_VERSION))
    }

    /// Hydrates the workspace's own document: a single-document workspace whole, a root
    /// without a conversation (add its weeks with [`Self::add_conversation`]). Messages, tasks,
    /// approvals and devices are read one by one: one that does not match the schema is left
    /// out and listed in `skipped`.
    pub fn read<D: ReadDoc + autosurgeon::ReadDoc>(doc: &D) -> Result<Self, SchemaError> {
        let schema_version = Self::check_version(doc)?;
        let mut ws = Self {
            schema_version,
            desktop: hydrate_prop(doc, ROOT, "desktop")?,
            devices: BTreeMap::new(),
            messages: Vec::new(),
            tasks: BTreeMap::new(),
            approvals: BTreeMap::new(),
            skipped: Vec::new(),
        };
        ws.devices = map_items(doc, "devices", &mut ws.skipped)?;
        if schema_version == SCHEMA_VERSION {
            ws.add_conversation(doc)?;
        }
        Ok(ws)
    }

    /// Adds the conversation `doc` holds (a week's document, read in order oldest first): its
    /// messages after those read so far, its tasks and approval requests. A collection `doc`
    /// does not hold reads as empty.
    pub fn add_conversation<D: ReadDoc + autosurgeon::ReadDoc>(
        &mut self,
        doc: &D,
    ) -> Result<(), SchemaError> {
        if let Some(list) = opt_obj(doc, "messages")? {
            let len = ReadDoc::length(doc, &list);
            self.messages.reserve(len);
            for i in 0..len {
                match Message::read_at(doc, &list, i) {
                    Ok(m) => self.messages.push(m),
                    Err(e) => self.skipped.push(format!("messages/{i}: {e}")),
                }
            }
        }
        if opt_obj(doc, "tasks")?.is_some() {
            self.tasks
                .extend(map_items::<_, Task>(doc, "tasks", &mut self.skipped)?);
        }
        if opt_obj(doc, "approvals")?.is_some() {
            self.approvals.extend(map_items::<_, Approval>(
                doc,
                "approvals",
                &mut self.skipped,
            )?);
        }
        Ok(())
    }

    /// Number of messages, without hydrating them.
    pub fn message_count<D: ReadDoc>(doc: &D) -> usize {
        match obj(doc, "messages") {
            Ok(list) => doc.length(&list),
            Err(_) => 0,
        }
    }

    /// The messages from index `from` on; one that does not match the schema is left out.
    pub fn messages_from<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        from: usize,
    ) -> Result<Vec<Message>, SchemaError> {
        let list = obj(doc, "messages")?;
        let len = ReadDoc::length(doc, &list);
        Ok((from..len)
            .filter_map(|i| Message::read_at(doc, &list, i).ok())
            .collect())
    }

    /// Appends one message at the end of the conversation.
    pub fn append_message(tx: &mut Transaction<'_>, msg: &Message) -> Result<(), SchemaError> {
        let list = obj(tx, "messages")?;
        let at = tx.length(&list);
        autosurgeon::reconcile_insert(tx, list, at, msg)?;
        Ok(())
    }

    /// Adds a task under its id.
    pub fn add_task(tx: &mut Transaction<'_>, task: &Task) -> Result<(), SchemaError> {
        let tasks = obj(tx, "tasks")?;
        reconcile_prop(tx, &tasks, task.id.as_str(), task)?;
        Ok(())
    }

    /// Appends a progress event to a task (desktop only).
    pub fn append_task_event(
        tx: &mut Transaction<'_>,
        task: &TaskId,
        event: &TaskEvent,
    ) -> Result<(), SchemaError> {
        let t = task_obj(tx, task)?;
        let events = match tx.get(&t, "events")? {
            Some((automerge::Value::Object(_), id)) => id,
            _ => tx.put_object(&t, "events", ObjType::List)?,
        };
        let at = tx.length(&events);
        autosurgeon::reconcile_insert(tx, events, at, event)?;
        Ok(())
    }

    /// Number of events of a task, without hydrating them.
    pub fn task_event_count<D: ReadDoc>(doc: &D, task: &TaskId) -> usize {
        let Ok(tasks) = obj(doc, "tasks") else {
            return 0;
        };
        let Ok(Some((_, t))) = doc.get(&tasks, task.as_str()) else {
            return 0;
        };
        match doc.get(&t, "events") {
            Ok(Some((_, ev))) => ReadDoc::length(doc, &ev),
            _ => 0,
        }
    }

    /// Writes (or replaces) a device's display entry.
    pub fn put_device(
        tx: &mut Transaction<'_>,
        id: &DeviceId,
        entry: &DeviceEntry,
    ) -> Result<(), SchemaError> {
        let devices = obj(tx, "devices")?;
        reconcile_prop(tx, &devices, id.to_string().as_str(), entry)?;
        Ok(())
    }

    /// Writes (or replaces) a phone's Web Push subscription into its own device entry
    /// (`devices/<id>/push`). Only the phone writes it ([`crate::PhoneWriteRules`]); an
    /// optional field, which older readers ignore. `NoDeviceEntry` when the device has no entry.
    pub fn set_push_subscription(
        tx: &mut Transaction<'_>,
        id: &DeviceId,
        sub: &crate::push::PushSubscription,
    ) -> Result<(), SchemaError> {
        let entry = device_obj(tx, id)?;
        reconcile_prop(tx, &entry, "push", sub)?;
        Ok(())
    }

    /// Removes a phone's push subscription from its own device entry (nothing to do when it
    /// has none). `NoDeviceEntry` when the device has no entry.
    pub fn clear_push_subscription(
        tx: &mut Transaction<'_>,
        id: &DeviceId,
    ) -> Result<(), SchemaError> {
        let entry = device_obj(tx, id)?;
        if tx.get(&entry, "push")?.is_some() {
            tx.delete(&entry, "push")?;
        }
        Ok(())
    }

    /// A device's push subscription as written: `Ok(None)` when it has none (or no entry),
    /// an error when `devices/<id>/push` does not have the subscription's shape. The values
    /// are not checked here: see [`crate::push::PushSubscription::check`].
    pub fn push_subscription<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        id: &DeviceId,
    ) -> Result<Option<crate::push::PushSubscription>, SchemaError> {
        let entry = match device_obj(doc, id) {
            Ok(e) => e,
            Err(SchemaError::NoDeviceEntry(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match ReadDoc::get(doc, &entry, "push")? {
            None => Ok(None),
            Some((automerge::Value::Object(ObjType::Map), _)) => {
                Ok(Some(hydrate_prop(doc, &entry, "push")?))
            }
            Some(_) => {
                Err(HydrateError::unexpected("a map", "another value at push".to_owned()).into())
            }
        }
    }

    /// One task, if it exists.
    pub fn task<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        id: &TaskId,
    ) -> Result<Option<Task>, SchemaError> {
        let tasks = obj(doc, "tasks")?;
        match ReadDoc::get(doc, &tasks, id.as_str())? {
            Some((automerge::Value::Object(_), _)) => {
                Ok(Some(hydrate_prop(doc, &tasks, id.as_str())?))
            }
            _ => Ok(None),
        }
    }

    /// Ids and statuses of every task, reading only the `status` field of each.
    pub fn task_statuses<D: ReadDoc>(doc: &D) -> Vec<(TaskId, Option<TaskStatus>)> {
        let Ok(tasks) = obj(doc, "tasks") else {
            return Vec::new();
        };
        doc.map_range(&tasks, ..)
            .map(|item| {
                let status = match doc.get(item.id(), "status") {
                    Ok(Some((automerge::Value::Scalar(s), _))) => match s.as_ref() {
                        automerge::ScalarValue::Str(t) => t.parse().ok(),
                        _ => None,
                    },
                    _ => None,
                };
                (TaskId::from(item.key.to_string()), status)
            })
            .collect()
    }

    /// Sets fields of an existing task (desktop only): `status` and, when given, the others.
    pub fn update_task(
        tx: &mut Transaction<'_>,
        id: &TaskId,
        update: &TaskUpdate,
    ) -> Result<(), SchemaError> {
        let t = task_obj(tx, id)?;
        tx.put(&t, "status", update.status.as_str())?;
        if let Some(by) = &update.claimed_by {
            tx.put(&t, "claimed_by", by.as_str())?;
        }
        if let Some(at) = update.started_at {
            tx.put(&t, "started_at", at)?;
        }
        if let Some(at) = update.finished_at {
            tx.put(&t, "finished_at", at)?;
        }
        if let Some(result) = &update.result {
            reconcile_prop(tx, &t, "result", result)?;
        }
        Ok(())
    }

    /// Desktop: notes when it first saw task `id` (its own clock), unless already noted.
    pub fn mark_received(
        tx: &mut Transaction<'_>,
        id: &TaskId,
        at: i64,
    ) -> Result<(), SchemaError> {
        let t = task_obj(tx, id)?;
        let noted = matches!(
            tx.get(&t, "received_at")?,
            Some((automerge::Value::Scalar(v), _)) if !v.is_null()
        );
        if !noted {
            tx.put(&t, "received_at", at)?;
        }
        Ok(())
    }

    /// The order tasks are listed in: by when the desktop first saw them (its clock); those it
    /// has not seen yet last; the creator's clock and the id only break ties. A phone's clock
    /// alone never decides the order.
    pub fn display_order(a: &Task, b: &Task) -> std::cmp::Ordering {
        let key = |t: &Task| {
            (
                t.received_at.is_none(),
                t.received_at.unwrap_or(0),
                t.created_at,
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
    }

    /// Asks the desktop to cancel a task (a phone writes its own id).
    pub fn request_cancel(
        tx: &mut Transaction<'_>,
        id: &TaskId,
        by: &DeviceId,
    ) -> Result<(), SchemaError> {
        let t = task_obj(tx, id)?;
        tx.put(&t, "cancel_requested_by", by.to_string())?;
        Ok(())
    }

    /// One approval request, if it exists.
    pub fn approval<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        id: &ApprovalId,
    ) -> Result<Option<Approval>, SchemaError> {
        let approvals = obj(doc, "approvals")?;
        match ReadDoc::get(doc, &approvals, id.as_str())? {
            Some((automerge::Value::Object(_), _)) => {
                Ok(Some(hydrate_prop(doc, &approvals, id.as_str())?))
            }
            _ => Ok(None),
        }
    }

    /// Every approval request that matches the schema.
    pub fn approvals<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
    ) -> Result<BTreeMap<String, Approval>, SchemaError> {
        map_items(doc, "approvals", &mut Vec::new())
    }

    /// Writes a new approval request (desktop only).
    pub fn put_approval(tx: &mut Transaction<'_>, approval: &Approval) -> Result<(), SchemaError> {
        let approvals = obj(tx, "approvals")?;
        reconcile_prop(tx, &approvals, approval.id.as_str(), approval)?;
        Ok(())
    }

    /// Adds a device's own decision to an approval request (a phone, under its own key).
    pub fn put_decision(
        tx: &mut Transaction<'_>,
        id: &ApprovalId,
        by: &DeviceId,
        decision: &crate::approval::Decision,
    ) -> Result<(), SchemaError> {
        let a = approval_obj(tx, id)?;
        let decisions = match tx.get(&a, "decisions")? {
            Some((automerge::Value::Object(_), d)) => d,
            _ => return Err(malformed(format!("approval {id} has no decisions map"))),
        };
        reconcile_prop(tx, &decisions, by.to_string().as_str(), decision)?;
        Ok(())
    }

    /// Records how the desktop resolved an approval request (desktop only).
    pub fn set_resolution(
        tx: &mut Transaction<'_>,
        id: &ApprovalId,
        resolution: &crate::approval::Resolution,
    ) -> Result<(), SchemaError> {
        let a = approval_obj(tx, id)?;
        reconcile_prop(tx, &a, "resolution", resolution)?;
        Ok(())
    }

    /// Updates the desktop's executor state.
    pub fn set_executor_state(
        tx: &mut Transaction<'_>,
        state: ExecutorState,
    ) -> Result<(), SchemaError> {
        let desktop = obj(tx, "desktop")?;
        tx.put(&desktop, "executor", state.as_str())?;
        Ok(())
    }

    /// Updates the desktop's heartbeat.
    pub fn set_heartbeat(tx: &mut Transaction<'_>, at: i64) -> Result<(), SchemaError> {
        let desktop = obj(tx, "desktop")?;
        tx.put(&desktop, "heartbeat_at", at)?;
        Ok(())
    }
}

/// Where the desktop can be reached now, as it publishes it under `desktop/addrs` (direct
/// `ip:port` addresses) and `desktop/relay` (its relay URL, when it uses one). Only the desktop
/// writes them; phones dial them besides what their pairing code said, so a desktop that moved
/// to another port or network is found again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesktopAddrs {
    /// Direct addresses.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Relay URL.
    pub relay: Option<String>,
}

/// At most this many addresses are read from, or written to, the document.
pub const MAX_DESKTOP_ADDRS: usize = 32;

impl Workspace {
    /// Publishes where the desktop can be reached (desktop only). Writes only what changed.
    pub fn set_desktop_addrs(
        tx: &mut Transaction<'_>,
        addrs: &DesktopAddrs,
    ) -> Result<(), SchemaError> {
        let desktop = obj(tx, "desktop")?;
        if Self::desktop_addrs(tx).addrs != addrs.addrs {
            let list = tx.put_object(&desktop, "addrs", ObjType::List)?;
            for (i, a) in addrs.addrs.iter().take(MAX_DESKTOP_ADDRS).enumerate() {
                tx.insert(&list, i, a.to_string())?;
            }
        }
        if Self::desktop_addrs(tx).relay != addrs.relay {
            match &addrs.relay {
                Some(r) => tx.put(&desktop, "relay", r.as_str())?,
                None => tx.delete(&desktop, "relay")?,
            }
        }
        Ok(())
    }

    /// Where the desktop said it can be reached. Tolerant: a document from before these fields,
    /// or an entry that is not an address, yields what can be read (nothing, at worst).
    pub fn desktop_addrs<D: ReadDoc>(doc: &D) -> DesktopAddrs {
        let Ok(desktop) = obj(doc, "desktop") else {
            return DesktopAddrs::default();
        };
        let text = |v: automerge::Value<'_>| match v {
            automerge::Value::Scalar(s) => match s.as_ref() {
                automerge::ScalarValue::Str(t) => Some(t.to_string()),
                _ => None,
            },
            _ => None,
        };
        let addrs = match doc.get(&desktop, "addrs") {
            Ok(Some((automerge::Value::Object(ObjType::List), list))) => doc
                .list_range(&list, ..)
                .take(MAX_DESKTOP_ADDRS)
                .filter_map(|item| text(item.value.into())?.parse().ok())
                .collect(),
            _ => Vec::new(),
        };
        let relay = match doc.get(&desktop, "relay") {
            Ok(Some((v, _))) => text(v).filter(|r| !r.is_empty()),
            _ => None,
        };
        DesktopAddrs { addrs, relay }
    }
}

/// Fields the desktop sets on a task as it runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUpdate {
    /// The new status.
    pub status: TaskStatus,
    /// Set `claimed_by`.
    pub claimed_by: Option<String>,
    /// Set `started_at`.
    pub started_at: Option<i64>,
    /// Set `finished_at`.
    pub finished_at: Option<i64>,
    /// Set the result.
    pub result: Option<TaskResult>,
}

impl TaskUpdate {
    /// Only a status change.
    pub fn status(status: TaskStatus) -> Self {
        Self {
            status,
            claimed_by: None,
            started_at: None,
            finished_at: None,
            result: None,
        }
    }
}

/// The entries of the map at `key` of the root, each hydrated alone; bad ones are noted.
fn map_items<D, T>(
    doc: &D,
    key: &str,
    skipped: &mut Vec<String>,
) -> Result<BTreeMap<String, T>, SchemaError>
where
    D: ReadDoc + autosurgeon::ReadDoc,
    T: Hydrate,
{
    let map = obj(doc, key)?;
    let keys: Vec<String> = ReadDoc::map_range(doc, &map, ..)
        .map(|item| item.key.to_string())
        .collect();
    let mut out = BTreeMap::new();
    for k in keys {
        match hydrate_prop::<_, T, _, _>(doc, &map, k.as_str()) {
            Ok(v) => {
                out.insert(k, v);
            }
            Err(e) => skipped.push(format!("{key}/{}: {e}", clip(&k, 40))),
        }
    }
    Ok(out)
}

fn malformed(what: String) -> SchemaError {
    HydrateError::unexpected("a schema-v1 object", what).into()
}

fn task_obj<D: ReadDoc>(doc: &D, id: &TaskId) -> Result<ObjId, SchemaError> {
    let tasks = obj(doc, "tasks")?;
    match doc.get(&tasks, id.as_str())? {
        Some((automerge::Value::Object(_), t)) => Ok(t),
        _ => Err(malformed(format!("no task {id}"))),
    }
}

fn approval_obj<D: ReadDoc>(doc: &D, id: &ApprovalId) -> Result<ObjId, SchemaError> {
    let approvals = obj(doc, "approvals")?;
    match doc.get(&approvals, id.as_str())? {
        Some((automerge::Value::Object(_), a)) => Ok(a),
        _ => Err(malformed(format!("no approval {id}"))),
    }
}

/// The object at `key` of the document root (`messages`, `tasks`, …).
pub(crate) fn root_obj<D: ReadDoc>(doc: &D, key: &str) -> Result<ObjId, SchemaError> {
    obj(doc, key)
}

/// At most `max` characters of `s`, with `…` when cut (for messages that quote peer text).
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn device_obj<D: ReadDoc>(doc: &D, id: &DeviceId) -> Result<ObjId, SchemaError> {
    let devices = obj(doc, "devices")?;
    match doc.get(&devices, id.to_string().as_str())? {
        Some((automerge::Value::Object(ObjType::Map), entry)) => Ok(entry),
        _ => Err(SchemaError::NoDeviceEntry(id.short())),
    }
}

/// The object at root key `key`, or `None` when there is nothing there.
fn opt_obj<D: ReadDoc>(doc: &D, key: &str) -> Result<Option<ObjId>, SchemaError> {
    match obj(doc, key) {
        Ok(id) => Ok(Some(id)),
        Err(SchemaError::Uninitialised) => Ok(None),
        Err(e) => Err(e),
    }
}

fn obj<D: ReadDoc>(doc: &D, key: &str) -> Result<ObjId, SchemaError> {
    match doc.get(ROOT, key)? {
        Some((automerge::Value::Object(_), id)) => Ok(id),
        Some(_) => Err(HydrateError::unexpected("an object", format!("a scalar at {key}")).into()),
        None => Err(SchemaError::Uninitialised),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::Automerge;

    fn desktop() -> DesktopInfo {
        DesktopInfo {
            id: "d".into(),
            name: "desk".into(),
            os: "linux".into(),
            heartbeat_at: 0,
            executor: ExecutorState::Idle,
        }
    }

    /// `Message::read_map` reads every shape a peer may write exactly as the derived
    /// `hydrate_map` does: the values when they read, a refusal when they do not.
    #[test]
    fn read_map_reads_as_hydrate_map_does() {
        use automerge::{ScalarValue, transaction::Transactable};
        type Put = fn(&mut automerge::transaction::Transaction<'_>, &ObjId);
        let shapes: Vec<(&str, Put)> = vec![
            ("valid", |_, _| {}),
            ("task id", |tx, m| {
                tx.put(m, "task_id", "t-1").unwrap();
            }),
            ("task id null", |tx, m| {
                tx.put(m, "task_id", ScalarValue::Null).unwrap();
            }),
            ("task id an int", |tx, m| {
                tx.put(m, "task_id", 7_i64).unwrap();
            }),
            ("no id", |tx, m| {
                tx.delete(m, "id").unwrap();
            }),
            ("no text", |tx, m| {
                tx.delete(m, "text").unwrap();
            }),
            ("created_at unsigned", |tx, m| {
                tx.put(m, "created_at", 9_u64).unwrap();
            }),
            ("created_at a timestamp", |tx, m| {
                tx.put(m, "created_at", ScalarValue::Timestamp(11)).unwrap();
            }),
            ("created_at a float", |tx, m| {
                tx.put(m, "created_at", 1.5_f64).unwrap();
            }),
            ("created_at a string", |tx, m| {
                tx.put(m, "created_at", "5").unwrap();
            }),
            ("text an object", |tx, m| {
                tx.put_object(m, "text", ObjType::Text).unwrap();
            }),
            ("author a map", |tx, m| {
                tx.put_object(m, "author", ObjType::Map).unwrap();
            }),
            ("role unknown", |tx, m| {
                tx.put(m, "role", "root").unwrap();
            }),
            ("id a list", |tx, m| {
                tx.put_object(m, "id", ObjType::List).unwrap();
            }),
            ("an extra key", |tx, m| {
                tx.put(m, "extra", "x").unwrap();
            }),
        ];
        for (what, put) in shapes {
            let (mut doc, msg) = initialised_and_a_message();
            doc.transact::<_, _, SchemaError>(|tx| {
                Workspace::append_message(tx, &msg)?;
                let list = root_obj(tx, "messages")?;
                let Some((_, m)) = tx.get(&list, 0)? else {
                    panic!("no message")
                };
                put(tx, &m);
                Ok(())
            })
            .unwrap();
            let list = root_obj(&doc, "messages").unwrap();
            let (_, m) = doc.get(&list, 0).unwrap().unwrap();
            let fast = Message::read_map(&doc, &m);
            let derived = Message::hydrate_map(&doc, &m);
            match (&fast, &derived) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{what}: read_map {fast:?}, hydrate_map {derived:?}"),
            }
            if what == "valid" {
                assert_eq!(fast.unwrap(), msg);
            }
        }
    }

    /// `Message::read_at` refuses what `hydrate_prop` refuses in a list: a scalar, a list, a
    /// missing index; and reads a map as it does.
    #[test]
    fn read_at_reads_list_elements_as_hydrate_prop_does() {
        use automerge::transaction::Transactable;
        let (mut doc, msg) = initialised_and_a_message();
        doc.transact::<_, _, SchemaError>(|tx| {
            Workspace::append_message(tx, &msg)?;
            let list = root_obj(tx, "messages")?;
            tx.insert(&list, 1, "not a message")?;
            tx.insert_object(&list, 2, ObjType::List)?;
            Ok(())
        })
        .unwrap();
        let list = root_obj(&doc, "messages").unwrap();
        for i in 0..4 {
            let fast = Message::read_at(&doc, &list, i);
            let derived: Result<Message, _> = hydrate_prop(&doc, &list, i);
            match (&fast, &derived) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{i}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{i}: read_at {fast:?}, hydrate_prop {derived:?}"),
            }
        }
        assert_eq!(Message::read_at(&doc, &list, 0).unwrap(), msg);
    }

    /// A document the desktop initialised, and a message not yet in it.
    fn initialised_and_a_message() -> (Automerge, Message) {
        let mut doc = Automerge::new();
        doc.transact::<_, _, SchemaError>(|tx| Workspace::init(tx, &desktop()))
            .unwrap();
        let msg = Message {
            id: "m1".into(),
            author: "a".into(),
            role: Role::User,
            text: "hello".into(),
            created_at: 5,
            task_id: None,
        };
        (doc, msg)
    }

    #[test]
    fn desktop_addrs_round_trip_and_read_tolerantly() {
        let (mut doc, _) = initialised_and_a_message();
        // A document from before the fields: nothing, and the workspace still reads.
        assert_eq!(Workspace::desktop_addrs(&doc), DesktopAddrs::default());
        let a = DesktopAddrs {
            addrs: vec![
                "127.0.0.1:4433".parse().unwrap(),
                "[::1]:9".parse().unwrap(),
            ],
            relay: Some("https://relay.example/".into()),
        };
        doc.transact::<_, _, SchemaError>(|tx| Workspace::set_desktop_addrs(tx, &a))
            .unwrap();
        assert_eq!(Workspace::desktop_addrs(&doc), a);
        assert_eq!(Workspace::read(&doc).unwrap().desktop, desktop());
        // Unchanged: no new change at all.
        let heads = doc.get_heads();
        doc.transact::<_, _, SchemaError>(|tx| Workspace::set_desktop_addrs(tx, &a))
            .unwrap();
        assert_eq!(doc.get_heads(), heads);
        // A bad entry is skipped, the rest is read; no relay is no relay.
        doc.transact::<_, _, SchemaError>(|tx| {
            let d = obj(tx, "desktop")?;
            let list = tx.put_object(&d, "addrs", ObjType::List)?;
            tx.insert(&list, 0, "not an address")?;
            tx.insert(&list, 1, 42)?;
            tx.insert(&list, 2, "10.0.0.2:7")?;
            tx.delete(&d, "relay")?;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            Workspace::desktop_addrs(&doc),
            DesktopAddrs {
                addrs: vec!["10.0.0.2:7".parse().unwrap()],
                relay: None
            }
        );
    }

    #[test]
    fn init_append_and_read_back() {
        let (mut doc, msg) = initialised_and_a_message();
        doc.transact::<_, _, SchemaError>(|tx| Workspace::append_message(tx, &msg))
            .unwrap();
        let ws = Workspace::read(&doc).unwrap();
        assert_eq!(ws.messages, vec![msg]);
        assert_eq!(ws.desktop, desktop());
        assert_eq!(Workspace::message_count(&doc), 1);
        // The text is a scalar string, not a Text object.
        let list = obj(&doc, "messages").unwrap();
        let (_, m) = doc.get(&list, 0).unwrap().unwrap();
        let (v, _) = doc.get(&m, "text").unwrap().unwrap();
        assert!(matches!(v, automerge::Value::Scalar(_)));
    }

    #[test]
    fn one_bad_item_is_skipped_not_the_whole_view() {
        let (mut doc, good) = initialised_and_a_message();
        doc.transact::<_, _, SchemaError>(|tx| {
            let list = obj(tx, "messages")?;
            let m = tx.insert_object(&list, 0, ObjType::Map)?;
            tx.put(&m, "text", 42)?;
            Workspace::append_message(tx, &good)?;
            let tasks = obj(tx, "tasks")?;
            let t = tx.put_object(&tasks, "bad", ObjType::Map)?;
            tx.put(&t, "status", "maybe")?;
            Ok(())
        })
        .unwrap();
        let ws = Workspace::read(&doc).unwrap();
        assert_eq!(ws.messages, vec![good]);
        assert!(ws.tasks.is_empty());
        assert_eq!(ws.skipped.len(), 2, "{:?}", ws.skipped);
        assert_eq!(Workspace::messages_from(&doc, 0).unwrap().len(), 1);
    }

    #[test]
    fn empty_document_is_uninitialised() {
        let doc = Automerge::new();
        assert!(matches!(
            Workspace::read(&doc),
            Err(SchemaError::Uninitialised)
        ));
    }
}
