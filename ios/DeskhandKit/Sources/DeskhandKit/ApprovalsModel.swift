import DeskhandMobile
import Foundation

/// A pending approval request as the list shows it.
public struct ApprovalItem: Equatable, Identifiable {
    /// The request: `tool` and `args` are the exact action, `summary` its line for people.
    public var request: ApprovalView
    /// How much it can change.
    public var risk: Risk
    /// Approving needs the device owner's confirmation first (Face ID / Touch ID / passcode):
    /// high risk.
    public var needsBiometric: Bool
    /// Its action hash matches what it shows; an unverified request cannot be approved.
    public var canApprove: Bool
    /// A decision on it is being signed and saved.
    public var deciding: Bool
    /// The request's id.
    public var id: String { request.id }
}

/// What the approvals screen shows.
public struct ApprovalsState: Equatable {
    /// Requests waiting for a decision, oldest first.
    public var pending: [ApprovalItem]
    /// Resolved or expired requests, oldest first.
    public var resolved: [ApprovalView]
    /// Why the last decision failed (the core's words, or the missing biometric confirmation).
    public var error: String?
}

/// Pending approvals with the exact action and its risk; approve or deny, each signed by the core
/// with the device key. A high-risk approval needs the confirmation the UI asks for
/// (`ApprovalItem.needsBiometric`); the model refuses to approve it without.
@MainActor
public final class ApprovalsModel {
    /// Shown when a high-risk approval was attempted without the biometric confirmation.
    public nonisolated static let biometricNeeded =
        "this is a high-risk action: confirm with Face ID, Touch ID or your passcode first"

    private let core: ModelCore<ApprovalsState>

    /// A model on `session`.
    public init(session: PhoneSession) {
        core = ModelCore(session: session) { s, busy, error in
            ApprovalsState(
                pending: s.pendingApprovals.map {
                    ApprovalItem(
                        request: $0,
                        risk: $0.risk,
                        needsBiometric: ApprovalsModel.needsBiometric($0),
                        canApprove: $0.verified,
                        deciding: busy.contains($0.id)
                    )
                },
                resolved: s.resolvedApprovals,
                error: error
            )
        }
    }

    /// The screen's state now.
    public var state: ApprovalsState { core.cell.value }
    /// The state now and after each change (the stream keeps the model alive while it is read).
    public func states() -> AsyncStream<ApprovalsState> { core.cell.values(keepingAlive: self) }
    /// The last error, as the core worded it; `nil` when the last action succeeded.
    public var error: String? { core.error }
    /// Hides the error line.
    public func dismissError() { core.dismissError() }

    /// Approves request `id`. `biometricConfirmed` says the device owner passed the Face ID /
    /// Touch ID / passcode prompt; a high-risk request is refused without it (`false`, with
    /// `biometricNeeded` as the error). `true` once the signed decision is saved (sent to the
    /// desktop as soon as it is reachable), `nil` with the core's refusal in `error`.
    @discardableResult
    public func approve(_ id: String, biometricConfirmed: Bool = false) async -> Bool? {
        let core = self.core
        let session = core.session
        return await core.act(id) {
            let request = session.snapshot.pendingApprovals.first { $0.id == id }
            if let request, ApprovalsModel.needsBiometric(request), !biometricConfirmed {
                core.fail(ApprovalsModel.biometricNeeded)
                return false
            }
            try await session.phone.approve(approvalId: id)
            return true
        }
    }

    /// Denies request `id` (no confirmation needed: denying is always safe). `true` once saved,
    /// `nil` with the core's refusal in `error`.
    @discardableResult
    public func deny(_ id: String) async -> Bool? {
        let phone = core.session.phone
        return await core.act(id) {
            try await phone.deny(approvalId: id)
            return true
        }
    }

    /// High-risk requests need the device owner's confirmation.
    public nonisolated static func needsBiometric(_ request: ApprovalView) -> Bool {
        request.risk == .high
    }
}
