package dev.deskhand.app.push

import android.app.Activity
import android.content.Context
import android.net.Uri
import deskhand.mobile.ApiException
import deskhand.mobile.PhoneSnapshot
import dev.deskhand.app.DeskhandApp
import dev.deskhand.app.model.PhoneSession
import dev.deskhand.app.model.WakeUpNotifier
import dev.deskhand.app.model.userMessage
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import org.unifiedpush.android.connector.UnifiedPush

/** Where wake-ups stand, as the devices screen shows it. */
data class WakeUpStatus(
    /** A push endpoint is written in the workspace: the desktop can wake this phone. */
    val on: Boolean,
    /** One line for people: the distributor's host, or what is missing. */
    val text: String,
)

/**
 * Wake-up pushes: the UnifiedPush registration, the subscription the core writes into this
 * phone's entry of the workspace (endpoint + RFC 8291 keys, kept here too so that it is
 * written again after pairing or a restart), and what the [notifier] already notified
 * (persisted, so that a restarted process does not notify again).
 */
class WakeUps(private val app: DeskhandApp) {
    private val prefs = app.getSharedPreferences("wake-ups", Context.MODE_PRIVATE)
    private val statusFlow = MutableStateFlow(initialStatus())
    private var applying: Job? = null

    /** Decides what to notify; remembers it across processes. */
    val notifier = WakeUpNotifier(prefs.getStringSet(KEY_SEEN, null)?.toSet() ?: emptySet())

    /** Where wake-ups stand. */
    val status: StateFlow<WakeUpStatus> = statusFlow.asStateFlow()

    /**
     * Turns wake-ups on from [activity]: uses the distributor chosen before, else the user's
     * default one (the system may ask which), then registers. Without any distributor installed
     * the status says to install one (ntfy, for instance).
     */
    fun enable(activity: Activity) {
        // The callback may come later, from the connector's LinkActivity, which keeps it in a
        // static field: it holds the application, not the activity (gone by then if rotated).
        val context = activity.applicationContext
        UnifiedPush.tryUseCurrentOrDefaultDistributor(activity) { ok ->
            if (ok) {
                statusFlow.value = WakeUpStatus(false, "registering with the push distributor…")
                UnifiedPush.register(context, messageForDistributor = "Deskhand")
            } else {
                statusFlow.value = WakeUpStatus(
                    false,
                    "no UnifiedPush distributor: install one (for instance the ntfy app) to be woken for approvals",
                )
            }
        }
    }

    /** On each start: registers again with the distributor chosen before, if any (it may have lost us). */
    fun refresh(context: Context) {
        if (UnifiedPush.getAckDistributor(context) != null) {
            UnifiedPush.register(context, messageForDistributor = "Deskhand")
        }
    }

    /** Turns wake-ups off: unregisters and clears the subscription from the workspace. */
    fun disable(context: Context) {
        UnifiedPush.unregister(context)
        onUnregistered()
    }

    /** The distributor gave an endpoint and the keys: keep them and write them with the core. */
    fun onNewEndpoint(url: String, p256dh: String, auth: String) {
        prefs.edit().putString(KEY_ENDPOINT, url).putString(KEY_P256DH, p256dh).putString(KEY_AUTH, auth).apply()
        applySubscription()
    }

    /** The distributor dropped this app: clear the subscription so that the desktop stops pushing. */
    fun onUnregistered() {
        prefs.edit().remove(KEY_ENDPOINT).remove(KEY_P256DH).remove(KEY_AUTH).apply()
        applySubscription()
    }

    /** Registration failed; [reason] for people. */
    fun onFailed(reason: String) {
        statusFlow.value = WakeUpStatus(false, reason)
    }

    /**
     * Writes the kept subscription (or its absence) with the core once the phone holds a
     * workspace: at once if it does, else after pairing. The core writes nothing when the
     * workspace already says the same.
     */
    @Synchronized
    fun applySubscription() {
        applying?.cancel()
        applying = app.scope.launch {
            val session = app.openPhone() ?: return@launch
            session.snapshot.first { it.workspaceReceived }
            val endpoint = prefs.getString(KEY_ENDPOINT, null)
            val p256dh = prefs.getString(KEY_P256DH, null)
            val auth = prefs.getString(KEY_AUTH, null)
            statusFlow.value = try {
                if (endpoint != null && p256dh != null && auth != null) {
                    session.phone.setPushSubscription(endpoint, p256dh, auth)
                    WakeUpStatus(true, "on, through ${Uri.parse(endpoint).host ?: "the distributor"}")
                } else {
                    session.phone.clearPushSubscription()
                    WakeUpStatus(false, "off")
                }
            } catch (e: ApiException) {
                WakeUpStatus(false, "not written: ${e.userMessage()}")
            }
        }
    }

    /** The app is on screen: what [snapshot] holds counts as seen. */
    fun markSeen(snapshot: PhoneSnapshot) {
        val before = notifier.remembered
        LocalNotifications.cancel(app, notifier.outdated(snapshot))
        notifier.markSeen(snapshot)
        persist(before)
    }

    /**
     * After a wake-up sync: posts what is new in the phone's replica (nothing while on screen)
     * and removes approval notifications whose request no longer waits.
     */
    fun notifyFrom(session: PhoneSession) {
        val snapshot = try {
            session.phone.snapshot()
        } catch (e: ApiException) {
            return
        }
        if (app.inForeground) {
            markSeen(snapshot)
            return
        }
        val before = notifier.remembered
        LocalNotifications.cancel(app, notifier.outdated(snapshot))
        LocalNotifications.post(app, notifier.notices(snapshot))
        persist(before)
    }

    private fun persist(before: Set<String>) {
        val now = notifier.remembered
        if (now != before) prefs.edit().putStringSet(KEY_SEEN, now).apply()
    }

    private fun initialStatus(): WakeUpStatus = when {
        prefs.getString(KEY_ENDPOINT, null) != null -> WakeUpStatus(false, "writing the subscription…")
        UnifiedPush.getAckDistributor(app) != null -> WakeUpStatus(false, "registering with the push distributor…")
        else -> WakeUpStatus(false, "off")
    }

    private companion object {
        const val KEY_SEEN = "notified"
        const val KEY_ENDPOINT = "endpoint"
        const val KEY_P256DH = "p256dh"
        const val KEY_AUTH = "auth"
    }
}
