package dev.deskhand.app.ui

import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.widthIn
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import deskhand.mobile.Delivery
import deskhand.mobile.MessageRole
import deskhand.mobile.MessageView
import dev.deskhand.app.model.ConversationModel
import kotlinx.coroutines.launch

/**
 * The conversation: the desktop's presence and health on top, the messages (each of this
 * phone's with its delivery state), a composer. Tapping a message that belongs to a task opens
 * the task.
 */
@Composable
fun ConversationScreen(model: ConversationModel, onOpenTask: (String) -> Unit, modifier: Modifier = Modifier) {
    val state by model.state.collectAsStateWithLifecycle()
    val list = rememberLazyListState()
    val scope = rememberCoroutineScope()
    var draft by rememberSaveable { mutableStateOf("") }

    // Follow the conversation as it grows.
    LaunchedEffect(state.messages.size) {
        if (state.messages.isNotEmpty()) list.animateScrollToItem(state.messages.size - 1)
    }

    Column(modifier.fillMaxSize()) {
        PresenceBanner(state.desktopName, state.presence, state.inSync, state.health)
        LazyColumn(
            state = list,
            modifier = Modifier.weight(1f).fillMaxWidth().padding(horizontal = 8.dp),
            verticalArrangement = Arrangement.spacedBy(6.dp),
        ) {
            if (state.olderWeeks > 0) {
                item(key = "older") {
                    TextButton(
                        onClick = { model.loadOlder() },
                        enabled = !state.loadingOlder,
                        modifier = Modifier.fillMaxWidth(),
                    ) { Text(if (state.loadingOlder) "Loading…" else "Load older messages") }
                }
            }
            items(state.messages, key = { it.id }) { m ->
                val task = m.taskId ?: if (m.role == MessageRole.USER) model.taskIdOf(m.id) else null
                MessageBubble(m, onClick = task?.let { { onOpenTask(it) } })
            }
        }
        ErrorLine(state.error, model::dismissError)
        Row(Modifier.fillMaxWidth().padding(8.dp), verticalAlignment = Alignment.CenterVertically) {
            OutlinedTextField(
                value = draft,
                onValueChange = { draft = it },
                placeholder = { Text(if (state.canSend) "Ask your desktop…" else "Waiting for the workspace…") },
                enabled = state.canSend,
                maxLines = 5,
                modifier = Modifier.weight(1f),
            )
            Button(
                onClick = {
                    val text = draft
                    scope.launch {
                        // Saved on the phone before this returns; cleared only then.
                        if (model.send(text).await() != null && draft == text) draft = ""
                    }
                },
                enabled = state.canSend && !state.sending && draft.isNotBlank(),
                modifier = Modifier.padding(start = 8.dp),
            ) { Text("Send") }
        }
    }
}

@Composable
private fun MessageBubble(m: MessageView, onClick: (() -> Unit)?) {
    val mineColor = MaterialTheme.colorScheme.primaryContainer
    val otherColor = when (m.role) {
        MessageRole.SYSTEM -> MaterialTheme.colorScheme.surfaceVariant
        else -> MaterialTheme.colorScheme.secondaryContainer
    }
    Row(Modifier.fillMaxWidth(), horizontalArrangement = if (m.mine) Arrangement.End else Arrangement.Start) {
        Card(
            colors = CardDefaults.cardColors(containerColor = if (m.mine) mineColor else otherColor),
            modifier = Modifier.widthIn(max = 320.dp).let { if (onClick != null) it.clickable(onClick = onClick) else it },
        ) {
            Column(Modifier.padding(10.dp)) {
                Text(m.text)
                val who = when (m.role) {
                    MessageRole.USER -> if (m.mine) "you" else "another phone"
                    MessageRole.AGENT -> "desktop"
                    MessageRole.SYSTEM -> "system"
                }
                val delivery = if (m.mine) {
                    when (m.delivery) {
                        Delivery.PENDING -> " · not sent yet"
                        Delivery.SYNCED -> " · delivered"
                    }
                } else {
                    ""
                }
                Text(
                    "$who · ${timeText(m.createdAtMs)}$delivery" + if (onClick != null) " · task ›" else "",
                    style = MaterialTheme.typography.labelSmall,
                )
            }
        }
    }
}
