import DeskhandMobile
import Foundation

private let forgetKey = "forget"

/// What the devices screen shows.
public struct DevicesState: Equatable {
    /// This phone's device id.
    public var deviceId: String
    /// This phone's name, as the desktop shows it.
    public var deviceName: String
    /// The home desktop's id, once paired.
    public var desktopId: String?
    /// Its name.
    public var desktopName: String?
    /// Whether it is reachable.
    public var presence: DesktopPresence
    /// Where the phone dials it (`ip:port`, newest first).
    public var desktopAddrs: [String]
    /// How many of this phone's writes the desktop does not hold yet.
    public var unsent: UInt64
    /// Every device paired with the desktop, this phone included (`thisDevice`), oldest pairing
    /// first, revoked ones too (the workspace's display copy; the desktop's registry decides).
    public var pairedDevices: [DeviceView]
    /// Forgetting is running.
    public var forgetting: Bool
    /// Why the last action failed, in the core's words.
    public var error: String?
}

/// This phone and its desktop: presence, what is not sent yet, and "forget this desktop" (refused
/// by the core while writes are unsent, unless the user chooses to drop them).
@MainActor
public final class DevicesModel {
    private let core: ModelCore<DevicesState>
    private let unsentBox: Box<UInt64>
    private var counting = false
    private var countAgain = false

    /// A model on `session`.
    public init(session: PhoneSession) {
        let unsentBox = Box<UInt64>(0)
        self.unsentBox = unsentBox
        core = ModelCore(session: session) { s, busy, error in
            DevicesState(
                deviceId: s.deviceId,
                deviceName: s.deviceName,
                desktopId: s.desktop?.id,
                desktopName: s.desktop?.name,
                presence: DesktopPresence(s),
                desktopAddrs: s.desktop?.addrs ?? [],
                unsent: unsentBox.value,
                pairedDevices: s.devices,
                forgetting: busy.contains(forgetKey),
                error: error
            )
        }
        session.snapshots.observe { [weak self] _ in
            guard let self else { return false }
            self.recount()
            return true
        }
        recount()
    }

    /// The screen's state now.
    public var state: DevicesState { core.cell.value }
    /// The state now and after each change (the stream keeps the model alive while it is read).
    public func states() -> AsyncStream<DevicesState> { core.cell.values(keepingAlive: self) }
    /// The last error, as the core worded it; `nil` when the last action succeeded.
    public var error: String? { core.error }
    /// Hides the error line.
    public func dismissError() { core.dismissError() }

    /// Forgets the desktop so that the phone can pair with another. Refused while writes are
    /// unsent (`nil`; the core's message in `error` says what would be lost) unless `dropUnsent`.
    /// `true` when done.
    @discardableResult
    public func forgetDesktop(dropUnsent: Bool = false) async -> Bool? {
        let phone = core.session.phone
        let result: Bool? = await core.act(forgetKey) {
            if dropUnsent {
                try await phone.forgetDesktopDroppingUnsent()
            } else {
                try await phone.forgetDesktop()
            }
            return true
        }
        recount()
        return result
    }

    /// The unsent count is a storage read: done off the main actor, one at a time, once more if
    /// the phone changed meanwhile.
    private func recount() {
        if counting {
            countAgain = true
            return
        }
        counting = true
        let phone = core.session.phone
        Task { [weak self] in
            let count = await Task.detached(priority: .utility) {
                // Not paired or shut down: nothing can be unsent.
                (try? phone.unsentCount()) ?? 0
            }.value
            guard let self else { return }
            self.unsentBox.value = count
            self.core.refresh()
            self.counting = false
            if self.countAgain {
                self.countAgain = false
                self.recount()
            }
        }
    }
}
