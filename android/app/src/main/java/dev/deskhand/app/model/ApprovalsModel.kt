package dev.deskhand.app.model

import deskhand.mobile.ApprovalView
import deskhand.mobile.Risk
import kotlinx.coroutines.Deferred
import kotlinx.coroutines.flow.StateFlow

/** A pending approval request as the list shows it. */
data class ApprovalItem(
    /** The request: `tool` and `args` are the exact action, `summary` its line for people. */
    val request: ApprovalView,
    /** How much it can change. */
    val risk: Risk,
    /** Approving needs the device's biometric confirmation first (high risk). */
    val needsBiometric: Boolean,
    /** Its action hash matches what it shows; an unverified request cannot be approved. */
    val canApprove: Boolean,
    /** A decision on it is being signed and saved. */
    val deciding: Boolean,
)

/** What the approvals screen shows. */
data class ApprovalsState(
    /** Requests waiting for a decision, oldest first. */
    val pending: List<ApprovalItem>,
    /** Resolved or expired requests, oldest first. */
    val resolved: List<ApprovalView>,
    /** Why the last decision failed (the core's words, or the missing biometric confirmation). */
    val error: String?,
)

/**
 * Pending approvals with the exact action and its risk; approve or deny, each signed by the
 * core with the device key. A high-risk approval needs the biometric confirmation the UI asks
 * for ([ApprovalItem.needsBiometric]); the model refuses to approve it without.
 */
class ApprovalsModel(session: PhoneSession) : Model(session) {
    /** The screen's state. */
    val state: StateFlow<ApprovalsState> = derive { s, busy, error ->
        ApprovalsState(
            pending = s.pendingApprovals.map {
                ApprovalItem(it, it.risk, needsBiometric(it), it.verified, it.id in busy)
            },
            resolved = s.resolvedApprovals,
            error = error,
        )
    }

    /**
     * Approves request [id]. [biometricConfirmed] says the user passed the biometric prompt; a
     * high-risk request is refused without it. `true` once the signed decision is saved (sent
     * to the desktop as soon as it is reachable).
     */
    fun approve(id: String, biometricConfirmed: Boolean = false): Deferred<Boolean?> = act(id) {
        val request = session.snapshot.value.pendingApprovals.firstOrNull { it.id == id }
        if (request != null && needsBiometric(request) && !biometricConfirmed) {
            fail(BIOMETRIC_NEEDED)
            false
        } else {
            session.phone.approve(id)
            true
        }
    }

    /** Denies request [id] (no confirmation needed: denying is always safe). */
    fun deny(id: String): Deferred<Boolean?> = act(id) {
        session.phone.deny(id)
        true
    }

    /** Messages and rules of this model. */
    companion object {
        /** Shown when a high-risk approval was attempted without the biometric confirmation. */
        const val BIOMETRIC_NEEDED = "this is a high-risk action: confirm with your fingerprint or face first"

        /** High-risk requests need the biometric confirmation. */
        fun needsBiometric(request: ApprovalView): Boolean = request.risk == Risk.HIGH
    }
}
