import DeskhandMobile
import Foundation

/// Where the fetch of a task's blob stands.
public enum BlobState: Equatable {
    /// Not fetched.
    case notFetched
    /// Being fetched from the desktop.
    case fetching
    /// Fetched and verified against its hash: its bytes (show a screenshot, export a file).
    case fetched(Data)
    /// The fetch failed: the core's message.
    case failed(String)
}

/// A blob a task named, with where its fetch stands.
public struct TaskBlob: Equatable, Identifiable {
    /// Hash, size, media type and suggested name.
    public var info: BlobInfo
    /// Where its fetch stands.
    public var state: BlobState
    /// Its hash.
    public var id: String { info.hash }
}

/// What a task's screen shows.
public struct TaskState: Equatable {
    /// The task, once the phone has it.
    public var task: TaskView?
    /// Finished (done, failed, cancelled, interrupted).
    public var finished: Bool
    /// Its approval requests waiting for a decision.
    public var waitingApprovals: [ApprovalView]
    /// Every blob its progress and result name (each once), with where its fetch stands.
    public var blobs: [TaskBlob]
    /// Why the last action failed, in the core's words.
    public var error: String?
}

/// Mutable state a model keeps beside the snapshot, shared with its derive function.
final class Box<Value> {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// One task: its live progress, its result, its blobs, and cancelling it.
@MainActor
public final class TaskModel {
    /// The task shown.
    public let taskId: String
    private let core: ModelCore<TaskState>
    private let loads: Box<[String: BlobState]>

    /// A model of task `taskId` on `session`.
    public init(session: PhoneSession, taskId: String) {
        self.taskId = taskId
        let loads = Box<[String: BlobState]>([:])
        self.loads = loads
        core = ModelCore(session: session) { s, _, error in
            let task = s.tasks.first { $0.id == taskId }
            var seen = Set<String>()
            let infos = ((task?.events.compactMap(\.blob) ?? []) + (task?.result?.blobs ?? []))
                .filter { seen.insert($0.hash).inserted }
            return TaskState(
                task: task,
                finished: task.map { TaskModel.isFinished($0.status) } ?? false,
                waitingApprovals: s.pendingApprovals.filter { $0.taskId == taskId },
                blobs: infos.map { TaskBlob(info: $0, state: loads.value[$0.hash] ?? .notFetched) },
                error: error
            )
        }
    }

    /// The screen's state now.
    public var state: TaskState { core.cell.value }
    /// The state now and after each change (the stream keeps the model alive while it is read).
    public func states() -> AsyncStream<TaskState> { core.cell.values(keepingAlive: self) }
    /// The last error, as the core worded it; `nil` when the last action succeeded.
    public var error: String? { core.error }
    /// Hides the error line.
    public func dismissError() { core.dismissError() }
    /// Where each fetch stands, by hash (including fetches of hashes the task does not name).
    public var blobStates: [String: BlobState] { loads.value }

    /// Fetches blob `hash` from the desktop (verified against the hash): its bytes, or `nil` with
    /// `error` set and the blob's state `.failed`.
    @discardableResult
    public func fetchBlob(_ hash: String) async -> Data? {
        let phone = core.session.phone
        return await core.act("blob:\(hash)") {
            setLoad(hash, .fetching)
            do {
                let bytes = try await phone.fetchBlob(hash: hash)
                setLoad(hash, .fetched(bytes))
                return bytes
            } catch {
                setLoad(hash, .failed(userMessage(of: error)))
                throw error
            }
        }
    }

    /// Asks the desktop to cancel the task. `true` once the request is saved, or `nil` with `error`.
    @discardableResult
    public func cancel() async -> Bool? {
        let phone = core.session.phone
        let id = taskId
        return await core.act("cancel") {
            try await phone.cancelTask(taskId: id)
            return true
        }
    }

    /// Done, failed, cancelled or interrupted: nothing more will happen to it.
    public nonisolated static func isFinished(_ status: TaskStatus) -> Bool {
        switch status {
        case .done, .failed, .cancelled, .interrupted: return true
        case .queued, .running, .waitingApproval: return false
        }
    }

    private func setLoad(_ hash: String, _ state: BlobState) {
        loads.value[hash] = state
        core.refresh()
    }
}
