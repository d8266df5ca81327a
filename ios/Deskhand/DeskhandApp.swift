import DeskhandKit
import SwiftUI

/// The app: pairs with a desktop, then shows the conversation, the approvals and the devices.
@main
struct DeskhandApp: App {
    @StateObject private var app = AppModel.shared
    @Environment(\.scenePhase) private var scenePhase

    var body: some Scene {
        WindowGroup {
            RootView(app: app)
        }
        .onChange(of: scenePhase) { phase in
            switch phase {
            case .active: Task { await app.becameActive() }
            case .background: app.wentToBackground()
            default: break
            }
        }
        // A BGAppRefreshTask (identifier in Info.plist's BGTaskSchedulerPermittedIdentifiers):
        // SwiftUI registers the handler at launch; AppModel schedules the next one.
        .backgroundTask(.appRefresh(AppModel.refreshTaskId)) {
            await AppModel.shared.backgroundRefresh()
        }
    }
}

/// Opening, a failure to open, pairing, or the paired app.
struct RootView: View {
    @ObservedObject var app: AppModel

    var body: some View {
        switch app.phase {
        case .opening:
            ProgressView("Opening…")
                .task { await app.open() }
        case let .failed(reason):
            VStack(spacing: 16) {
                Image(systemName: "exclamationmark.triangle").font(.largeTitle)
                Text("Deskhand could not open its storage").font(.headline)
                Text(reason).font(.callout).multilineTextAlignment(.center)
                Button("Try again") { Task { await app.open() } }
            }
            .padding()
        case let .open(models):
            PairedOrNot(models: models, pairing: models.pairing, app: app)
        }
    }
}

/// The pairing screen until a desktop is paired and its workspace arrived, then the tabs.
struct PairedOrNot: View {
    let models: PhoneModels
    @ObservedObject var pairing: Live<PairingModel, PairingState>
    let app: AppModel

    var body: some View {
        if pairing.state.paired && pairing.state.ready {
            MainTabs(models: models, approvals: models.approvals)
        } else {
            PairScreen(pairing: pairing) {
                Task { await app.askForNotifications() }
            }
        }
    }
}

/// Conversation, approvals (with the number waiting) and devices.
struct MainTabs: View {
    let models: PhoneModels
    @ObservedObject var approvals: Live<ApprovalsModel, ApprovalsState>

    var body: some View {
        TabView {
            NavigationStack {
                ConversationScreen(models: models, live: models.conversation)
            }
            .tabItem { Label("Desktop", systemImage: "desktopcomputer") }

            NavigationStack {
                ApprovalsScreen(live: approvals)
            }
            .tabItem { Label("Approvals", systemImage: "checkmark.shield") }
            .badge(approvals.state.pending.count)

            NavigationStack {
                DevicesScreen(live: models.devices)
            }
            .tabItem { Label("Devices", systemImage: "iphone") }
        }
    }
}
