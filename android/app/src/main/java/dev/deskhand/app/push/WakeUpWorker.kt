package dev.deskhand.app.push

import android.content.Context
import android.util.Log
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingWorkPolicy
import androidx.work.ForegroundInfo
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.OutOfQuotaPolicy
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import dev.deskhand.app.DeskhandApp
import dev.deskhand.app.model.PhoneSession

/**
 * What a wake-up push starts: one sync with the desktop over iroh (at most
 * [PhoneSession.SYNC_TIMEOUT_MS]), then local notifications built from the synced document
 * ([WakeUps.notifyFrom]). Expedited work, so that it runs at once even in Doze.
 */
class WakeUpWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val app = applicationContext as DeskhandApp
        val session = app.openPhone() ?: return Result.success()
        app.holdMulticast(true)
        val failed = try {
            session.syncOnce(PhoneSession.SYNC_TIMEOUT_MS) { app.inForeground }
        } finally {
            app.holdMulticast(false)
        }
        if (failed != null) Log.i(TAG, "wake-up sync incomplete: $failed")
        // Even after a partial sync: whatever did arrive is worth a notification.
        app.wakeUps.notifyFrom(session)
        return Result.success()
    }

    // Expedited work runs as a foreground service before Android 12, which needs a notification.
    override suspend fun getForegroundInfo(): ForegroundInfo =
        ForegroundInfo(LocalNotifications.SYNC_NOTIFICATION_ID, LocalNotifications.syncNotification(applicationContext))

    /** Scheduling. */
    companion object {
        private const val TAG = "deskhand-wakeup"
        private const val WORK_NAME = "deskhand-wake-up"

        /**
         * Schedules one wake-up sync. A push that arrives while one runs appends another, so
         * that changes written after the running sync's start are fetched too.
         */
        fun enqueue(context: Context) {
            val request = OneTimeWorkRequestBuilder<WakeUpWorker>()
                .setExpedited(OutOfQuotaPolicy.RUN_AS_NON_EXPEDITED_WORK_REQUEST)
                .setConstraints(Constraints.Builder().setRequiredNetworkType(NetworkType.CONNECTED).build())
                .build()
            WorkManager.getInstance(context).enqueueUniqueWork(WORK_NAME, ExistingWorkPolicy.APPEND_OR_REPLACE, request)
        }
    }
}
