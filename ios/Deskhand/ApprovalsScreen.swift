import DeskhandKit
import LocalAuthentication
import SwiftUI

/// Approval requests: the exact action (tool and arguments), its risk and expiry, approve or deny.
/// A high-risk approve first asks the device owner (Face ID / Touch ID, or the passcode); the model
/// refuses it without that confirmation.
struct ApprovalsScreen: View {
    @ObservedObject var live: Live<ApprovalsModel, ApprovalsState>

    var body: some View {
        let state = live.state
        List {
            if let error = state.error {
                Section {
                    Label(error, systemImage: "exclamationmark.triangle")
                        .foregroundStyle(.red)
                        .onTapGesture { live.model.dismissError() }
                }
            }
            Section("Waiting") {
                if state.pending.isEmpty {
                    Text("Nothing waits for a decision.").foregroundStyle(.secondary)
                }
                ForEach(state.pending) { item in
                    PendingRow(item: item,
                               approve: { approve(item) },
                               deny: { Task { await live.model.deny(item.id) } })
                }
            }
            if !state.resolved.isEmpty {
                Section("Decided") {
                    ForEach(Array(state.resolved.reversed()), id: \.id) { request in
                        VStack(alignment: .leading, spacing: 2) {
                            Text(request.summary)
                            Text(outcome(request)).font(.caption).foregroundStyle(.secondary)
                        }
                    }
                }
            }
        }
        .navigationTitle("Approvals")
    }

    private func approve(_ item: ApprovalItem) {
        Task {
            guard item.needsBiometric else {
                await live.model.approve(item.id)
                return
            }
            let confirmed = await confirmOwner(reason: "Approve a high-risk action: \(item.request.summary)")
            // Without the confirmation the model refuses and says why.
            await live.model.approve(item.id, biometricConfirmed: confirmed)
        }
    }

    /// Face ID / Touch ID, falling back to the device passcode (`.deviceOwnerAuthentication`).
    /// `false` when the owner cancelled or failed, or the device has no passcode set.
    private func confirmOwner(reason: String) async -> Bool {
        let context = LAContext()
        var problem: NSError?
        guard context.canEvaluatePolicy(.deviceOwnerAuthentication, error: &problem) else {
            return false
        }
        return (try? await context.evaluatePolicy(.deviceOwnerAuthentication, localizedReason: reason)) ?? false
    }

    private func outcome(_ request: ApprovalView) -> String {
        switch request.state {
        case .pending: return "waiting"
        case .expired: return "expired: counted as denied"
        case let .resolved(verdict, by, _, reason, _):
            let what = verdict == .approve ? "approved" : "denied"
            let late = request.tooLate ? " (this phone's decision came too late)" : ""
            return "\(what) by \(by == "expired" ? "expiry" : String(by.prefix(8))): \(reason)\(late)"
        }
    }
}

/// One waiting request: what exactly would run, how risky it is, when it expires, and the buttons.
struct PendingRow: View {
    let item: ApprovalItem
    let approve: () -> Void
    let deny: () -> Void

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            HStack {
                Text(item.request.summary).font(.headline)
                Spacer()
                RiskBadge(risk: item.risk)
            }
            Text(item.request.tool).font(.system(.subheadline, design: .monospaced))
            Text(item.request.args)
                .font(.system(.caption, design: .monospaced))
                .textSelection(.enabled)
            Text(expiry).font(.caption).foregroundStyle(.secondary)
            if !item.canApprove {
                Text("This request does not match its own action hash: it cannot be approved.")
                    .font(.caption).foregroundStyle(.red)
            }
            HStack {
                Button(role: .destructive, action: deny) {
                    Label("Deny", systemImage: "xmark")
                }
                .buttonStyle(.bordered)
                Spacer()
                Button(action: approve) {
                    Label(item.needsBiometric ? "Approve with Face ID" : "Approve",
                          systemImage: item.needsBiometric ? "faceid" : "checkmark")
                }
                .buttonStyle(.borderedProminent)
                .disabled(!item.canApprove)
            }
            .disabled(item.deciding)
        }
        .padding(.vertical, 4)
    }

    private var expiry: String {
        let seconds = item.request.expiresInMs / 1000
        if seconds <= 0 { return "expired" }
        return seconds < 120 ? "expires in \(seconds) s" : "expires in \(seconds / 60) min"
    }
}

/// Low, medium or high, in words and colour.
struct RiskBadge: View {
    let risk: Risk

    var body: some View {
        Text(text)
            .font(.caption.bold())
            .padding(.horizontal, 6)
            .padding(.vertical, 2)
            .background(color.opacity(0.2))
            .foregroundStyle(color)
            .clipShape(Capsule())
    }

    private var text: String {
        switch risk {
        case .low: return "low risk"
        case .medium: return "medium risk"
        case .high: return "HIGH RISK"
        }
    }

    private var color: Color {
        switch risk {
        case .low: return .green
        case .medium: return .orange
        case .high: return .red
        }
    }
}
