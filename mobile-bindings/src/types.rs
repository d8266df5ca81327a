//! The snapshot as records and enums, converted from the phone API's types. Times are unix
//! milliseconds; ids are text.

use deskhand_core::approval::{Approval, Risk as CoreRisk, Verdict as CoreVerdict};
use deskhand_core::schema::{
    BlobRef, ExecutorState as CoreExecutor, Role, TaskEvent, TaskResult, TaskStatus as CoreStatus,
};
use deskhand_sync::phone::{self as api};

/// Everything a phone screen shows, at one instant.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PhoneSnapshot {
    /// This phone's device id.
    pub device_id: String,
    /// This phone's name.
    pub device_name: String,
    /// Background sync is on (`start()` / `stop()`).
    pub syncing: bool,
    /// The workspace id, once known.
    pub workspace_id: Option<String>,
    /// The workspace has arrived from the desktop; until then nothing can be written.
    pub workspace_received: bool,
    /// The home desktop, if paired.
    pub desktop: Option<DesktopStatus>,
    /// The conversation, oldest first.
    pub messages: Vec<MessageView>,
    /// Tasks, oldest first.
    pub tasks: Vec<TaskView>,
    /// Approval requests waiting for a decision, oldest first.
    pub pending_approvals: Vec<ApprovalView>,
    /// Resolved or expired approval requests, oldest first.
    pub resolved_approvals: Vec<ApprovalView>,
    /// The devices paired with the desktop, this phone included, oldest pairing first (revoked
    /// ones too). A display copy: the desktop's registry decides.
    pub devices: Vec<DeviceView>,
    /// Weeks of older conversation the desktop holds that this phone has not loaded yet:
    /// `load_older` fetches them, newest first. 0 when the whole conversation is here (show
    /// "load older messages" while it is not).
    pub older_weeks: u32,
    /// When this snapshot was taken (this phone's clock).
    pub taken_at_ms: i64,
    /// The same instant in the desktop's clock as far as the phone knows it: count down expiries
    /// and show "last seen" with it.
    pub desktop_now_ms: i64,
}

/// A device paired with the desktop.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct DeviceView {
    /// Device id (64 hex characters).
    pub id: String,
    /// Name.
    pub name: String,
    /// Platform: `android`, `ios`, `terminal`, …
    pub platform: String,
    /// When it was paired (the desktop's clock).
    pub paired_at_ms: i64,
    /// When the desktop revoked it, if it did (the desktop's clock).
    pub revoked_at_ms: Option<i64>,
    /// It is this phone.
    pub this_device: bool,
}

/// Whether the desktop is reachable.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Presence {
    /// Connected now.
    Connected {
        /// Since when.
        since_ms: i64,
    },
    /// Not connected; last connected at this time.
    LastSeen {
        /// When.
        at_ms: i64,
    },
    /// Never reached.
    Never,
}

/// The home desktop.
#[derive(Clone, Debug, uniffi::Record)]
pub struct DesktopStatus {
    /// Device id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Reachability (instants in the desktop's clock once the offset is known).
    pub presence: Presence,
    /// The desktop's clock minus this phone's (ms), learned when pairing and syncing.
    pub clock_offset_ms: Option<i64>,
    /// Connected and both sides hold the same changes.
    pub in_sync: bool,
    /// Why the last connection failed, if it did.
    pub last_error: Option<String>,
    /// Heartbeat and executor state, once the workspace has arrived.
    pub health: Option<DesktopHealth>,
    /// Where the phone dials it (`ip:port`, newest first).
    pub addrs: Vec<String>,
    /// The relay the phone reaches it through, if any.
    pub relay: Option<String>,
}

/// What the desktop last reported about itself.
#[derive(Clone, Debug, uniffi::Record)]
pub struct DesktopHealth {
    /// Operating system.
    pub os: String,
    /// Its last heartbeat (desktop clock).
    pub heartbeat_at_ms: i64,
    /// How old that heartbeat is (phone clock).
    pub heartbeat_age_ms: i64,
    /// What its executor is doing.
    pub executor: ExecutorState,
}

