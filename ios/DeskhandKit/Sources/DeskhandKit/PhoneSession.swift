import DeskhandMobile
import Foundation

/// The phone of the app: the Rust core (`DeskhandPhone`) opened once, its live snapshot on the
/// main actor, and the lifecycle hooks the UI calls. Every view model of the app shares one.
///
/// No UI imports: the app hands in the `KeyProvider` (the Keychain in the app, a file in the
/// tests). The core calls its listener on one of its own threads; the session turns those calls,
/// in order, into updates of `snapshot` on the main actor.
@MainActor
public final class PhoneSession {
    /// How long `onForeground()` and a background refresh wait for a sync (ms).
    public nonisolated static let syncTimeoutMs: UInt64 = 15_000

    /// The generated binding of the phone; view models call it, the UI should not.
    public let phone: DeskhandPhone

    /// The latest state of the phone, as the core's listener last delivered it, and its changes.
    public let snapshots: StateCell<PhoneSnapshot>

    /// The latest state of the phone.
    public var snapshot: PhoneSnapshot { snapshots.value }

    /// This phone's device id.
    public let deviceId: String

    private var subscription: SubscriptionHandle?
    private var pump: Task<Void, Never>?

    private init(phone: DeskhandPhone, first: PhoneSnapshot) {
        self.phone = phone
        snapshots = StateCell(first)
        deviceId = phone.deviceId()
        // Unbounded: the core coalesces bursts itself, and every snapshot is applied in order.
        let (stream, continuation) = AsyncStream.makeStream(of: PhoneSnapshot.self)
        subscription = phone.subscribe(listener: SnapshotRelay(continuation))
        pump = Task { @MainActor [weak self] in
            for await next in stream {
                guard let self else { return }
                self.snapshots.set(next)
            }
        }
    }

    /// Opens the phone's core with the device key from `keyProvider`; if paired, it syncs with its
    /// desktop in the background at once. Throws the core's `ApiError` (`.Storage`, `.Key`,
    /// `.Invalid` for bad settings).
    public static func open(settings: PhoneSettings, keyProvider: KeyProvider) async throws
        -> PhoneSession
    {
        let phone = try await openPhone(settings: settings, keyProvider: keyProvider)
        return PhoneSession(phone: phone, first: try phone.snapshot())
    }

    /// The app came to the foreground: background sync on, reconnect now, and sync. The returned
    /// task ends when the phone and the desktop hold the same changes, or after `syncTimeoutMs`, or
    /// at once when the desktop is unreachable or the phone unpaired (presence then says so).
    @discardableResult
    public func onForeground() -> Task<Void, Never> {
        let phone = self.phone
        phone.start()
        return Task {
            // Unreachable, not paired, …: the snapshot's presence and last error show it.
            _ = try? await phone.sync(timeoutMs: PhoneSession.syncTimeoutMs)
        }
    }

    /// The app went to the background: background sync off; writes still go to local storage.
    public func onBackground() {
        phone.stop()
    }

    /// The network changed (Wi-Fi, mobile data, VPN): retry the desktop now, not after the backoff.
    public func onNetworkChanged() {
        phone.start()
    }

    /// One sync for a background refresh: starts syncing, waits until both sides hold the same
    /// changes (at most `timeoutMs`), then stops again if the app is still in the background
    /// (`stopAfter`). Returns the snapshot the core holds afterwards (not the listener's copy,
    /// which may follow a moment later), or throws the core's `ApiError` (`.Unreachable` when the
    /// desktop did not answer in time, `.NotPaired`).
    public func backgroundSync(timeoutMs: UInt64 = PhoneSession.syncTimeoutMs, stopAfter: Bool = true)
        async throws -> PhoneSnapshot
    {
        phone.start()
        defer {
            if stopAfter { phone.stop() }
        }
        try await phone.sync(timeoutMs: timeoutMs)
        return try phone.snapshot()
    }

    /// Ends the subscription and closes the core (its database and connection). Later calls of
    /// the phone fail with `ApiError.Closed`.
    public func close() async {
        subscription?.cancel()
        subscription = nil
        pump?.cancel()
        pump = nil
        await phone.shutdown()
    }
}

/// The core's listener: hands each snapshot, in the order the core delivers them (its calls never
/// overlap), to the session's stream.
private final class SnapshotRelay: PhoneListener {
    private let continuation: AsyncStream<PhoneSnapshot>.Continuation

    init(_ continuation: AsyncStream<PhoneSnapshot>.Continuation) {
        self.continuation = continuation
    }

    func onUpdate(snapshot: PhoneSnapshot) {
        continuation.yield(snapshot)
    }

    deinit {
        continuation.finish()
    }
}
