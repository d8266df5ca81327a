package dev.deskhand.app.push

import android.Manifest
import android.annotation.SuppressLint
import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.content.Context
import android.content.Intent
import android.content.pm.PackageManager
import android.os.Build
import androidx.core.app.NotificationCompat
import androidx.core.app.NotificationManagerCompat
import androidx.core.content.ContextCompat
import dev.deskhand.app.MainActivity
import dev.deskhand.app.model.Notice
import dev.deskhand.app.model.NoticeChannel

/**
 * The app's notification channels and how a [Notice] (decided by the plain-Kotlin
 * [dev.deskhand.app.model.WakeUpNotifier] from the synced document) becomes an Android
 * notification that opens its task.
 */
object LocalNotifications {
    /** Approval requests: high importance (heads-up), they expire. */
    const val CHANNEL_APPROVALS = "approvals"

    /** Finished tasks: default importance. */
    const val CHANNEL_TASKS = "tasks"

    /** The silent notification Android shows while a wake-up sync runs (Android 11 and older). */
    const val CHANNEL_SYNC = "sync"

    /** The id of [syncNotification]. */
    const val SYNC_NOTIFICATION_ID = 1

    /** Creates the channels (idempotent; Android keeps the user's settings of existing ones). */
    fun createChannels(context: Context) {
        val manager = context.getSystemService(NotificationManager::class.java)
        manager.createNotificationChannels(
            listOf(
                NotificationChannel(CHANNEL_APPROVALS, "Approvals", NotificationManager.IMPORTANCE_HIGH).apply {
                    description = "An action on your desktop waits for your approval"
                },
                NotificationChannel(CHANNEL_TASKS, "Finished tasks", NotificationManager.IMPORTANCE_DEFAULT).apply {
                    description = "A task you gave your desktop is done, failed or was cancelled"
                },
                NotificationChannel(CHANNEL_SYNC, "Syncing", NotificationManager.IMPORTANCE_MIN).apply {
                    description = "Shown while the phone syncs with the desktop after a wake-up"
                },
            ),
        )
    }

    /** Whether the app may post notifications (the user allowed them; Android 13+ asks). */
    fun allowed(context: Context): Boolean =
        (
            Build.VERSION.SDK_INT < Build.VERSION_CODES.TIRAMISU ||
                ContextCompat.checkSelfPermission(context, Manifest.permission.POST_NOTIFICATIONS) ==
                PackageManager.PERMISSION_GRANTED
            ) && NotificationManagerCompat.from(context).areNotificationsEnabled()

    /** Posts [notices]; nothing when notifications are not allowed. */
    @SuppressLint("MissingPermission") // allowed() checks POST_NOTIFICATIONS first
    fun post(context: Context, notices: List<Notice>) {
        if (notices.isEmpty() || !allowed(context)) return
        val manager = NotificationManagerCompat.from(context)
        for (n in notices) {
            val open = Intent(context, MainActivity::class.java)
                .setFlags(Intent.FLAG_ACTIVITY_NEW_TASK or Intent.FLAG_ACTIVITY_SINGLE_TOP)
                .putExtra(MainActivity.EXTRA_TASK_ID, n.taskId)
            val pending = PendingIntent.getActivity(
                context,
                n.notificationId,
                open,
                PendingIntent.FLAG_IMMUTABLE or PendingIntent.FLAG_UPDATE_CURRENT,
            )
            val approval = n.channel == NoticeChannel.APPROVALS
            val notification = NotificationCompat.Builder(context, if (approval) CHANNEL_APPROVALS else CHANNEL_TASKS)
                .setSmallIcon(if (approval) android.R.drawable.ic_dialog_alert else android.R.drawable.stat_sys_download_done)
                .setContentTitle(n.title)
                .setContentText(n.text)
                .setStyle(NotificationCompat.BigTextStyle().bigText(n.detail ?: n.text))
                .setPriority(if (approval) NotificationCompat.PRIORITY_HIGH else NotificationCompat.PRIORITY_DEFAULT)
                .setCategory(if (approval) NotificationCompat.CATEGORY_REMINDER else NotificationCompat.CATEGORY_STATUS)
                // The action's text stays off the lock screen.
                .setVisibility(NotificationCompat.VISIBILITY_PRIVATE)
                .setContentIntent(pending)
                .setAutoCancel(true)
                .build()
            try {
                manager.notify(n.notificationId, notification)
            } catch (e: SecurityException) {
                // The permission was withdrawn between the check and the call.
                return
            }
        }
    }

    /** Removes the notifications [ids] (requests decided or resolved meanwhile). */
    fun cancel(context: Context, ids: List<Int>) {
        if (ids.isEmpty()) return
        val manager = NotificationManagerCompat.from(context)
        ids.forEach { manager.cancel(it) }
    }

    /** The silent notification of a running wake-up sync. */
    fun syncNotification(context: Context): Notification =
        NotificationCompat.Builder(context, CHANNEL_SYNC)
            .setSmallIcon(android.R.drawable.stat_notify_sync)
            .setContentTitle("Syncing with your desktop")
            .setPriority(NotificationCompat.PRIORITY_MIN)
            .setOngoing(true)
            .build()
}
