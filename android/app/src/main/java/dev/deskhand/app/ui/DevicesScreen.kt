package dev.deskhand.app.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.text.selection.SelectionContainer
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.AlertDialog
import androidx.compose.material3.Card
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import dev.deskhand.app.model.DevicesModel
import dev.deskhand.app.push.WakeUpStatus
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.launch

/** Which confirmation is open. */
private enum class Confirm { NONE, FORGET, DROP }

/**
 * This phone and its desktop: presence, addresses, what is not sent yet, wake-ups, and "forget
 * this desktop" behind a confirmation. The core refuses to forget while writes are unsent and
 * says so; the user may then choose to drop them (a second confirmation).
 */
@Composable
fun DevicesScreen(
    model: DevicesModel,
    wakeUps: StateFlow<WakeUpStatus>,
    onEnableWakeUps: () -> Unit,
    onDisableWakeUps: () -> Unit,
    modifier: Modifier = Modifier,
) {
    val state by model.state.collectAsStateWithLifecycle()
    val wake by wakeUps.collectAsStateWithLifecycle()
    val scope = rememberCoroutineScope()
    var confirm by rememberSaveable { mutableStateOf(Confirm.NONE) }

    Column(
        modifier.fillMaxSize().verticalScroll(rememberScrollState()).padding(16.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Card(Modifier.fillMaxWidth()) {
            Column(Modifier.padding(12.dp)) {
                Text("This phone", style = MaterialTheme.typography.titleMedium)
                Text(state.deviceName)
                SelectionContainer { Text(state.deviceId, fontFamily = FontFamily.Monospace, style = MaterialTheme.typography.bodySmall) }
            }
        }
        Card(Modifier.fillMaxWidth()) {
            Column(Modifier.padding(12.dp)) {
                Text("Desktop", style = MaterialTheme.typography.titleMedium)
                Text(state.desktopName ?: "none")
                state.desktopId?.let {
                    SelectionContainer { Text(it, fontFamily = FontFamily.Monospace, style = MaterialTheme.typography.bodySmall) }
                }
                Text(presenceText(state.presence))
                if (state.desktopAddrs.isNotEmpty()) {
                    Text("Addresses: " + state.desktopAddrs.joinToString(", "), style = MaterialTheme.typography.bodySmall)
                }
                Text(
                    if (state.unsent == 0L) "Everything written here has reached it." else "${state.unsent} writes not sent yet.",
                )
            }
        }
        if (state.pairedDevices.isNotEmpty()) {
            Card(Modifier.fillMaxWidth()) {
                Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(6.dp)) {
                    Text("Paired with this desktop", style = MaterialTheme.typography.titleMedium)
                    state.pairedDevices.forEach { d ->
                        val what = buildString {
                            append(d.name)
                            if (d.thisDevice) append(" (this phone)")
                            append(" · ").append(d.platform)
                            if (d.revokedAtMs != null) append(" · revoked")
                        }
                        Text(what)
                    }
                }
            }
        }
        Card(Modifier.fillMaxWidth()) {
            Column(Modifier.padding(12.dp)) {
                Text("Wake-ups", style = MaterialTheme.typography.titleMedium)
                Text(
                    "A push through your UnifiedPush distributor (for instance ntfy) tells the app to sync when " +
                        "an approval or a result waits. It carries nothing else, and is encrypted to this phone.",
                    style = MaterialTheme.typography.bodySmall,
                )
                Text(wake.text)
                if (wake.on) {
                    TextButton(onClick = onDisableWakeUps) { Text("Turn off") }
                } else {
                    TextButton(onClick = onEnableWakeUps) { Text("Turn on") }
                }
            }
        }
        ErrorLine(state.error, model::dismissError)
        if (state.desktopId != null) {
            OutlinedButton(onClick = { confirm = Confirm.FORGET }, enabled = !state.forgetting) {
                Text("Forget this desktop")
            }
        }
    }

    when (confirm) {
        Confirm.NONE -> Unit
        Confirm.FORGET -> AlertDialog(
            onDismissRequest = { confirm = Confirm.NONE },
            title = { Text("Forget ${state.desktopName ?: "this desktop"}?") },
            text = {
                Text(
                    "This phone stops syncing with it and deletes its copy of the conversation. " +
                        "To use it again, pair with a new code.",
                )
            },
            confirmButton = {
                TextButton(onClick = {
                    confirm = Confirm.NONE
                    scope.launch {
                        // Refused while writes are unsent: the error line says so; offer to drop them.
                        if (model.forgetDesktop().await() == null && model.unsent.value > 0) confirm = Confirm.DROP
                    }
                }) { Text("Forget") }
            },
            dismissButton = { TextButton(onClick = { confirm = Confirm.NONE }) { Text("Keep") } },
        )
        Confirm.DROP -> AlertDialog(
            onDismissRequest = { confirm = Confirm.NONE },
            title = { Text("Drop ${state.unsent} unsent writes?") },
            text = {
                Text(
                    "The desktop has not received them (messages, decisions). Forgetting now loses them " +
                        "for good. Keep the desktop and let them sync first if you can.",
                )
            },
            confirmButton = {
                TextButton(onClick = {
                    confirm = Confirm.NONE
                    model.forgetDesktop(dropUnsent = true)
                }) { Text("Drop them and forget", color = MaterialTheme.colorScheme.error) }
            },
            dismissButton = { TextButton(onClick = { confirm = Confirm.NONE }) { Text("Keep") } },
        )
    }
}