/// What the desktop's executor is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ExecutorState {
    /// Waiting for work.
    Idle,
    /// Running a task.
    Busy,
    /// Paused by the desktop's user.
    Paused,
}

/// Who speaks in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum MessageRole {
    /// A person, from a phone.
    User,
    /// The desktop's agent.
    Agent,
    /// The desktop itself.
    System,
}

/// Whether the desktop has a message this phone wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Delivery {
    /// Saved on this phone, not yet known to be on the desktop.
    Pending,
    /// On the desktop.
    Synced,
}

/// One message of the conversation.
#[derive(Clone, Debug, uniffi::Record)]
pub struct MessageView {
    /// Id.
    pub id: String,
    /// Device id of the writer.
    pub author: String,
    /// Who speaks.
    pub role: MessageRole,
    /// The text.
    pub text: String,
    /// When it was written.
    pub created_at_ms: i64,
    /// The task it belongs to (agent replies).
    pub task_id: Option<String>,
    /// Written by this phone.
    pub mine: bool,
    /// Whether the desktop has it.
    pub delivery: Delivery,
}

/// Lifecycle of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum TaskStatus {
    /// Waiting for the executor.
    Queued,
    /// Running.
    Running,
    /// Waiting for an approval.
    WaitingApproval,
    /// Finished.
    Done,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Cut short by a desktop restart; never run again.
    Interrupted,
}

/// A blob held by the desktop (fetch it with `fetch_blob`).
#[derive(Clone, Debug, uniffi::Record)]
pub struct BlobInfo {
    /// BLAKE3 hash (hex).
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Suggested file name.
    pub name: Option<String>,
}

/// A progress event of a task.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TaskEventView {
    /// When.
    pub at_ms: i64,
    /// Kind: `started`, `tool`, `output`, `approval`, `done`, …
    pub kind: String,
    /// Text.
    pub text: String,
    /// A blob the event produced.
    pub blob: Option<BlobInfo>,
}

/// The outcome of a finished task.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TaskResultView {
    /// What happened.
    pub summary: String,
    /// Blobs it produced.
    pub blobs: Vec<BlobInfo>,
}

/// A task with its progress.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TaskView {
    /// Id.
    pub id: String,
    /// What was asked.
    pub prompt: String,
    /// Device id of its creator.
    pub created_by: String,
    /// When it was created (its creator's clock: informative only).
    pub created_at_ms: i64,
    /// When the desktop first saw it (the desktop's clock); tasks are listed in this order.
    pub received_at_ms: Option<i64>,
    /// Where it stands.
    pub status: TaskStatus,
    /// When the desktop started it.
    pub started_at_ms: Option<i64>,
    /// When it finished.
    pub finished_at_ms: Option<i64>,
    /// Device that asked to cancel it.
    pub cancel_requested_by: Option<String>,
    /// Progress events, oldest first.
    pub events: Vec<TaskEventView>,
    /// The outcome, once finished.
    pub result: Option<TaskResultView>,
    /// Created by this phone (directly or from one of its messages).
    pub mine: bool,
    /// Ids of its approval requests still waiting for a decision.
    pub waiting_for: Vec<String>,
}

/// A phone's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Verdict {
    /// Go ahead.
    Approve,
    /// Do not.
    Deny,
}

/// How much a call can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Risk {
    /// Little.
    Low,
    /// Some.
    Medium,
    /// A lot.
    High,
}

/// Where an approval request stands.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ApprovalState {
    /// Waiting for a decision.
    Pending,
    /// Past its expiry in the desktop's time (as estimated), not yet resolved: the desktop will
    /// count it as denied. Only the desktop's clock decides.
    Expired,
    /// The desktop resolved it.
    Resolved {
        /// What it did.
        verdict: Verdict,
        /// The deciding device id, or `expired`.
        by: String,
        /// When.
        at_ms: i64,
        /// Why, for people.
        reason: String,
        /// Device ids whose decisions the desktop had when it resolved (none listed: unknown).
        counted: Option<Vec<String>>,
    },
}

