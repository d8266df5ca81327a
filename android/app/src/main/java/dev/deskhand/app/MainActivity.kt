package dev.deskhand.app

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.viewModels
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle

/**
 * Hosts the view models and forwards the lifecycle to the core: foreground = sync now,
 * background = sync off. The screens (pair with the camera, conversation, task, approvals with
 * the biometric prompt, devices) are the next step; this shows only where the phone stands.
 */
class MainActivity : ComponentActivity() {
    private val app: AppModels by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface { Status(app) }
            }
        }
    }

    override fun onStart() {
        super.onStart()
        app.models.value?.session?.onForeground()
    }

    override fun onStop() {
        super.onStop()
        app.models.value?.session?.onBackground()
    }
}

@Composable
private fun Status(app: AppModels) {
    val models by app.models.collectAsStateWithLifecycle()
    val openError by app.openError.collectAsStateWithLifecycle()
    Column(Modifier.padding(24.dp)) {
        Text("Deskhand", style = MaterialTheme.typography.headlineMedium)
        val m = models
        when {
            openError != null -> Text("Cannot open the phone: $openError")
            m == null -> Text("Opening…")
            else -> {
                val pairing by m.pairing.state.collectAsStateWithLifecycle()
                val conversation by m.conversation.state.collectAsStateWithLifecycle()
                Text(if (pairing.paired) "Paired with ${pairing.desktopName}" else "Not paired")
                Text("Desktop: ${conversation.presence}")
                Text("${conversation.messages.size} messages")
            }
        }
    }
}
