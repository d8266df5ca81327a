package dev.deskhand.app.model

import deskhand.mobile.ApiException
import deskhand.mobile.DeskhandPhone
import deskhand.mobile.KeyProvider
import deskhand.mobile.PhoneListener
import deskhand.mobile.PhoneSettings
import deskhand.mobile.PhoneSnapshot
import deskhand.mobile.SubscriptionHandle
import deskhand.mobile.openPhone
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch

/**
 * The phone of the app: the Rust core (`DeskhandPhone`) opened once, its live snapshot as a
 * [StateFlow], and the lifecycle hooks the UI calls. Every view model of the app shares one.
 *
 * No Android imports: the UI layer hands in the [KeyProvider] (Android Keystore in the app, a
 * file in the JVM tests) and the [CoroutineScope] the models run their actions in (the app's
 * `viewModelScope` or an application scope).
 */
class PhoneSession private constructor(
    /** The generated binding of the phone; view models call it, the UI should not. */
    val phone: DeskhandPhone,
    /** Where the models launch their actions and derive their states. */
    val scope: CoroutineScope,
) {
    private val current = MutableStateFlow(phone.snapshot())

    /** The latest state of the phone: what the core's listener last delivered. */
    val snapshot: StateFlow<PhoneSnapshot> = current.asStateFlow()

    // The core calls the listener on one of its threads; a StateFlow is safe to set from any.
    private val subscription: SubscriptionHandle = phone.subscribe(object : PhoneListener {
        override fun onUpdate(snapshot: PhoneSnapshot) {
            current.value = snapshot
        }
    })

    /** This phone's device id. */
    val deviceId: String get() = phone.deviceId()

    /**
     * The app came to the foreground: background sync on, reconnect now, and sync. The returned
     * job ends when the phone and the desktop hold the same changes, or when [SYNC_TIMEOUT_MS]
     * passed or the desktop is unreachable (presence then says so).
     */
    fun onForeground(): Job {
        phone.start()
        return scope.launch {
            try {
                phone.sync(SYNC_TIMEOUT_MS.toULong())
            } catch (e: ApiException) {
                // Unreachable, not paired, …: the snapshot's presence and last error show it.
            }
        }
    }

    /** The app went to the background: background sync off; writes still go to local storage. */
    fun onBackground() {
        phone.stop()
    }

    /** The network changed (Wi-Fi, mobile data, VPN): retry the desktop now, not after backoff. */
    fun onNetworkChanged() {
        phone.start()
    }

    /**
     * One sync for a wake-up push (or any background job): sync on, wait until the phone and
     * the desktop hold the same changes or [timeoutMs] passed, then sync off again unless
     * [keepRunning] says so when it ends (the app came to the foreground meanwhile). `null` on
     * success, else the core's words for why not (unreachable, not paired, …); never throws the
     * core's errors.
     */
    suspend fun syncOnce(timeoutMs: Long = SYNC_TIMEOUT_MS, keepRunning: () -> Boolean): String? {
        phone.start()
        return try {
            phone.sync(timeoutMs.toULong())
            null
        } catch (e: ApiException) {
            e.userMessage()
        } finally {
            if (!keepRunning()) phone.stop()
        }
    }

    /** Ends the subscription and closes the core (its database and connection). */
    suspend fun close() {
        subscription.cancel()
        subscription.close()
        phone.shutdown()
        phone.close()
    }

    /** How to open one. */
    companion object {
        /** How long [onForeground] waits for a sync. */
        const val SYNC_TIMEOUT_MS: Long = 15_000

        /**
         * Opens the phone's core with the device key from [keyProvider]; it syncs with its
         * desktop in the background at once if paired. Fails with the core's [ApiException]
         * (storage, key).
         */
        suspend fun open(
            settings: PhoneSettings,
            keyProvider: KeyProvider,
            scope: CoroutineScope,
        ): PhoneSession = PhoneSession(openPhone(settings, keyProvider), scope)
    }
}