/// An approval request.
#[derive(Clone, Debug, uniffi::Record)]
pub struct ApprovalView {
    /// Id.
    pub id: String,
    /// The task whose call waits.
    pub task_id: String,
    /// Tool.
    pub tool: String,
    /// Exact arguments (JSON text).
    pub args: String,
    /// One line for people.
    pub summary: String,
    /// How much it can change.
    pub risk: Risk,
    /// When it was asked.
    pub requested_at_ms: i64,
    /// When it expires.
    pub expires_at_ms: i64,
    /// Where it stands.
    pub state: ApprovalState,
    /// This phone's decision, if any.
    pub my_verdict: Option<Verdict>,
    /// This phone decided after the desktop had resolved it: its decision was not acted on
    /// (`state` says what happened instead).
    pub too_late: bool,
    /// Milliseconds left before it expires, in the desktop's time (negative once past).
    pub expires_in_ms: i64,
    /// Its action hash matches what it shows (if not, approving it is refused).
    pub verified: bool,
}

/// The desktop a phone paired with.
#[derive(Clone, Debug, uniffi::Record)]
pub struct PairedDesktop {
    /// Device id.
    pub id: String,
    /// Name.
    pub name: String,
}

impl From<api::PhoneSnapshot> for PhoneSnapshot {
    fn from(s: api::PhoneSnapshot) -> Self {
        Self {
            device_id: s.device_id.to_string(),
            device_name: s.device_name,
            syncing: s.syncing,
            workspace_id: s.workspace.map(|d| d.to_string()),
            workspace_received: s.workspace_received,
            desktop: s.desktop.map(Into::into),
            messages: s.messages.into_iter().map(Into::into).collect(),
            tasks: s.tasks.into_iter().map(Into::into).collect(),
            pending_approvals: s.pending_approvals.into_iter().map(Into::into).collect(),
            resolved_approvals: s.resolved_approvals.into_iter().map(Into::into).collect(),
            devices: s
                .devices
                .into_iter()
                .map(|d| DeviceView {
                    id: d.id,
                    name: d.name,
                    platform: d.platform,
                    paired_at_ms: d.paired_at,
                    revoked_at_ms: d.revoked_at,
                    this_device: d.this_device,
                })
                .collect(),
            older_weeks: s.older_weeks,
            taken_at_ms: s.taken_at,
            desktop_now_ms: s.desktop_now,
        }
    }
}

impl From<deskhand_sync::Presence> for Presence {
    fn from(p: deskhand_sync::Presence) -> Self {
        match p {
            deskhand_sync::Presence::Connected { since } => Self::Connected { since_ms: since },
            deskhand_sync::Presence::LastSeen { at } => Self::LastSeen { at_ms: at },
            deskhand_sync::Presence::Never => Self::Never,
        }
    }
}

impl From<api::DesktopStatus> for DesktopStatus {
    fn from(d: api::DesktopStatus) -> Self {
        Self {
            id: d.id.to_string(),
            name: d.name,
            presence: d.presence.into(),
            clock_offset_ms: d.clock_offset_ms,
            in_sync: d.in_sync,
            last_error: d.last_error,
            health: d.health.map(|h| DesktopHealth {
                os: h.os,
                heartbeat_at_ms: h.heartbeat_at,
                heartbeat_age_ms: h.heartbeat_age_ms,
                executor: h.executor.into(),
            }),
            addrs: d.addrs,
            relay: d.relay,
        }
    }
}

impl From<CoreExecutor> for ExecutorState {
    fn from(e: CoreExecutor) -> Self {
        match e {
            CoreExecutor::Idle => Self::Idle,
            CoreExecutor::Busy => Self::Busy,
            CoreExecutor::Paused => Self::Paused,
        }
    }
}

