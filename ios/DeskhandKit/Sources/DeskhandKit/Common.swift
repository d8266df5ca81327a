import DeskhandMobile
import Foundation

extension ApiError {
    /// The core's own words for this error, as the UI shows them: the `reason` the core wrote, or
    /// its fixed sentence for the variants without one. (The generated `errorDescription` is the
    /// debug form, `Refused(reason: "…")`, not for people.)
    public var userMessage: String {
        switch self {
        case .NotPaired: return "this phone is not paired with a desktop"
        case .NotSynced: return "the workspace has not been received from the desktop yet"
        case .Stopped: return "syncing is stopped"
        case .Closed: return "the phone is shut down"
        case let .AlreadyPaired(reason), let .Refused(reason), let .Unreachable(reason),
             let .Invalid(reason), let .NotFound(reason), let .AlreadyDecided(reason),
             let .Expired(reason), let .Key(reason), let .Storage(reason), let .Unsent(reason),
             let .Internal(reason):
            return reason
        }
    }
}

/// The words for any error an action threw: the core's for an `ApiError`, the system's otherwise.
func userMessage(of error: Error) -> String {
    if let api = error as? ApiError {
        return api.userMessage
    }
    return String(describing: error)
}

/// Whether and since when the desktop is reachable, as a screen shows it.
public enum DesktopPresence: Equatable {
    /// No desktop: pair first.
    case notPaired
    /// Paired but never reached since; `lastError`: why the last attempt failed, if it did.
    case neverReached(lastError: String?)
    /// Connected now, since `sinceMs` (desktop clock, unix ms).
    case online(sinceMs: Int64)
    /// Not connected now; last connected at `lastSeenMs` (desktop clock, unix ms); `lastError`:
    /// why the last attempt failed, if it did.
    case offline(lastSeenMs: Int64, lastError: String?)

    /// The desktop's presence in `snapshot`.
    public init(_ snapshot: PhoneSnapshot) {
        guard let desktop = snapshot.desktop else {
            self = .notPaired
            return
        }
        switch desktop.presence {
        case let .connected(sinceMs): self = .online(sinceMs: sinceMs)
        case let .lastSeen(atMs): self = .offline(lastSeenMs: atMs, lastError: desktop.lastError)
        case .never: self = .neverReached(lastError: desktop.lastError)
        }
    }

    /// Connected now.
    public var isOnline: Bool {
        if case .online = self { return true }
        return false
    }
}

/// What the desktop last said about itself, and whether that is too old to trust.
public struct DesktopHealthView: Equatable {
    /// A heartbeat older than this (ms, 5 minutes) is shown as stale.
    public static let staleHeartbeatMs: Int64 = 5 * 60 * 1000

    /// What its executor is doing.
    public var executor: ExecutorState
    /// Its operating system.
    public var os: String
    /// How old its last heartbeat is (ms).
    public var heartbeatAgeMs: Int64
    /// The heartbeat is older than `staleHeartbeatMs`: the desktop may be asleep or hung.
    public var stale: Bool

    /// From the core's record.
    public init(_ health: DesktopHealth) {
        executor = health.executor
        os = health.os
        heartbeatAgeMs = health.heartbeatAgeMs
        stale = health.heartbeatAgeMs > Self.staleHeartbeatMs
    }
}

/// What every view model shares: its session, its screen state derived from the phone's snapshot,
/// an error line (the core's message of the last failed action, cleared by the next action or by
/// `dismissError()`), and the set of actions in flight (keys chosen by each model) so that
/// buttons can show progress. The state is recomputed whenever the snapshot, the error or the
/// busy set changes, on the main actor.
@MainActor
final class ModelCore<State> {
    let session: PhoneSession
    private(set) var error: String?
    private(set) var busy: Set<String> = []
    let cell: StateCell<State>
    private let derive: (PhoneSnapshot, Set<String>, String?) -> State

    init(session: PhoneSession, derive: @escaping (PhoneSnapshot, Set<String>, String?) -> State) {
        self.session = session
        self.derive = derive
        cell = StateCell(derive(session.snapshot, [], nil))
        session.snapshots.observe { [weak self] _ in
            guard let self else { return false }
            self.refresh()
            return true
        }
    }

    /// Recomputes the state (also after a change of a model's own extra state).
    func refresh() {
        cell.set(derive(session.snapshot, busy, error))
    }

    /// Shows `message` as the error line (for refusals the model itself decides).
    func fail(_ message: String) {
        error = message
        refresh()
    }

    func dismissError() {
        error = nil
        refresh()
    }

    /// Runs `body` with `key` marked busy, clearing the error first: its result, or `nil` with the
    /// core's message in `error` when it threw.
    func act<T>(_ key: String, _ body: () async throws -> T) async -> T? {
        busy.insert(key)
        error = nil
        refresh()
        defer {
            busy.remove(key)
            refresh()
        }
        do {
            return try await body()
        } catch {
            self.error = userMessage(of: error)
            return nil
        }
    }
}
