package dev.deskhand.app.ui

import android.graphics.BitmapFactory
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Card
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import deskhand.mobile.BlobInfo
import deskhand.mobile.TaskStatus
import dev.deskhand.app.model.ApprovalsModel
import dev.deskhand.app.model.BlobState
import dev.deskhand.app.model.TaskModel
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** Screenshots larger than this are not fetched without a tap. */
private const val AUTO_FETCH_BYTES = 8_000_000L

/**
 * One task: its live status and progress, its result, the approvals it waits for (decided
 * here as on the approvals screen), and its blobs: PNG screenshots shown, other files saved
 * where the user picks (Storage Access Framework).
 */
@Composable
fun TaskScreen(model: TaskModel, approvals: ApprovalsModel, onBack: () -> Unit, modifier: Modifier = Modifier) {
    val state by model.state.collectAsStateWithLifecycle()
    val approvalsState by approvals.state.collectAsStateWithLifecycle()
    val task = state.task

    LazyColumn(
        modifier.fillMaxSize().padding(horizontal = 12.dp),
        verticalArrangement = Arrangement.spacedBy(8.dp),
    ) {
        item {
            Column(verticalArrangement = Arrangement.spacedBy(4.dp)) {
                TextButton(onClick = onBack) { Text("‹ Back") }
                if (task == null) {
                    Text("This task has not reached the phone yet: the desktop creates it when it receives the message.")
                } else {
                    Text(task.prompt, style = MaterialTheme.typography.titleMedium)
                    Text(
                        "${statusText(task.status)} · asked ${timeText(task.createdAtMs)}" +
                            (task.finishedAtMs?.let { " · ended ${timeText(it)}" } ?: ""),
                    )
                    if (!state.finished) LinearProgressIndicator(Modifier.fillMaxWidth().padding(vertical = 4.dp))
                    if (task.cancelRequestedBy != null && !state.finished) Text("Cancelling…")
                    if (!state.finished && task.cancelRequestedBy == null && task.mine) {
                        OutlinedButton(onClick = { model.cancel() }) { Text("Cancel the task") }
                    }
                }
                ErrorLine(state.error, model::dismissError)
            }
        }
        if (state.waitingApprovals.isNotEmpty()) {
            item { Text("Waiting for your approval", style = MaterialTheme.typography.titleSmall) }
            val waiting = state.waitingApprovals.map { it.id }.toSet()
            items(approvalsState.pending.filter { it.request.id in waiting }, key = { "a-" + it.request.id }) { item ->
                ApprovalCard(item, approvals)
            }
        }
        if (task != null && task.events.isNotEmpty()) {
            item { Text("Progress", style = MaterialTheme.typography.titleSmall) }
            items(task.events) { e ->
                Column {
                    Text("${timeText(e.atMs)} · ${e.kind}", style = MaterialTheme.typography.labelSmall)
                    if (e.text.isNotEmpty()) Text(e.text, fontFamily = FontFamily.Monospace)
                }
            }
        }
        task?.result?.let { r ->
            item {
                Column {
                    Text("Result", style = MaterialTheme.typography.titleSmall)
                    Text(r.summary)
                }
            }
        }
        if (state.blobs.isNotEmpty()) {
            item { Text("Files", style = MaterialTheme.typography.titleSmall) }
            items(state.blobs, key = { "b-" + it.first.hash }) { (info, blob) ->
                BlobRow(model, info, blob)
            }
        }
    }
}

/** A task's status for people. */
fun statusText(s: TaskStatus): String = when (s) {
    TaskStatus.QUEUED -> "queued"
    TaskStatus.RUNNING -> "running"
    TaskStatus.WAITING_APPROVAL -> "waiting for an approval"
    TaskStatus.DONE -> "done"
    TaskStatus.FAILED -> "failed"
    TaskStatus.CANCELLED -> "cancelled"
    TaskStatus.INTERRUPTED -> "interrupted (the desktop restarted)"
}

@Composable
private fun BlobRow(model: TaskModel, info: BlobInfo, blob: BlobState) {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    var saved by remember(info.hash) { mutableStateOf<String?>(null) }
    val isPng = info.mediaType == "image/png"
    val name = info.name ?: if (isPng) "screenshot.png" else "deskhand-${info.hash.take(12)}"

    // The file is fetched (verified against its hash by the core) before the picker opens;
    // the picker's answer writes the fetched bytes.
    val save = rememberLauncherForActivityResult(ActivityResultContracts.CreateDocument(info.mediaType)) { uri ->
        if (uri == null) return@rememberLauncherForActivityResult
        scope.launch {
            val bytes = (model.blobStates.value[info.hash] as? BlobState.Fetched)?.bytes
                ?: model.fetchBlob(info.hash).await()
                ?: return@launch
            saved = try {
                withContext(Dispatchers.IO) {
                    context.contentResolver.openOutputStream(uri)?.use { it.write(bytes) }
                        ?: error("the storage provider gave no stream")
                }
                "saved"
            } catch (e: Exception) {
                "not saved: ${e.message ?: e.javaClass.simpleName}"
            }
        }
    }

    LaunchedEffect(info.hash) {
        if (isPng && info.size.toLong() <= AUTO_FETCH_BYTES && blob is BlobState.NotFetched) model.fetchBlob(info.hash)
    }

    Card(Modifier.fillMaxWidth()) {
        Column(Modifier.padding(10.dp)) {
            Text("$name · ${info.mediaType} · ${sizeText(info.size.toLong())}", style = MaterialTheme.typography.labelMedium)
            when (blob) {
                is BlobState.Fetching -> LinearProgressIndicator(Modifier.fillMaxWidth())
                is BlobState.Failed -> Text(blob.message, color = MaterialTheme.colorScheme.error)
                is BlobState.Fetched -> if (isPng) {
                    val image = remember(blob) { BitmapFactory.decodeByteArray(blob.bytes, 0, blob.bytes.size)?.asImageBitmap() }
                    if (image != null) {
                        Image(
                            bitmap = image,
                            contentDescription = "Screenshot from the desktop",
                            contentScale = ContentScale.FillWidth,
                            modifier = Modifier.fillMaxWidth(),
                        )
                    } else {
                        Text("This PNG cannot be shown.", color = MaterialTheme.colorScheme.error)
                    }
                }
                is BlobState.NotFetched -> if (isPng) {
                    OutlinedButton(onClick = { model.fetchBlob(info.hash) }) { Text("Show") }
                }
            }
            Row {
                TextButton(onClick = {
                    scope.launch {
                        if (model.fetchBlobIfNeeded(info.hash)) save.launch(name)
                    }
                }) { Text("Save…") }
                saved?.let { Text(it, modifier = Modifier.padding(start = 8.dp, top = 12.dp)) }
            }
        }
    }
}

/** [TaskModel.fetchBlob] unless it was fetched already; whether the bytes are there. */
private suspend fun TaskModel.fetchBlobIfNeeded(hash: String): Boolean =
    blobStates.value[hash] is BlobState.Fetched || fetchBlob(hash).await() != null