impl From<api::PhoneMessage> for MessageView {
    fn from(m: api::PhoneMessage) -> Self {
        let msg = m.message;
        Self {
            id: msg.id.to_string(),
            author: msg.author,
            role: match msg.role {
                Role::User => MessageRole::User,
                Role::Agent => MessageRole::Agent,
                Role::System => MessageRole::System,
            },
            text: msg.text,
            created_at_ms: msg.created_at,
            task_id: msg.task_id.map(|t| t.to_string()),
            mine: m.mine,
            delivery: match m.delivery {
                api::Delivery::Pending => Delivery::Pending,
                api::Delivery::Synced => Delivery::Synced,
            },
        }
    }
}

impl From<CoreStatus> for TaskStatus {
    fn from(s: CoreStatus) -> Self {
        match s {
            CoreStatus::Queued => Self::Queued,
            CoreStatus::Running => Self::Running,
            CoreStatus::WaitingApproval => Self::WaitingApproval,
            CoreStatus::Done => Self::Done,
            CoreStatus::Failed => Self::Failed,
            CoreStatus::Cancelled => Self::Cancelled,
            CoreStatus::Interrupted => Self::Interrupted,
        }
    }
}

impl From<BlobRef> for BlobInfo {
    fn from(b: BlobRef) -> Self {
        Self {
            hash: b.hash,
            size: b.size,
            media_type: b.media_type,
            name: b.name,
        }
    }
}

impl From<TaskEvent> for TaskEventView {
    fn from(e: TaskEvent) -> Self {
        Self {
            at_ms: e.at,
            kind: e.kind,
            text: e.text,
            blob: e.blob.map(Into::into),
        }
    }
}

impl From<TaskResult> for TaskResultView {
    fn from(r: TaskResult) -> Self {
        Self {
            summary: r.summary,
            blobs: r.blobs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<api::PhoneTask> for TaskView {
    fn from(t: api::PhoneTask) -> Self {
        let task = t.task;
        Self {
            id: task.id.to_string(),
            prompt: task.prompt,
            created_by: task.created_by,
            created_at_ms: task.created_at,
            received_at_ms: task.received_at,
            status: task.status.into(),
            started_at_ms: task.started_at,
            finished_at_ms: task.finished_at,
            cancel_requested_by: task.cancel_requested_by,
            events: task.events.into_iter().map(Into::into).collect(),
            result: task.result.map(Into::into),
            mine: t.mine,
            waiting_for: t.waiting_for.into_iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl From<CoreVerdict> for Verdict {
    fn from(v: CoreVerdict) -> Self {
        match v {
            CoreVerdict::Approve => Self::Approve,
            CoreVerdict::Deny => Self::Deny,
        }
    }
}

impl From<CoreRisk> for Risk {
    fn from(r: CoreRisk) -> Self {
        match r {
            CoreRisk::Low => Self::Low,
            CoreRisk::Medium => Self::Medium,
            CoreRisk::High => Self::High,
        }
    }
}

impl From<api::PhoneApproval> for ApprovalView {
    fn from(a: api::PhoneApproval) -> Self {
        let Approval {
            id,
            task_id,
            tool,
            args,
            summary,
            risk,
            requested_at,
            expires_at,
            ..
        } = a.approval;
        Self {
            id: id.to_string(),
            task_id: task_id.to_string(),
            tool,
            args,
            summary,
            risk: risk.into(),
            requested_at_ms: requested_at,
            expires_at_ms: expires_at,
            state: match a.status {
                api::ApprovalState::Pending => ApprovalState::Pending,
                api::ApprovalState::Expired => ApprovalState::Expired,
                api::ApprovalState::Resolved(r) => ApprovalState::Resolved {
                    verdict: r.verdict.into(),
                    by: r.by,
                    at_ms: r.at,
                    reason: r.reason,
                    counted: r.counted,
                },
            },
            my_verdict: a.my_verdict.map(Into::into),
            too_late: a.too_late,
            expires_in_ms: a.expires_in_ms,
            verified: a.verified,
        }
    }
}
