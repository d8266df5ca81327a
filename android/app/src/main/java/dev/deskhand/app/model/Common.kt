package dev.deskhand.app.model

import deskhand.mobile.ApiException
import deskhand.mobile.DesktopHealth
import deskhand.mobile.ExecutorState
import deskhand.mobile.PhoneSnapshot
import deskhand.mobile.Presence
import kotlinx.coroutines.Deferred
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.SharingStarted
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.combine
import kotlinx.coroutines.flow.stateIn
import kotlinx.coroutines.flow.update

/**
 * The core's own words for an error, as the UI shows them. The generated exceptions carry the
 * core's text in `reason`; the variants without one get the core's fixed sentence.
 */
fun ApiException.userMessage(): String = when (this) {
    is ApiException.NotPaired -> "this phone is not paired with a desktop"
    is ApiException.NotSynced -> "the workspace has not been received from the desktop yet"
    is ApiException.Stopped -> "syncing is stopped"
    is ApiException.Closed -> "the phone is shut down"
    is ApiException.AlreadyPaired -> reason
    is ApiException.Refused -> reason
    is ApiException.Unreachable -> reason
    is ApiException.Invalid -> reason
    is ApiException.NotFound -> reason
    is ApiException.AlreadyDecided -> reason
    is ApiException.Expired -> reason
    is ApiException.Key -> reason
    is ApiException.Storage -> reason
    is ApiException.Unsent -> reason
    is ApiException.Internal -> reason
}

/** Whether and since when the desktop is reachable, as a screen shows it. */
sealed class DesktopPresence {
    /** No desktop: pair first. */
    object NotPaired : DesktopPresence()

    /** Paired but never reached since. */
    data class NeverReached(
        /** Why the last attempt failed, if it did. */
        val lastError: String?,
    ) : DesktopPresence()

    /** Connected now. */
    data class Online(
        /** Since when (desktop clock, unix ms). */
        val sinceMs: Long,
    ) : DesktopPresence()

    /** Not connected now. */
    data class Offline(
        /** When it was last connected (desktop clock, unix ms). */
        val lastSeenMs: Long,
        /** Why the last attempt failed, if it did. */
        val lastError: String?,
    ) : DesktopPresence()
}

/** The desktop's presence in [s]. */
fun presenceOf(s: PhoneSnapshot): DesktopPresence {
    val d = s.desktop ?: return DesktopPresence.NotPaired
    return when (val p = d.presence) {
        is Presence.Connected -> DesktopPresence.Online(p.sinceMs)
        is Presence.LastSeen -> DesktopPresence.Offline(p.atMs, d.lastError)
        is Presence.Never -> DesktopPresence.NeverReached(d.lastError)
    }
}

/** What the desktop last said about itself, and whether that is too old to trust. */
data class DesktopHealthView(
    /** What its executor is doing. */
    val executor: ExecutorState,
    /** Its operating system. */
    val os: String,
    /** How old its last heartbeat is (ms). */
    val heartbeatAgeMs: Long,
    /** The heartbeat is older than [STALE_HEARTBEAT_MS]: the desktop may be asleep or hung. */
    val stale: Boolean,
) {
    /** Thresholds. */
    companion object {
        /** A heartbeat older than this is shown as stale. */
        const val STALE_HEARTBEAT_MS: Long = 5 * 60 * 1000

        /** From the core's record. */
        fun of(h: DesktopHealth): DesktopHealthView =
            DesktopHealthView(h.executor, h.os, h.heartbeatAgeMs, h.heartbeatAgeMs > STALE_HEARTBEAT_MS)
    }
}

/**
 * What every view model shares: the session, an error line (the core's message of the last
 * failed action, cleared by the next one that succeeds or by [dismissError]), and the set of
 * actions in flight (keys chosen by each model) so that buttons can show progress.
 */
abstract class Model(
    /** The phone this model shows. */
    protected val session: PhoneSession,
) {
    private val errorFlow = MutableStateFlow<String?>(null)
    private val busyFlow = MutableStateFlow<Set<String>>(emptySet())

    /** The last error, as the core worded it; `null` when the last action succeeded. */
    val error: StateFlow<String?> = errorFlow.asStateFlow()

    /** Keys of the actions running now. */
    val busy: StateFlow<Set<String>> = busyFlow.asStateFlow()

    /** Hides the error line. */
    fun dismissError() {
        errorFlow.value = null
    }

    /** Shows [message] as the error line (for refusals the model itself decides). */
    protected fun fail(message: String) {
        errorFlow.value = message
    }

    /**
     * Runs [block] in the session's scope with [key] marked busy, clearing [error] first; its
     * result, or `null` with the core's message in [error] when the core refused. [error] is set
     * before the result is; the derived states follow it asynchronously.
     */
    protected fun <T> act(key: String, block: suspend () -> T): Deferred<T?> = session.scope.async {
        busyFlow.update { it + key }
        errorFlow.value = null
        try {
            block()
        } catch (e: ApiException) {
            errorFlow.value = e.userMessage()
            null
        } finally {
            busyFlow.update { it - key }
        }
    }

    /** A state derived from the snapshot, the busy set and the error, kept up to date. */
    protected fun <T> derive(f: (PhoneSnapshot, Set<String>, String?) -> T): StateFlow<T> =
        combine(session.snapshot, busyFlow, errorFlow, f).stateIn(
            session.scope,
            SharingStarted.Eagerly,
            f(session.snapshot.value, busyFlow.value, errorFlow.value),
        )

    /** Like [derive], with one more state of the model's own ([extra]). */
    protected fun <X, T> derive(extra: StateFlow<X>, f: (PhoneSnapshot, Set<String>, String?, X) -> T): StateFlow<T> =
        combine(session.snapshot, busyFlow, errorFlow, extra, f).stateIn(
            session.scope,
            SharingStarted.Eagerly,
            f(session.snapshot.value, busyFlow.value, errorFlow.value, extra.value),
        )
}
