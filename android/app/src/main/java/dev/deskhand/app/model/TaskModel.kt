package dev.deskhand.app.model

import deskhand.mobile.ApprovalView
import deskhand.mobile.BlobInfo
import deskhand.mobile.TaskStatus
import deskhand.mobile.TaskView
import kotlinx.coroutines.Deferred
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update

/** A blob of a task as the screen shows it. */
sealed class BlobState {
    /** Not fetched. */
    object NotFetched : BlobState()

    /** Being fetched from the desktop. */
    object Fetching : BlobState()

    /** Fetched and verified against its hash. */
    class Fetched(
        /** Its bytes (show a screenshot, save a file). */
        val bytes: ByteArray,
    ) : BlobState()

    /** The fetch failed. */
    data class Failed(
        /** The core's message. */
        val message: String,
    ) : BlobState()
}

/** What a task's screen shows. */
data class TaskState(
    /** The task, once the phone has it. */
    val task: TaskView?,
    /** Finished (done, failed, cancelled, interrupted). */
    val finished: Boolean,
    /** Its approval requests waiting for a decision. */
    val waitingApprovals: List<ApprovalView>,
    /** Every blob its progress and result name, with where its fetch stands. */
    val blobs: List<Pair<BlobInfo, BlobState>>,
    /** Why the last action failed, in the core's words. */
    val error: String?,
)

/** One task: its live progress, its result, its blobs, and cancelling it. */
class TaskModel(
    session: PhoneSession,
    /** The task shown. */
    val taskId: String,
) : Model(session) {
    private val fetched = MutableStateFlow<Map<String, BlobState>>(emptyMap())

    /** The screen's state. */
    val state: StateFlow<TaskState> = derive(fetched) { s, _, error, loads ->
        val task = s.tasks.firstOrNull { it.id == taskId }
        val infos = task?.let { t ->
            (t.events.mapNotNull { it.blob } + (t.result?.blobs ?: emptyList())).distinctBy { it.hash }
        } ?: emptyList()
        TaskState(
            task = task,
            finished = task?.status in FINISHED,
            waitingApprovals = s.pendingApprovals.filter { it.taskId == taskId },
            blobs = infos.map { it to (loads[it.hash] ?: BlobState.NotFetched) },
            error = error,
        )
    }

    /** Where each fetch stands, by hash (changes here do not wait for a snapshot). */
    val blobStates: StateFlow<Map<String, BlobState>> = fetched.asStateFlow()

    /** Fetches blob [hash] from the desktop (verified against the hash): its bytes, or `null`. */
    fun fetchBlob(hash: String): Deferred<ByteArray?> = act("blob:$hash") {
        fetched.update { it + (hash to BlobState.Fetching) }
        try {
            session.phone.fetchBlob(hash).also { bytes -> fetched.update { it + (hash to BlobState.Fetched(bytes)) } }
        } catch (e: deskhand.mobile.ApiException) {
            fetched.update { it + (hash to BlobState.Failed(e.userMessage())) }
            throw e
        }
    }

    /** Asks the desktop to cancel the task. */
    fun cancel(): Deferred<Unit?> = act("cancel") { session.phone.cancelTask(taskId) }

    private companion object {
        val FINISHED = setOf(TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.INTERRUPTED)
    }
}
