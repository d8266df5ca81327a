import DeskhandKit
import SwiftUI

/// This phone and its desktop: presence, addresses, what is not sent yet, and "forget this
/// desktop" behind a confirmation (and a second one when unsent writes would be dropped).
struct DevicesScreen: View {
    @ObservedObject var live: Live<DevicesModel, DevicesState>
    @State private var confirmForget = false
    @State private var confirmDrop = false

    var body: some View {
        let state = live.state
        List {
            Section("This phone") {
                LabeledContent("Name", value: state.deviceName)
                LabeledContent("Device id") {
                    Text(state.deviceId).font(.system(.caption, design: .monospaced)).textSelection(.enabled)
                }
            }
            if let desktopId = state.desktopId {
                Section("Desktop") {
                    LabeledContent("Name", value: state.desktopName ?? "")
                    LabeledContent("Device id") {
                        Text(desktopId).font(.system(.caption, design: .monospaced)).textSelection(.enabled)
                    }
                    StatusBar(presence: state.presence, inSync: nil, health: nil)
                    ForEach(state.desktopAddrs, id: \.self) { addr in
                        Text(addr).font(.system(.caption, design: .monospaced))
                    }
                    LabeledContent("Not sent yet", value: "\(state.unsent)")
                }
                if !state.pairedDevices.isEmpty {
                    Section("Paired with this desktop") {
                        ForEach(state.pairedDevices, id: \.id) { device in
                            LabeledContent(device.thisDevice ? "\(device.name) (this phone)" : device.name) {
                                Text(device.revokedAtMs == nil ? device.platform : "\(device.platform), revoked")
                            }
                        }
                    }
                }
                Section {
                    Button("Forget this desktop", role: .destructive) { confirmForget = true }
                        .disabled(state.forgetting)
                } footer: {
                    Text("The phone forgets the desktop and its workspace, so that it can pair again.")
                }
            }
            if let error = state.error {
                Section {
                    Text(error).foregroundStyle(.red)
                }
            }
        }
        .navigationTitle("Devices")
        .confirmationDialog("Forget \(state.desktopName ?? "this desktop")?", isPresented: $confirmForget,
                            titleVisibility: .visible) {
            Button("Forget", role: .destructive) {
                Task {
                    // The core refuses while writes are unsent, and says what would be lost.
                    if await live.model.forgetDesktop() == nil, live.state.unsent > 0 {
                        confirmDrop = true
                    }
                }
            }
        }
        .confirmationDialog("Drop what was not sent?", isPresented: $confirmDrop, titleVisibility: .visible) {
            Button("Forget and drop \(live.state.unsent) unsent", role: .destructive) {
                Task { await live.model.forgetDesktop(dropUnsent: true) }
            }
        } message: {
            Text(live.state.error ?? "Some of this phone's writes have not reached the desktop.")
        }
    }
}
