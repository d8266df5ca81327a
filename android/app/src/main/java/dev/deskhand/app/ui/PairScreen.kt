package dev.deskhand.app.ui

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.net.Uri
import android.provider.Settings
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.aspectRatio
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.dp
import androidx.core.content.ContextCompat
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import dev.deskhand.app.model.DevicesModel
import dev.deskhand.app.model.PairingModel

/**
 * Pairing: scan the desktop's QR code with the camera, or paste its text. The core checks the
 * code; its refusal is shown in its own words ([PairingModel.error]).
 */
@Composable
fun PairScreen(model: PairingModel, devices: DevicesModel) {
    val state by model.state.collectAsStateWithLifecycle()
    val forgetError by devices.error.collectAsStateWithLifecycle()
    val context = LocalContext.current
    var code by rememberSaveable { mutableStateOf("") }
    var scanning by rememberSaveable { mutableStateOf(false) }
    var cameraRefused by rememberSaveable { mutableStateOf(false) }
    var cameraError by rememberSaveable { mutableStateOf<String?>(null) }
    val askCamera = rememberLauncherForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        cameraRefused = !granted
        scanning = granted
    }

    Column(
        // Outside the scaffold: clear of the system bars, the cutout and the keyboard itself.
        Modifier.fillMaxSize().safeDrawingPadding().verticalScroll(rememberScrollState()).padding(24.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Text("Pair with your desktop", style = MaterialTheme.typography.headlineSmall)
        Text(
            "On the desktop, run `deskhand pair` (or start `deskhand serve`): it shows a QR code. " +
                "Scan it, or paste the text printed under it (deskhand://pair?…). A code works once, " +
                "for 5 minutes.",
        )
        if (scanning) {
            QrScanner(
                onCode = { scanned ->
                    scanning = false
                    code = scanned
                    model.pair(scanned)
                },
                onError = {
                    scanning = false
                    cameraError = it
                },
                modifier = Modifier.fillMaxWidth().aspectRatio(1f),
            )
            TextButton(onClick = { scanning = false }) { Text("Stop the camera") }
        } else {
            Button(
                onClick = {
                    cameraError = null
                    val granted = ContextCompat.checkSelfPermission(context, Manifest.permission.CAMERA) ==
                        PackageManager.PERMISSION_GRANTED
                    if (granted) scanning = true else askCamera.launch(Manifest.permission.CAMERA)
                },
                enabled = !state.pairing,
                modifier = Modifier.fillMaxWidth(),
            ) { Text("Scan the QR code") }
        }
        if (cameraRefused) {
            Text(
                "Deskhand uses the camera only to read the pairing code; nothing is recorded or sent. " +
                    "Without it, paste the code below — or allow the camera in the app's settings.",
                color = MaterialTheme.colorScheme.error,
            )
            OutlinedButton(onClick = {
                context.startActivity(
                    Intent(Settings.ACTION_APPLICATION_DETAILS_SETTINGS, Uri.fromParts("package", context.packageName, null)),
                )
            }) { Text("Open the app's settings") }
        }
        cameraError?.let { Text(it, color = MaterialTheme.colorScheme.error) }

        OutlinedTextField(
            value = code,
            onValueChange = { code = it },
            label = { Text("Pairing code") },
            placeholder = { Text("deskhand://pair?v=1&…") },
            minLines = 2,
            modifier = Modifier.fillMaxWidth(),
        )
        Button(
            onClick = { model.pair(code) },
            enabled = code.isNotBlank() && !state.pairing,
            modifier = Modifier.fillMaxWidth(),
        ) { Text(if (state.pairing) "Pairing…" else "Pair") }
        if (state.pairing) LinearProgressIndicator(Modifier.fillMaxWidth())
        ErrorLine(state.error, model::dismissError)
        if (state.paired && !state.ready) {
            Text("Paired with ${state.desktopName}. Receiving the workspace…")
            // A desktop that never answers again should not hold the phone: pair with another.
            TextButton(onClick = { devices.forgetDesktop() }) { Text("Forget it and pair with another desktop") }
            ErrorLine(forgetError, devices::dismissError)
        }
    }
}
