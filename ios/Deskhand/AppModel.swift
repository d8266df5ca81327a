import BackgroundTasks
import DeskhandKit
import Foundation
import Network
import UIKit
import UserNotifications

/// The models of a phone that is open: one `PhoneSession` shared by every screen.
@MainActor
final class PhoneModels {
    let session: PhoneSession
    let pairing: Live<PairingModel, PairingState>
    let conversation: Live<ConversationModel, ConversationState>
    let approvals: Live<ApprovalsModel, ApprovalsState>
    let devices: Live<DevicesModel, DevicesState>

    init(session: PhoneSession) {
        self.session = session
        pairing = Live(PairingModel(session: session))
        conversation = Live(ConversationModel(session: session))
        approvals = Live(ApprovalsModel(session: session))
        devices = Live(DevicesModel(session: session))
    }

    /// A model of task `taskId`, for its screen.
    func task(_ taskId: String) -> Live<TaskModel, TaskState> {
        Live(TaskModel(session: session, taskId: taskId))
    }
}

/// The app's lifecycle around the phone: opens it once (key from the Keychain), follows the
/// scene's phase and the network, and runs background refreshes with their local notifications.
@MainActor
final class AppModel: ObservableObject {
    /// Where opening the phone stands.
    enum Phase {
        case opening
        case failed(String)
        case open(PhoneModels)
    }

    /// The identifier of the background refresh (also in Info.plist,
    /// `BGTaskSchedulerPermittedIdentifiers`).
    nonisolated static let refreshTaskId = "dev.deskhand.app.refresh"
    /// How long a background refresh waits for its sync (ms): iOS gives a refresh about 30 s.
    nonisolated static let refreshSyncTimeoutMs: UInt64 = 20_000
    /// The earliest next refresh after one ran or the app went to the background (iOS decides
    /// when it really runs, from how the app is used).
    nonisolated static let refreshInterval: TimeInterval = 15 * 60

    /// The one per process: the scene and the background refresh handler share it.
    static let shared = AppModel()

    @Published private(set) var phase: Phase = .opening

    private var opening: Task<PhoneModels?, Never>?
    private var active = false
    private var monitor: NWPathMonitor?
    private var lastPath: NWPath.Status?
    private let memoryKey = "deskhand.wakeup-memory"

    /// Opens the phone (once; later calls wait for the same opening). `nil` when it failed, with
    /// the reason in `phase`.
    @discardableResult
    func open() async -> PhoneModels? {
        if let opening {
            return await opening.value
        }
        let task = Task { () -> PhoneModels? in
            initPlatform(filter: "info", sink: nil)
            do {
                let session = try await PhoneSession.open(settings: try Self.settings(), keyProvider: KeychainKeyProvider())
                let models = PhoneModels(session: session)
                self.phase = .open(models)
                self.startNetworkMonitor()
                return models
            } catch {
                self.phase = .failed((error as? ApiError)?.userMessage ?? error.localizedDescription)
                return nil
            }
        }
        opening = task
        let models = await task.value
        if models == nil {
            opening = nil  // the next call tries again (e.g. after the device is unlocked)
        }
        return models
    }

    /// The phone's settings: its database in Application Support, left out of backups (the device
    /// key never leaves this device, so a restored database could not be opened elsewhere).
    private static func settings() throws -> PhoneSettings {
        var dir = try FileManager.default.url(
            for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true
        ).appendingPathComponent("Deskhand", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var values = URLResourceValues()
        values.isExcludedFromBackup = true
        try dir.setResourceValues(values)
        // mDNS needs Apple's multicast entitlement on iOS; the phone dials the addresses from the
        // QR code and those the desktop publishes in the workspace, and its relay if it named one.
        return PhoneSettings(
            dataDir: dir.path, deviceName: UIDevice.current.name, platform: "ios", mdns: false)
    }

    /// The scene became active: sync now; what is on screen counts as seen for the notifier.
    func becameActive() async {
        active = true
        guard let models = await open() else { return }
        models.session.onForeground()
        saveMemory(WakeUpNotifier.seen(models.session.snapshot, memory: loadMemory()))
        UNUserNotificationCenter.current().removeAllDeliveredNotifications()
    }

    /// The scene went to the background: stop syncing and ask iOS for a background refresh.
    func wentToBackground() {
        active = false
        if case let .open(models) = phase {
            models.session.onBackground()
            saveMemory(WakeUpNotifier.seen(models.session.snapshot, memory: loadMemory()))
        }
        scheduleRefresh()
    }

    /// One background refresh: one sync with a timeout, then the notifier's local notifications.
    func backgroundRefresh() async {
        scheduleRefresh()
        guard let models = await open() else { return }
        do {
            let snapshot = try await models.session.backgroundSync(
                timeoutMs: Self.refreshSyncTimeoutMs, stopAfter: !active)
            let (notes, memory) = WakeUpNotifier.notes(for: snapshot, memory: loadMemory())
            saveMemory(memory)
            await post(notes)
        } catch {
            // Unreachable or unpaired: nothing new to tell; presence shows it when the app opens.
        }
    }

    /// Asks for permission to show notifications (after pairing: then they mean something).
    func askForNotifications() async {
        _ = try? await UNUserNotificationCenter.current().requestAuthorization(options: [.alert, .sound, .badge])
    }

    private func scheduleRefresh() {
        let request = BGAppRefreshTaskRequest(identifier: Self.refreshTaskId)
        request.earliestBeginDate = Date(timeIntervalSinceNow: Self.refreshInterval)
        // Fails in the simulator and when background refresh is off for the app: nothing to do then.
        try? BGTaskScheduler.shared.submit(request)
    }

    private func post(_ notes: [WakeUpNote]) async {
        let center = UNUserNotificationCenter.current()
        for note in notes {
            let content = UNMutableNotificationContent()
            content.title = note.title
            content.body = note.body
            content.sound = .default
            content.threadIdentifier = note.kind == .approval ? "approvals" : "tasks"
            content.userInfo = ["subject": note.subjectId]
            let request = UNNotificationRequest(identifier: note.identifier, content: content, trigger: nil)
            _ = try? await center.add(request)
        }
    }

    /// Network changes while the app is active: reconnect now rather than after the backoff.
    private func startNetworkMonitor() {
        guard self.monitor == nil else { return }
        let monitor = NWPathMonitor()
        monitor.pathUpdateHandler = { [weak self] path in
            let status = path.status
            // Its own weak capture: reading the outer one (a `var`) from the task is an error
            // since Swift 5.10.
            Task { @MainActor [weak self] in self?.pathChanged(status) }
        }
        monitor.start(queue: DispatchQueue(label: "dev.deskhand.app.network"))
        self.monitor = monitor
    }

    private func pathChanged(_ status: NWPath.Status) {
        // The first report is the current state, not a change.
        let first = lastPath == nil
        lastPath = status
        guard !first, active, status == .satisfied, case let .open(models) = phase else { return }
        models.session.onNetworkChanged()
    }

    private func loadMemory() -> WakeUpMemory {
        guard let data = UserDefaults.standard.data(forKey: memoryKey),
              let memory = try? JSONDecoder().decode(WakeUpMemory.self, from: data)
        else { return WakeUpMemory() }
        return memory
    }

    private func saveMemory(_ memory: WakeUpMemory) {
        if let data = try? JSONEncoder().encode(memory) {
            UserDefaults.standard.set(data, forKey: memoryKey)
        }
    }
}
