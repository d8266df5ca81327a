import DeskhandKit
import SwiftUI

/// The conversation with the desktop: each message with its delivery state, the desktop's presence
/// and health at the top, and a field to write. A message opens its task.
struct ConversationScreen: View {
    let models: PhoneModels
    @ObservedObject var live: Live<ConversationModel, ConversationState>
    @State private var draft = ""

    var body: some View {
        let state = live.state
        VStack(spacing: 0) {
            StatusBar(presence: state.presence, inSync: state.inSync, health: state.health)
            List {
                if state.olderWeeks > 0 {
                    Button(state.loadingOlder ? "Loading…" : "Load older messages") {
                        Task { await live.model.loadOlder() }
                    }
                    .disabled(state.loadingOlder)
                    .frame(maxWidth: .infinity)
                }
                ForEach(state.messages, id: \.id) { message in
                    NavigationLink(value: taskId(of: message)) {
                        MessageRow(message: message)
                    }
                }
            }
            .listStyle(.plain)
            if let error = state.error {
                Text(error)
                    .font(.footnote)
                    .foregroundStyle(.red)
                    .padding(.horizontal)
                    .onTapGesture { live.model.dismissError() }
            }
            HStack {
                TextField(state.canSend ? "Ask the desktop…" : "Waiting for the workspace…", text: $draft, axis: .vertical)
                    .textFieldStyle(.roundedBorder)
                    .lineLimit(1...5)
                Button {
                    let text = draft
                    Task {
                        if await live.model.send(text) != nil {
                            draft = ""
                        }
                    }
                } label: {
                    Image(systemName: "arrow.up.circle.fill").font(.title2)
                }
                .disabled(!state.canSend || state.sending || draft.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
            }
            .padding()
        }
        .navigationTitle(state.desktopName ?? "Desktop")
        .navigationBarTitleDisplayMode(.inline)
        .navigationDestination(for: String.self) { taskId in
            TaskScreen(models: models, taskId: taskId)
        }
    }

    /// The task a message belongs to: an agent's reply names it; a message of a phone is run as
    /// task `m-<message id>`.
    private func taskId(of message: MessageView) -> String {
        message.taskId ?? live.model.taskId(ofMessage: message.id)
    }
}

/// One message: who speaks, the text, and for this phone's messages whether the desktop has it.
struct MessageRow: View {
    let message: MessageView

    var body: some View {
        VStack(alignment: message.mine ? .trailing : .leading, spacing: 4) {
            Text(message.text)
                .padding(10)
                .background(message.mine ? Color.accentColor.opacity(0.15) : Color.secondary.opacity(0.12))
                .clipShape(RoundedRectangle(cornerRadius: 12))
            HStack(spacing: 4) {
                Text(Date(timeIntervalSince1970: Double(message.createdAtMs) / 1000), style: .time)
                if message.mine {
                    switch message.delivery {
                    case .pending: Label("Not delivered yet", systemImage: "clock")
                    case .synced: Label("Delivered", systemImage: "checkmark")
                    }
                } else if message.role == .system {
                    Text("desktop")
                }
            }
            .font(.caption2)
            .foregroundStyle(.secondary)
            .labelStyle(.titleAndIcon)
        }
        .frame(maxWidth: .infinity, alignment: message.mine ? .trailing : .leading)
    }
}

/// Whether the desktop is reachable, in sync, and what it last said about itself.
struct StatusBar: View {
    let presence: DesktopPresence
    /// Whether both sides hold the same changes (`nil`: not shown).
    let inSync: Bool?
    let health: DesktopHealthView?

    var body: some View {
        VStack(alignment: .leading, spacing: 2) {
            HStack {
                Circle().fill(color).frame(width: 8, height: 8)
                Text(presenceText)
                Spacer()
                if presence.isOnline, let inSync {
                    Text(inSync ? "in sync" : "syncing…")
                }
            }
            if let health {
                Text(healthText(health))
                    .foregroundStyle(health.stale ? Color.orange : Color.secondary)
            }
        }
        .font(.caption)
        .padding(.horizontal)
        .padding(.vertical, 6)
        .background(.bar)
    }

    private var color: Color {
        switch presence {
        case .online: return .green
        case .offline: return .orange
        case .neverReached, .notPaired: return .gray
        }
    }

    private var presenceText: String {
        switch presence {
        case .notPaired:
            return "Not paired"
        case let .neverReached(lastError):
            return "Not reached yet" + (lastError.map { ": \($0)" } ?? "")
        case .online:
            return "Connected"
        case let .offline(lastSeenMs, lastError):
            let seen = Date(timeIntervalSince1970: Double(lastSeenMs) / 1000)
                .formatted(date: .abbreviated, time: .shortened)
            return "Last seen \(seen)" + (lastError.map { " — \($0)" } ?? "")
        }
    }

    private func healthText(_ health: DesktopHealthView) -> String {
        let executor: String
        switch health.executor {
        case .idle: executor = "idle"
        case .busy: executor = "working"
        case .paused: executor = "paused"
        }
        let minutes = health.heartbeatAgeMs / 60_000
        let age = minutes < 1 ? "just now" : "\(minutes) min ago"
        return "\(health.os), \(executor); heartbeat \(age)" + (health.stale ? " (stale: asleep or hung?)" : "")
    }
}
