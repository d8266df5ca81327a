import DeskhandMobile
import Foundation

private let pairKey = "pair"

/// What the pairing screen shows.
public struct PairingState: Equatable {
    /// A desktop is this phone's home.
    public var paired: Bool
    /// Its name, once paired.
    public var desktopName: String?
    /// The workspace has arrived: the conversation can be shown and written.
    public var ready: Bool
    /// A pairing is running.
    public var pairing: Bool
    /// Why the last pairing failed, in the core's words (a used or expired code, a typo, …).
    public var error: String?
}

/// Pairs this phone with a desktop from the text of its QR code, scanned by the camera or pasted.
/// The core checks the code; its refusals are shown as it words them.
@MainActor
public final class PairingModel {
    private let core: ModelCore<PairingState>

    /// A model on `session`.
    public init(session: PhoneSession) {
        core = ModelCore(session: session) { s, busy, error in
            PairingState(
                paired: s.desktop != nil,
                desktopName: s.desktop?.name,
                ready: s.workspaceReceived,
                pairing: busy.contains(pairKey),
                error: error
            )
        }
    }

    /// The screen's state now.
    public var state: PairingState { core.cell.value }
    /// The state now and after each change (the stream keeps the model alive while it is read).
    public func states() -> AsyncStream<PairingState> { core.cell.values(keepingAlive: self) }
    /// The last error, as the core worded it; `nil` when the last action succeeded.
    public var error: String? { core.error }
    /// Hides the error line.
    public func dismissError() { core.dismissError() }

    /// Pairs with the desktop whose code is `code` (`deskhand://pair?…`; surrounding whitespace,
    /// as pasting leaves it, is ignored), then syncs once to receive the workspace. The desktop's
    /// name, or `nil` with `error` set.
    @discardableResult
    public func pair(_ code: String) async -> String? {
        let phone = core.session.phone
        return await core.act(pairKey) {
            let desktop = try await phone.pair(code: code.trimmingCharacters(in: .whitespacesAndNewlines))
            phone.start()
            do {
                try await phone.sync(timeoutMs: PhoneSession.syncTimeoutMs)
            } catch ApiError.Unreachable(_) {
                // Paired; the workspace follows in the background when the desktop answers again.
            }
            return desktop.name
        }
    }
}
