import DeskhandMobile
import Foundation

/// A local notification to post after a background sync. Built on the phone from the synced
/// document: nothing of it ever passed through a push service.
public struct WakeUpNote: Equatable {
    /// What it is about.
    public enum Kind: Equatable {
        /// An approval request waits for this phone's decision.
        case approval
        /// One of this phone's tasks finished (done, failed, cancelled, interrupted).
        case taskFinished(TaskStatus)
    }

    /// What it is about.
    public var kind: Kind
    /// Stable notification identifier (`deskhand.approval.<id>`, `deskhand.task.<id>`): posting
    /// it again replaces the earlier one instead of adding a second.
    public var identifier: String
    /// The approval's or the task's id.
    public var subjectId: String
    /// Its title.
    public var title: String
    /// Its text.
    public var body: String
}

/// What the notifier has already told the user about (or what the user saw in the app), so that
/// nothing is notified twice. The app keeps it across launches (it is `Codable`).
public struct WakeUpMemory: Codable, Equatable {
    /// Approval ids already notified or seen.
    public var approvals: Set<String> = []
    /// Task ids whose end was already notified or seen.
    public var finishedTasks: Set<String> = []

    /// Nothing known yet.
    public init() {}
}

/// Decides which local notifications to show after a background sync: approval requests waiting
/// for this phone's decision and tasks of this phone that finished, each once. Pure: no clock, no
/// storage, no UI; the app posts the notes and stores the memory.
public enum WakeUpNotifier {
    /// The notes to post for `snapshot`, given what `memory` says was already shown, and the
    /// memory to keep afterwards. Only ids still in the snapshot are remembered, so the memory
    /// stays as small as the workspace. Notes come approvals first, each group oldest first.
    public static func notes(for snapshot: PhoneSnapshot, memory: WakeUpMemory)
        -> (notes: [WakeUpNote], memory: WakeUpMemory)
    {
        var notes: [WakeUpNote] = []
        var next = WakeUpMemory()
        for request in snapshot.pendingApprovals {
            next.approvals.insert(request.id)
            guard !memory.approvals.contains(request.id), needsDecision(request) else { continue }
            notes.append(
                WakeUpNote(
                    kind: .approval,
                    identifier: "deskhand.approval.\(request.id)",
                    subjectId: request.id,
                    title: request.risk == .high ? "High-risk approval needed" : "Approval needed",
                    body: request.summary
                ))
        }
        // Requests resolved meanwhile stay remembered as long as the snapshot lists them.
        for request in snapshot.resolvedApprovals where memory.approvals.contains(request.id) {
            next.approvals.insert(request.id)
        }
        for task in snapshot.tasks where task.mine && TaskModel.isFinished(task.status) {
            next.finishedTasks.insert(task.id)
            guard !memory.finishedTasks.contains(task.id) else { continue }
            notes.append(
                WakeUpNote(
                    kind: .taskFinished(task.status),
                    identifier: "deskhand.task.\(task.id)",
                    subjectId: task.id,
                    title: title(of: task.status),
                    body: task.result?.summary ?? task.prompt
                ))
        }
        return (notes, next)
    }

    /// Everything `snapshot` shows counts as seen (the app is in the foreground, or this is the
    /// first run): the memory to keep, with no notes.
    public static func seen(_ snapshot: PhoneSnapshot, memory: WakeUpMemory) -> WakeUpMemory {
        var all = notes(for: snapshot, memory: memory).memory
        for request in snapshot.resolvedApprovals {
            all.approvals.insert(request.id)
        }
        return all
    }

    /// Waiting, not expired (in the desktop's time as the phone estimates it), not decided by this
    /// phone.
    static func needsDecision(_ request: ApprovalView) -> Bool {
        request.state == .pending && request.myVerdict == nil && request.expiresInMs > 0
    }

    static func title(of status: TaskStatus) -> String {
        switch status {
        case .done: return "Task done"
        case .failed: return "Task failed"
        case .cancelled: return "Task cancelled"
        case .interrupted: return "Task interrupted"
        case .queued, .running, .waitingApproval: return "Task"
        }
    }
}
