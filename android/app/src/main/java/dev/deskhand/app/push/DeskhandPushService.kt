package dev.deskhand.app.push

import android.util.Log
import dev.deskhand.app.DeskhandApp
import org.unifiedpush.android.connector.FailedReason
import org.unifiedpush.android.connector.PushService
import org.unifiedpush.android.connector.data.PushEndpoint
import org.unifiedpush.android.connector.data.PushMessage

/**
 * UnifiedPush events (connector 3.x: it makes and keeps the RFC 8291 keys and decrypts each
 * message before [onMessage]). Declared in the manifest, not exported, for the action
 * `org.unifiedpush.android.connector.PUSH_EVENT`.
 *
 * A message's content is never read: the desktop sends only `{"v":1,"sync":true}`, and anyone
 * who learns the endpoint could push anything. A push only means "sync now"; what is shown
 * comes from the synced document.
 */
class DeskhandPushService : PushService() {
    private val app: DeskhandApp get() = application as DeskhandApp

    override fun onNewEndpoint(endpoint: PushEndpoint, instance: String) {
        val keys = endpoint.pubKeySet
        if (keys == null) {
            // Without the keys the desktop cannot encrypt (it never sends in the clear).
            app.wakeUps.onFailed("the push distributor gave no Web Push keys")
            return
        }
        app.wakeUps.onNewEndpoint(endpoint.url, keys.pubKey, keys.auth)
    }

    override fun onMessage(message: PushMessage, instance: String) {
        if (!message.decrypted) Log.w(TAG, "a push that did not decrypt: syncing anyway, content ignored")
        WakeUpWorker.enqueue(applicationContext)
    }

    override fun onRegistrationFailed(reason: FailedReason, instance: String) {
        app.wakeUps.onFailed(
            when (reason) {
                FailedReason.NETWORK -> "the push distributor has no network; it retries when it is back"
                FailedReason.ACTION_REQUIRED -> "the push distributor needs you: open it"
                FailedReason.VAPID_REQUIRED -> "the push distributor requires a VAPID key, which Deskhand does not use"
                FailedReason.INTERNAL_ERROR -> "the push distributor failed to register Deskhand"
            },
        )
    }

    override fun onUnregistered(instance: String) {
        app.wakeUps.onUnregistered()
    }

    private companion object {
        const val TAG = "deskhand-push"
    }
}
