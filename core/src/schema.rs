//! The schema-v1 workspace document and typed access to it.
//!
//! The desktop creates the document once ([`Workspace::init`]); phones start empty and receive it.
//! Writers touch only what they change: appending a message inserts one map into `messages` and
//! never rewrites the rest, so a change stays a handful of operations.
//! Message text is a string scalar (it never changes after it is written), not a Text object.

use std::collections::BTreeMap;

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ObjType, ROOT, ReadDoc};
use autosurgeon::{Hydrate, HydrateError, Reconcile, Reconciler, hydrate_prop, reconcile_prop};

use crate::ids::{DeviceId, MessageId, TaskId};

/// Version of the document layout written by this build.
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
        "workspace schema version {0} is not supported (this build reads version {SCHEMA_VERSION})"
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

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* #[doc = $text] $variant),+ }

        impl $name {
            /// The value as stored in the document.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($text => Ok(Self::$variant),)+ other => Err(format!("unknown {} {other:?}", stringify!($name))) }
            }
        }
        impl Reconcile for $name {
            type Key<'a> = autosurgeon::reconcile::NoKey;
            fn reconcile<R: Reconciler>(&self, reconciler: R) -> Result<(), R::Error> {
                self.as_str().reconcile(reconciler)
            }
        }
        impl Hydrate for $name {
            fn hydrate_string(s: &'_ str) -> Result<Self, HydrateError> {
                s.parse().map_err(|_| HydrateError::unexpected(stringify!($name), s.to_owned()))
            }
        }
    };
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

/// A progress event of a task.
#[derive(Clone, Debug, PartialEq, Reconcile, Hydrate, serde::Serialize)]
pub struct TaskEvent {
    /// Unix milliseconds.
    pub at: i64,
    /// Kind, e.g. `progress`, `tool`, `output`.
    pub kind: String,
    /// Text.
    pub text: String,
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
    /// Unix milliseconds.
    pub created_at: i64,
    /// Lifecycle state.
    pub status: TaskStatus,
    /// Desktop that claimed it.
    #[autosurgeon(missing = "Option::default")]
    pub claimed_by: Option<String>,
    /// Device that asked to cancel it.
    #[autosurgeon(missing = "Option::default")]
    pub cancel_requested_by: Option<String>,
    /// Progress events.
    #[autosurgeon(missing = "Vec::new")]
    pub events: Vec<TaskEvent>,
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
}

impl Workspace {
    /// Creates the schema-v1 skeleton. Done once, by the desktop, in its first change.
    pub fn init(tx: &mut Transaction<'_>, desktop: &DesktopInfo) -> Result<(), SchemaError> {
        tx.put(ROOT, "schema_version", SCHEMA_VERSION)?;
        reconcile_prop(tx, ROOT, "desktop", desktop)?;
        tx.put_object(ROOT, "devices", ObjType::Map)?;
        tx.put_object(ROOT, "messages", ObjType::List)?;
        tx.put_object(ROOT, "tasks", ObjType::Map)?;
        tx.put_object(ROOT, "approvals", ObjType::Map)?;
        Ok(())
    }

    /// The schema version, or an error if the document is empty or from an unknown schema.
    pub fn check_version<D: ReadDoc>(doc: &D) -> Result<u64, SchemaError> {
        match doc.get(ROOT, "schema_version")? {
            None => Err(SchemaError::Uninitialised),
            Some((automerge::Value::Scalar(s), _)) => match s.as_u64() {
                Some(SCHEMA_VERSION) => Ok(SCHEMA_VERSION),
                Some(v) => Err(SchemaError::UnsupportedVersion(v)),
                None => Err(SchemaError::UnsupportedVersion(u64::MAX)),
            },
            Some(_) => Err(SchemaError::UnsupportedVersion(u64::MAX)),
        }
    }

    /// Hydrates the whole workspace.
    pub fn read<D: ReadDoc + autosurgeon::ReadDoc>(doc: &D) -> Result<Self, SchemaError> {
        let schema_version = Self::check_version(doc)?;
        Ok(Self {
            schema_version,
            desktop: hydrate_prop(doc, ROOT, "desktop")?,
            devices: hydrate_prop(doc, ROOT, "devices")?,
            messages: hydrate_prop(doc, ROOT, "messages")?,
            tasks: hydrate_prop(doc, ROOT, "tasks")?,
        })
    }

    /// Number of messages, without hydrating them.
    pub fn message_count<D: ReadDoc>(doc: &D) -> usize {
        match obj(doc, "messages") {
            Ok(list) => doc.length(&list),
            Err(_) => 0,
        }
    }

    /// The messages from index `from` on.
    pub fn messages_from<D: ReadDoc + autosurgeon::ReadDoc>(
        doc: &D,
        from: usize,
    ) -> Result<Vec<Message>, SchemaError> {
        let list = obj(doc, "messages")?;
        let len = ReadDoc::length(doc, &list);
        (from..len)
            .map(|i| hydrate_prop(doc, &list, i).map_err(SchemaError::from))
            .collect()
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
        let tasks = obj(tx, "tasks")?;
        let t = match tx.get(&tasks, task.as_str())? {
            Some((automerge::Value::Object(_), id)) => id,
            _ => return Err(HydrateError::unexpected("a task", format!("no task {task}")).into()),
        };
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

    /// Updates the desktop's heartbeat.
    pub fn set_heartbeat(tx: &mut Transaction<'_>, at: i64) -> Result<(), SchemaError> {
        let desktop = obj(tx, "desktop")?;
        tx.put(&desktop, "heartbeat_at", at)?;
        Ok(())
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

    #[test]
    fn init_append_and_read_back() {
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
    fn empty_document_is_uninitialised() {
        let doc = Automerge::new();
        assert!(matches!(
            Workspace::read(&doc),
            Err(SchemaError::Uninitialised)
        ));
    }
}
