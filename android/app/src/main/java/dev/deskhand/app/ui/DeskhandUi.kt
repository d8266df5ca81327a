package dev.deskhand.app.ui

import androidx.activity.compose.BackHandler
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.consumeWindowInsets
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.material.icons.Icons
import androidx.compose.material.icons.filled.Home
import androidx.compose.material.icons.filled.Notifications
import androidx.compose.material.icons.filled.Settings
import androidx.compose.material3.Badge
import androidx.compose.material3.BadgedBox
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.Icon
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.NavigationBar
import androidx.compose.material3.NavigationBarItem
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import dev.deskhand.app.Models
import kotlinx.coroutines.flow.StateFlow

/** The tabs of a paired phone. */
private enum class Tab(val label: String) { CONVERSATION("Conversation"), APPROVALS("Approvals"), DEVICES("Devices") }

/**
 * What the app shows: opening, the pair screen until a desktop is paired and its workspace
 * arrived, then the conversation, approvals and devices tabs, with a task's screen over them
 * (opened from a message, an approval or a notification: [openTask]).
 */
@Composable
fun DeskhandUi(
    models: Models?,
    openError: String?,
    openTask: StateFlow<String?>,
    onTaskOpened: () -> Unit,
    devicesScreen: @Composable (Models, Modifier) -> Unit,
) {
    when {
        openError != null -> Column(Modifier.fillMaxSize().safeDrawingPadding().padding(24.dp)) {
            Text("Deskhand cannot open its storage", style = MaterialTheme.typography.headlineSmall)
            Text(openError)
        }
        models == null -> Box(Modifier.fillMaxSize(), contentAlignment = Alignment.Center) { CircularProgressIndicator() }
        else -> Paired(models, openTask, onTaskOpened, devicesScreen)
    }
}

@Composable
private fun Paired(
    models: Models,
    openTask: StateFlow<String?>,
    onTaskOpened: () -> Unit,
    devicesScreen: @Composable (Models, Modifier) -> Unit,
) {
    val pairing by models.pairing.state.collectAsStateWithLifecycle()
    if (!pairing.ready) {
        PairScreen(models.pairing, models.devices)
        return
    }
    val approvals by models.approvals.state.collectAsStateWithLifecycle()
    var tab by rememberSaveable { mutableStateOf(Tab.CONVERSATION) }
    var taskId by rememberSaveable { mutableStateOf<String?>(null) }
    val requested by openTask.collectAsStateWithLifecycle()
    LaunchedEffect(requested) {
        requested?.let {
            taskId = it
            onTaskOpened()
        }
    }
    BackHandler(enabled = taskId != null) { taskId = null }

    Scaffold(
        bottomBar = {
            NavigationBar {
                Tab.entries.forEach { t ->
                    NavigationBarItem(
                        selected = tab == t && taskId == null,
                        onClick = {
                            tab = t
                            taskId = null
                        },
                        icon = {
                            when (t) {
                                Tab.CONVERSATION -> Icon(Icons.Filled.Home, contentDescription = null)
                                Tab.APPROVALS -> BadgedBox(badge = {
                                    if (approvals.pending.isNotEmpty()) Badge { Text("${approvals.pending.size}") }
                                }) { Icon(Icons.Filled.Notifications, contentDescription = null) }
                                Tab.DEVICES -> Icon(Icons.Filled.Settings, contentDescription = null)
                            }
                        },
                        label = { Text(t.label) },
                    )
                }
            }
        },
    ) { padding ->
        // The scaffold's padding covers the system bars and the navigation bar; the keyboard
        // (edge to edge, nothing resizes the window) is padded for on top of it.
        val inner = Modifier.padding(padding).consumeWindowInsets(padding).imePadding()
        val open: (String) -> Unit = { taskId = it }
        val shown = taskId
        if (shown != null) {
            TaskScreen(models.task(shown), models.approvals, onBack = { taskId = null }, modifier = inner)
        } else {
            when (tab) {
                Tab.CONVERSATION -> ConversationScreen(models.conversation, open, inner)
                Tab.APPROVALS -> ApprovalsScreen(models.approvals, open, inner)
                Tab.DEVICES -> devicesScreen(models, inner)
            }
        }
    }
}
