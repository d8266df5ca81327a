package dev.deskhand.app.model

import deskhand.mobile.ApprovalState
import deskhand.mobile.PhoneSnapshot
import deskhand.mobile.Risk
import deskhand.mobile.TaskStatus

/** Where a local notification goes: each is one Android notification channel of its own. */
enum class NoticeChannel {
    /** Approval requests waiting for this phone (high importance: they expire). */
    APPROVALS,

    /** This phone's tasks that finished. */
    TASKS,
}

/**
 * A local notification, built from the synced document (never from a push's payload, which
 * says only "sync now").
 */
data class Notice(
    /**
     * What it is about, unique and stable: `approval:<approval id>` or `task:<task id>`. The
     * notifier remembers these so that nothing is notified twice.
     */
    val key: String,
    /** Its channel. */
    val channel: NoticeChannel,
    /** First line: `Approval needed · high risk`, `Task done`, `Task failed`, … */
    val title: String,
    /** Second line: the request's summary, or the task's prompt. */
    val text: String,
    /** Longer text for the expanded notification (the exact action, or the result), if any. */
    val detail: String?,
    /** The task to open when it is tapped (an approval's task, or the task itself). */
    val taskId: String,
) {
    /** A number for the notification manager derived from [key] (same key, same number). */
    val notificationId: Int get() = key.hashCode()
}

/**
 * Decides what to notify after a wake-up sync, and remembers what it already did, so that the
 * same approval request or finished task is never notified twice.
 *
 * - Approval requests waiting for a decision that this phone has not made and that are not too
 *   late: one [NoticeChannel.APPROVALS] notice each ("Approval needed · <risk> risk", the
 *   request's summary).
 * - This phone's own tasks that reached a final state (done, failed, cancelled, interrupted):
 *   one [NoticeChannel.TASKS] notice each ("Task done", the prompt).
 *
 * While the app is on screen the user sees everything: [markSeen] then records the current
 * state as shown, so that the next wake-up notifies only what happened while it was closed (and
 * pairing with a desktop that already has finished tasks notifies none of them).
 *
 * [remembered] is what the app persists between processes (a few keys per open item: keys of
 * requests no longer pending and of tasks no longer in the document are dropped). Thread-safe.
 * No Android imports: tested on the JVM.
 */
class WakeUpNotifier(remembered: Set<String> = emptySet()) {
    private val lock = Any()
    private var seen: Set<String> = remembered.toSet()

    /** The keys already notified or seen, to persist (and hand to the next notifier). */
    val remembered: Set<String> get() = synchronized(lock) { seen }

    /**
     * The notices [snapshot] calls for that were not given before, in document order (approvals
     * first); they count as given from now on. Nothing while the workspace has not arrived (an
     * empty replica proves nothing about what was seen).
     */
    fun notices(snapshot: PhoneSnapshot): List<Notice> = synchronized(lock) {
        if (!snapshot.workspaceReceived) return emptyList()
        val candidates = candidates(snapshot)
        val fresh = candidates.filter { it.key !in seen }
        seen = retained(snapshot) + fresh.map { it.key }
        fresh
    }

    /**
     * Notification ids ([Notice.notificationId]) of approval notices given (or seen) before whose
     * request no longer waits for this phone: decided here or on another phone, resolved,
     * expired. The app removes those notifications. Call it before [notices] or [markSeen],
     * which forget the keys of requests no longer pending.
     */
    fun outdated(snapshot: PhoneSnapshot): List<Int> = synchronized(lock) {
        if (!snapshot.workspaceReceived) return emptyList()
        val waiting = candidates(snapshot).filter { it.channel == NoticeChannel.APPROVALS }.map { it.key }.toSet()
        seen.filter { it.startsWith(APPROVAL_PREFIX) && it !in waiting }.map { it.hashCode() }
    }

    /** Records everything [snapshot] would notify as already shown (the app is on screen). */
    fun markSeen(snapshot: PhoneSnapshot) {
        synchronized(lock) {
            if (!snapshot.workspaceReceived) return
            seen = retained(snapshot) + candidates(snapshot).map { it.key }
        }
    }

    // Keys still worth remembering: requests still pending, tasks still in the document.
    private fun retained(snapshot: PhoneSnapshot): Set<String> {
        val live = snapshot.pendingApprovals.map { approvalKey(it.id) } + snapshot.tasks.map { taskKey(it.id) }
        return seen.intersect(live.toSet())
    }

    private fun candidates(snapshot: PhoneSnapshot): List<Notice> {
        val approvals = snapshot.pendingApprovals
            .filter { it.state is ApprovalState.Pending && it.myVerdict == null && !it.tooLate }
            .map {
                Notice(
                    key = approvalKey(it.id),
                    channel = NoticeChannel.APPROVALS,
                    title = "Approval needed · ${riskWord(it.risk)} risk",
                    text = it.summary,
                    detail = "${it.summary}\n${it.tool} ${it.args}",
                    taskId = it.taskId,
                )
            }
        val tasks = snapshot.tasks
            .filter { it.mine }
            .mapNotNull { t ->
                val title = FINAL_TITLES[t.status] ?: return@mapNotNull null
                Notice(
                    key = taskKey(t.id),
                    channel = NoticeChannel.TASKS,
                    title = title,
                    text = t.prompt,
                    detail = t.result?.summary?.let { "${t.prompt}\n$it" },
                    taskId = t.id,
                )
            }
        return approvals + tasks
    }

    /** The words of the notices. */
    companion object {
        /** The title of a task's notice for each final status. */
        val FINAL_TITLES: Map<TaskStatus, String> = mapOf(
            TaskStatus.DONE to "Task done",
            TaskStatus.FAILED to "Task failed",
            TaskStatus.CANCELLED to "Task cancelled",
            TaskStatus.INTERRUPTED to "Task interrupted",
        )

        /** `low`, `medium` or `high`. */
        fun riskWord(risk: Risk): String = when (risk) {
            Risk.LOW -> "low"
            Risk.MEDIUM -> "medium"
            Risk.HIGH -> "high"
        }

        private const val APPROVAL_PREFIX = "approval:"

        private fun approvalKey(id: String) = APPROVAL_PREFIX + id

        private fun taskKey(id: String) = "task:$id"
    }
}
