package dev.deskhand.app.model

import kotlinx.coroutines.Deferred
import kotlinx.coroutines.flow.StateFlow

/** What the pairing screen shows. */
data class PairingState(
    /** A desktop is this phone's home. */
    val paired: Boolean,
    /** Its name, once paired. */
    val desktopName: String?,
    /** The workspace has arrived: the conversation can be shown and written. */
    val ready: Boolean,
    /** A pairing is running. */
    val pairing: Boolean,
    /** Why the last pairing failed, in the core's words (a used or expired code, a typo, …). */
    val error: String?,
)

/**
 * Pairs this phone with a desktop from the text of its QR code, scanned by the camera or pasted.
 * The core checks the code; its refusals are shown as it words them.
 */
class PairingModel(session: PhoneSession) : Model(session) {
    /** The screen's state. */
    val state: StateFlow<PairingState> = derive { s, busy, error ->
        PairingState(
            paired = s.desktop != null,
            desktopName = s.desktop?.name,
            ready = s.workspaceReceived,
            pairing = PAIR in busy,
            error = error,
        )
    }

    /**
     * Pairs with the desktop whose code is [code] (`deskhand://pair?…`; surrounding whitespace,
     * as pasting leaves it, is ignored), then syncs once to receive the workspace. The desktop's
     * name, or `null` with [error] set.
     */
    fun pair(code: String): Deferred<String?> = act(PAIR) {
        val desktop = session.phone.pair(code.trim())
        session.phone.start()
        try {
            session.phone.sync(PhoneSession.SYNC_TIMEOUT_MS.toULong())
        } catch (e: deskhand.mobile.ApiException.Unreachable) {
            // Paired; the workspace follows in the background when the desktop answers again.
        }
        desktop.name
    }

    private companion object {
        const val PAIR = "pair"
    }
}
