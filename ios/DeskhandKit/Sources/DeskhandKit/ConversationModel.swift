import DeskhandMobile
import Foundation

private let sendKey = "send"
private let olderKey = "older"

/// What the conversation screen shows.
public struct ConversationState: Equatable {
    /// The desktop's name, once paired.
    public var desktopName: String?
    /// Whether the desktop is reachable.
    public var presence: DesktopPresence
    /// Connected and both sides hold the same changes.
    public var inSync: Bool
    /// What the desktop last reported about itself, once the workspace arrived.
    public var health: DesktopHealthView?
    /// The conversation, oldest first; each of this phone's messages says whether it is delivered.
    public var messages: [MessageView]
    /// Weeks of older conversation on the desktop not loaded here: offer "load older" while > 0.
    public var olderWeeks: UInt32
    /// Older messages are being asked for.
    public var loadingOlder: Bool
    /// The workspace has arrived; until then nothing can be sent.
    public var canSend: Bool
    /// A message is being saved.
    public var sending: Bool
    /// Why the last send failed, in the core's words.
    public var error: String?
}

/// The conversation with the desktop: messages with their delivery state, the desktop's presence
/// and health, and sending. A message is saved on the phone before `send` returns and delivered
/// when the desktop is reachable; its `delivery` turns from `.pending` to `.synced` then.
@MainActor
public final class ConversationModel {
    private let core: ModelCore<ConversationState>

    /// A model on `session`.
    public init(session: PhoneSession) {
        core = ModelCore(session: session) { s, busy, error in
            ConversationState(
                desktopName: s.desktop?.name,
                presence: DesktopPresence(s),
                inSync: s.desktop?.inSync == true,
                health: s.desktop?.health.map(DesktopHealthView.init),
                messages: s.messages,
                olderWeeks: s.olderWeeks,
                loadingOlder: busy.contains(olderKey),
                canSend: s.workspaceReceived,
                sending: busy.contains(sendKey),
                error: error
            )
        }
    }

    /// The screen's state now.
    public var state: ConversationState { core.cell.value }
    /// The state now and after each change (the stream keeps the model alive while it is read).
    public func states() -> AsyncStream<ConversationState> { core.cell.values(keepingAlive: self) }
    /// The last error, as the core worded it; `nil` when the last action succeeded.
    public var error: String? { core.error }
    /// Hides the error line.
    public func dismissError() { core.dismissError() }

    /// Writes `text` as a message (the desktop runs it as a task and replies in the conversation).
    /// Its id, or `nil` with `error` set (empty text, not paired, …).
    @discardableResult
    public func send(_ text: String) async -> String? {
        let phone = core.session.phone
        return await core.act(sendKey) { try await phone.sendMessage(text: text) }
    }

    /// Loads the next `weeks` weeks of older conversation from the desktop, newest first; their
    /// messages appear in `state` as they arrive. How many weeks were loaded (0: nothing older),
    /// or `nil` with `error` set.
    @discardableResult
    public func loadOlder(weeks: UInt32 = 1) async -> UInt32? {
        let phone = core.session.phone
        return await core.act(olderKey) { try await phone.loadOlder(weeks: weeks) }
    }

    /// The id of the task the desktop runs for message `messageId` (its reply carries it).
    public nonisolated func taskId(ofMessage messageId: String) -> String {
        "m-\(messageId)"
    }
}
