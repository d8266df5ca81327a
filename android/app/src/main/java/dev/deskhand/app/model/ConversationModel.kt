package dev.deskhand.app.model

import deskhand.mobile.MessageView
import kotlinx.coroutines.Deferred
import kotlinx.coroutines.flow.StateFlow

/** What the conversation screen shows. */
data class ConversationState(
    /** The desktop's name, once paired. */
    val desktopName: String?,
    /** Whether the desktop is reachable. */
    val presence: DesktopPresence,
    /** Connected and both sides hold the same changes. */
    val inSync: Boolean,
    /** What the desktop last reported about itself, once the workspace arrived. */
    val health: DesktopHealthView?,
    /** The conversation, oldest first; each of this phone's messages says whether it is delivered. */
    val messages: List<MessageView>,
    /** Weeks of older conversation on the desktop not loaded here: offer "load older" while > 0. */
    val olderWeeks: Int,
    /** Older messages are being asked for. */
    val loadingOlder: Boolean,
    /** The workspace has arrived; until then nothing can be sent. */
    val canSend: Boolean,
    /** A message is being saved. */
    val sending: Boolean,
    /** Why the last send failed, in the core's words. */
    val error: String?,
)

/**
 * The conversation with the desktop: messages with their delivery state, the desktop's presence
 * and health, and sending. A message is saved on the phone before [send] returns and delivered
 * when the desktop is reachable; its `delivery` turns from `PENDING` to `SYNCED` then.
 */
class ConversationModel(session: PhoneSession) : Model(session) {
    /** The screen's state. */
    val state: StateFlow<ConversationState> = derive { s, busy, error ->
        ConversationState(
            desktopName = s.desktop?.name,
            presence = presenceOf(s),
            inSync = s.desktop?.inSync == true,
            health = s.desktop?.health?.let(DesktopHealthView::of),
            messages = s.messages,
            olderWeeks = s.olderWeeks.toInt(),
            loadingOlder = OLDER in busy,
            canSend = s.workspaceReceived,
            sending = SEND in busy,
            error = error,
        )
    }

    /**
     * Writes [text] as a message (the desktop runs it as a task and replies in the conversation).
     * Its id, or `null` with [error] set (empty text, not paired, …).
     */
    fun send(text: String): Deferred<String?> = act(SEND) { session.phone.sendMessage(text) }

    /**
     * Loads the next [weeks] weeks of older conversation from the desktop, newest first; their
     * messages appear in [state] as they arrive. How many weeks were loaded (0: nothing older),
     * or `null` with [error] set.
     */
    fun loadOlder(weeks: Int = 1): Deferred<Int?> =
        act(OLDER) { session.phone.loadOlder(weeks.toUInt()).toInt() }

    /** The id of the task the desktop runs for message [messageId] (its reply carries it). */
    fun taskIdOf(messageId: String): String = "m-$messageId"

    private companion object {
        const val SEND = "send"
        const val OLDER = "older"
    }
}
