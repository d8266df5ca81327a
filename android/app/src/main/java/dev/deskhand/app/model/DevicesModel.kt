package dev.deskhand.app.model

import deskhand.mobile.ApiException
import kotlinx.coroutines.Deferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** What the devices screen shows. */
data class DevicesState(
    /** This phone's device id. */
    val deviceId: String,
    /** This phone's name, as the desktop shows it. */
    val deviceName: String,
    /** The home desktop's id, once paired. */
    val desktopId: String?,
    /** Its name. */
    val desktopName: String?,
    /** Whether it is reachable. */
    val presence: DesktopPresence,
    /** Where the phone dials it (`ip:port`, newest first). */
    val desktopAddrs: List<String>,
    /** How many of this phone's writes the desktop does not hold yet. */
    val unsent: Long,
    /**
     * Every device paired with the desktop, this phone included, oldest pairing first, revoked
     * ones too (the workspace's display copy; the desktop's registry decides).
     */
    val pairedDevices: List<PairedDevice>,
    /** Forgetting is running. */
    val forgetting: Boolean,
    /** Why the last action failed, in the core's words. */
    val error: String?,
)

/** A device paired with the desktop. Times are unix milliseconds in the desktop's clock. */
data class PairedDevice(
    val id: String,
    val name: String,
    /** `android`, `ios`, `terminal`, … */
    val platform: String,
    val pairedAtMs: Long,
    /** When the desktop revoked it; `null` while it may sync. */
    val revokedAtMs: Long?,
    /** It is this phone. */
    val thisDevice: Boolean,
)

/**
 * This phone and its desktop: presence, what is not sent yet, and "forget this desktop" (refused
 * by the core while writes are unsent, unless the user chooses to drop them).
 */
class DevicesModel(session: PhoneSession) : Model(session) {
    private val unsentFlow = MutableStateFlow(0L)

    init {
        // The count is a storage read: off the listener's thread and off the UI's.
        session.scope.launch {
            session.snapshot.collect { unsentFlow.value = countUnsent() }
        }
    }

    /** The screen's state. */
    val state: StateFlow<DevicesState> = derive(unsentFlow) { s, busy, error, unsent ->
        DevicesState(
            deviceId = s.deviceId,
            deviceName = s.deviceName,
            desktopId = s.desktop?.id,
            desktopName = s.desktop?.name,
            presence = presenceOf(s),
            desktopAddrs = s.desktop?.addrs ?: emptyList(),
            unsent = unsent,
            pairedDevices = s.devices.map {
                PairedDevice(it.id, it.name, it.platform, it.pairedAtMs, it.revokedAtMs, it.thisDevice)
            },
            forgetting = FORGET in busy,
            error = error,
        )
    }

    /** The unsent count alone, updated after each change of the phone. */
    val unsent: StateFlow<Long> = unsentFlow.asStateFlow()

    /**
     * Forgets the desktop so that the phone can pair with another. Refused while writes are
     * unsent (the core's message says what would be lost) unless [dropUnsent]. `true` when done.
     */
    fun forgetDesktop(dropUnsent: Boolean = false): Deferred<Boolean?> = act(FORGET) {
        if (dropUnsent) session.phone.forgetDesktopDroppingUnsent() else session.phone.forgetDesktop()
        unsentFlow.value = countUnsent()
        true
    }

    private suspend fun countUnsent(): Long = withContext(Dispatchers.IO) {
        try {
            session.phone.unsentCount().toLong()
        } catch (e: ApiException) {
            0L
        }
    }

    private companion object {
        const val FORGET = "forget"
    }
}
