package dev.deskhand.app

import android.Manifest
import android.content.Intent
import android.content.pm.PackageManager
import android.os.Build
import android.os.Bundle
import androidx.activity.compose.setContent
import androidx.activity.enableEdgeToEdge
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.compose.foundation.isSystemInDarkTheme
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Surface
import androidx.compose.material3.darkColorScheme
import androidx.compose.material3.lightColorScheme
import androidx.compose.runtime.getValue
import androidx.compose.ui.Modifier
import androidx.core.content.ContextCompat
import androidx.fragment.app.FragmentActivity
import androidx.lifecycle.Lifecycle
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.lifecycleScope
import androidx.lifecycle.repeatOnLifecycle
import dev.deskhand.app.ui.DeskhandUi
import dev.deskhand.app.ui.DevicesScreen
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.distinctUntilChanged
import kotlinx.coroutines.flow.filterNotNull
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.launch

/**
 * The app's one activity: hosts the screens and forwards the lifecycle to the core (on screen =
 * sync on and sync now; off screen = sync off, wake-up pushes bring changes). A
 * [FragmentActivity] because `BiometricPrompt` needs one.
 */
class MainActivity : FragmentActivity() {
    private val app: AppModels by viewModels()
    private val deskhand: DeskhandApp get() = application as DeskhandApp

    // A task to show, from a notification's tap.
    private val openTask = MutableStateFlow<String?>(null)

    private val askNotifications = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) {
            deskhand.wakeUps.enable(this)
        } else {
            deskhand.wakeUps.onFailed("notifications are not allowed: allow them in the app's settings to be told of approvals")
        }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        // Android 15 draws every targetSdk-35 app edge to edge anyway: do it on every version,
        // the screens pad themselves (system bars, display cutout, keyboard).
        enableEdgeToEdge()
        if (savedInstanceState == null) openTask.value = intent?.getStringExtra(EXTRA_TASK_ID)
        deskhand.wakeUps.refresh(this)

        lifecycleScope.launch {
            repeatOnLifecycle(Lifecycle.State.STARTED) {
                // Each time the app comes on screen (and once the phone is open): sync now.
                val session = deskhand.session.filterNotNull().first()
                session.onForeground()
                // While on screen the user sees everything: nothing of it is notified later.
                session.snapshot.collect { deskhand.wakeUps.markSeen(it) }
            }
        }
        lifecycleScope.launch {
            // Once paired (again), the push subscription goes into the new workspace.
            deskhand.models.filterNotNull().first().pairing.state
                .map { it.ready }
                .distinctUntilChanged()
                .collect { ready -> if (ready) deskhand.wakeUps.applySubscription() }
        }

        setContent {
            // Dark with the system, like the window's DayNight theme and the system bars' icons
            // (enableEdgeToEdge picks them light or dark from the system setting).
            MaterialTheme(colorScheme = if (isSystemInDarkTheme()) darkColorScheme() else lightColorScheme()) {
                Surface(Modifier.fillMaxSize()) {
                    val models by app.models.collectAsStateWithLifecycle()
                    val openError by app.openError.collectAsStateWithLifecycle()
                    DeskhandUi(
                        models = models,
                        openError = openError,
                        openTask = openTask,
                        onTaskOpened = { openTask.value = null },
                        devicesScreen = { m, modifier ->
                            DevicesScreen(
                                m.devices,
                                deskhand.wakeUps.status,
                                onEnableWakeUps = ::enableWakeUps,
                                onDisableWakeUps = { deskhand.wakeUps.disable(this@MainActivity) },
                                modifier = modifier,
                            )
                        },
                    )
                }
            }
        }
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        intent.getStringExtra(EXTRA_TASK_ID)?.let { openTask.value = it }
    }

    override fun onStart() {
        super.onStart()
        deskhand.inForeground = true
        deskhand.holdMulticast(true)
    }

    override fun onStop() {
        super.onStop()
        deskhand.inForeground = false
        deskhand.holdMulticast(false)
        deskhand.session.value?.onBackground()
    }

    /** Wake-ups post notifications: Android 13+ asks for that first. */
    private fun enableWakeUps() {
        val needsPermission = Build.VERSION.SDK_INT >= Build.VERSION_CODES.TIRAMISU &&
            ContextCompat.checkSelfPermission(this, Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED
        if (needsPermission) {
            askNotifications.launch(Manifest.permission.POST_NOTIFICATIONS)
        } else {
            deskhand.wakeUps.enable(this)
        }
    }

    /** Intent extras. */
    companion object {
        /** The id of a task to show (from a notification). */
        const val EXTRA_TASK_ID = "dev.deskhand.app.TASK_ID"
    }
}
