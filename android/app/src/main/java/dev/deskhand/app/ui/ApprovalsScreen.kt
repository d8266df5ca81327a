package dev.deskhand.app.ui

import android.widget.Toast
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Button
import androidx.compose.material3.ButtonDefaults
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import deskhand.mobile.ApprovalState
import deskhand.mobile.ApprovalView
import deskhand.mobile.Risk
import deskhand.mobile.Verdict
import dev.deskhand.app.model.ApprovalItem
import dev.deskhand.app.model.ApprovalsModel
import dev.deskhand.app.model.WakeUpNotifier

/**
 * Approval requests: the exact action (tool and arguments), its risk, whether its hash
 * verified; approve or deny. A high-risk approve asks for the biometric or screen-lock
 * confirmation first and is passed on only when it succeeds.
 */
@Composable
fun ApprovalsScreen(model: ApprovalsModel, onOpenTask: (String) -> Unit, modifier: Modifier = Modifier) {
    val state by model.state.collectAsStateWithLifecycle()
    LazyColumn(
        modifier.fillMaxSize().padding(horizontal = 12.dp),
        verticalArrangement = Arrangement.spacedBy(8.dp),
    ) {
        item { ErrorLine(state.error, model::dismissError) }
        if (state.pending.isEmpty()) {
            item { Text("Nothing waits for your approval.", modifier = Modifier.padding(vertical = 16.dp)) }
        }
        items(state.pending, key = { it.request.id }) { item ->
            ApprovalCard(item, model, onOpenTask)
        }
        if (state.resolved.isNotEmpty()) {
            item { Text("Decided", style = MaterialTheme.typography.titleSmall, modifier = Modifier.padding(top = 16.dp)) }
            // Newest first, a screenful.
            items(state.resolved.asReversed().take(RESOLVED_SHOWN), key = { "r-" + it.id }) { r ->
                ResolvedRow(r, onOpenTask)
            }
        }
    }
}

private const val RESOLVED_SHOWN = 30

/** One pending request with its decision buttons (also shown on its task's screen). */
@Composable
fun ApprovalCard(item: ApprovalItem, model: ApprovalsModel, onOpenTask: ((String) -> Unit)? = null) {
    val context = LocalContext.current
    val r = item.request
    val high = item.risk == Risk.HIGH
    Card(
        colors = CardDefaults.cardColors(
            containerColor = if (high) MaterialTheme.colorScheme.errorContainer else MaterialTheme.colorScheme.surfaceVariant,
        ),
        modifier = Modifier.fillMaxWidth(),
    ) {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text(r.summary, style = MaterialTheme.typography.titleMedium)
            Text("${WakeUpNotifier.riskWord(item.risk)} risk · expires in ${durationText(r.expiresInMs)}")
            Text(r.tool, fontFamily = FontFamily.Monospace, style = MaterialTheme.typography.labelLarge)
            Text(r.args, fontFamily = FontFamily.Monospace, style = MaterialTheme.typography.bodySmall)
            if (item.canApprove) {
                Text("The action's hash matches what is shown.", style = MaterialTheme.typography.labelSmall)
            } else {
                Text(
                    "The action's hash does not match what is shown: it cannot be approved.",
                    color = MaterialTheme.colorScheme.error,
                )
            }
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                OutlinedButton(onClick = { model.deny(r.id) }, enabled = !item.deciding) { Text("Deny") }
                Button(
                    onClick = {
                        if (!item.needsBiometric) {
                            model.approve(r.id)
                        } else {
                            val activity = context.findFragmentActivity()
                            if (activity == null) {
                                model.approve(r.id) // refused by the model: it says why
                            } else {
                                confirmWithBiometrics(
                                    activity,
                                    title = "Approve: ${r.summary}",
                                    action = "${r.tool} ${r.args}",
                                    onConfirmed = { model.approve(r.id, biometricConfirmed = true) },
                                    onRefused = { why -> Toast.makeText(context, why, Toast.LENGTH_LONG).show() },
                                )
                            }
                        }
                    },
                    enabled = item.canApprove && !item.deciding,
                    colors = if (high) {
                        ButtonDefaults.buttonColors(containerColor = MaterialTheme.colorScheme.error)
                    } else {
                        ButtonDefaults.buttonColors()
                    },
                ) { Text(if (item.needsBiometric) "Approve with biometrics…" else "Approve") }
            }
            if (onOpenTask != null) {
                OutlinedButton(onClick = { onOpenTask(r.taskId) }) { Text("Open its task") }
            }
        }
    }
}

@Composable
private fun ResolvedRow(r: ApprovalView, onOpenTask: (String) -> Unit) {
    val outcome = when (val s = r.state) {
        is ApprovalState.Resolved -> (if (s.verdict == Verdict.APPROVE) "approved" else "denied") + " · ${s.reason}"
        is ApprovalState.Expired -> "expired (counts as denied)"
        is ApprovalState.Pending -> "waiting"
    }
    val mine = when (r.myVerdict) {
        Verdict.APPROVE -> " · you approved"
        Verdict.DENY -> " · you denied"
        null -> ""
    }
    Column(Modifier.fillMaxWidth()) {
        Text(r.summary)
        Text("$outcome$mine", style = MaterialTheme.typography.labelSmall)
        OutlinedButton(onClick = { onOpenTask(r.taskId) }) { Text("Open its task") }
    }
}
