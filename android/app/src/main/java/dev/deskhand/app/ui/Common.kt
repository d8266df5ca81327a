package dev.deskhand.app.ui

import android.content.Context
import android.content.ContextWrapper
import android.os.Build
import androidx.biometric.BiometricManager
import androidx.biometric.BiometricManager.Authenticators.BIOMETRIC_STRONG
import androidx.biometric.BiometricManager.Authenticators.BIOMETRIC_WEAK
import androidx.biometric.BiometricManager.Authenticators.DEVICE_CREDENTIAL
import androidx.biometric.BiometricPrompt
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.core.content.ContextCompat
import androidx.fragment.app.FragmentActivity
import dev.deskhand.app.model.DesktopHealthView
import dev.deskhand.app.model.DesktopPresence
import java.text.DateFormat
import java.util.Date

/** A time (unix ms) as the user's locale writes a date and time. */
fun timeText(ms: Long): String = DateFormat.getDateTimeInstance(DateFormat.SHORT, DateFormat.SHORT).format(Date(ms))

/** A duration (ms) in the largest whole unit: `45 s`, `3 min`, `2 h`. */
fun durationText(ms: Long): String {
    val s = (ms / 1000).coerceAtLeast(0)
    return when {
        s < 90 -> "$s s"
        s < 90 * 60 -> "${s / 60} min"
        else -> "${s / 3600} h"
    }
}

/** The desktop's presence in one line. */
fun presenceText(p: DesktopPresence): String = when (p) {
    is DesktopPresence.NotPaired -> "not paired"
    is DesktopPresence.NeverReached -> "never reached" + (p.lastError?.let { ": $it" } ?: "")
    is DesktopPresence.Online -> "connected since ${timeText(p.sinceMs)}"
    is DesktopPresence.Offline -> "last seen ${timeText(p.lastSeenMs)}" + (p.lastError?.let { ": $it" } ?: "")
}

/** A byte count for people: `812 B`, `14.2 kB`, `3.1 MB`. */
fun sizeText(bytes: Long): String = when {
    bytes < 1000 -> "$bytes B"
    bytes < 1_000_000 -> "%.1f kB".format(bytes / 1000.0)
    else -> "%.1f MB".format(bytes / 1_000_000.0)
}

/** The error line of a screen: the core's words, dismissable. */
@Composable
fun ErrorLine(error: String?, onDismiss: () -> Unit) {
    if (error == null) return
    Card(
        colors = CardDefaults.cardColors(containerColor = MaterialTheme.colorScheme.errorContainer),
        modifier = Modifier.fillMaxWidth().padding(vertical = 4.dp),
    ) {
        Column(Modifier.padding(12.dp)) {
            Text(error, color = MaterialTheme.colorScheme.onErrorContainer)
            TextButton(onClick = onDismiss) { Text("Dismiss") }
        }
    }
}

/** The desktop's presence and health, as a banner over the conversation. */
@Composable
fun PresenceBanner(name: String?, presence: DesktopPresence, inSync: Boolean, health: DesktopHealthView?) {
    val online = presence is DesktopPresence.Online
    val warn = !online || health?.stale == true
    Card(
        colors = CardDefaults.cardColors(
            containerColor = if (warn) MaterialTheme.colorScheme.tertiaryContainer else MaterialTheme.colorScheme.secondaryContainer,
        ),
        modifier = Modifier.fillMaxWidth().padding(8.dp),
    ) {
        Column(Modifier.padding(12.dp)) {
            Text(name ?: "Desktop", style = MaterialTheme.typography.titleMedium)
            Text(presenceText(presence) + if (online && !inSync) " · syncing…" else "")
            if (health != null) {
                Text("${health.os} · executor ${health.executor.name.lowercase()}")
                if (health.stale) {
                    Text(
                        "Its last heartbeat is ${durationText(health.heartbeatAgeMs)} old: it may be asleep or stuck.",
                        color = MaterialTheme.colorScheme.error,
                    )
                }
            }
        }
    }
}

/** The activity behind a Compose context (the app's is a [FragmentActivity]). */
fun Context.findFragmentActivity(): FragmentActivity? {
    var c: Context? = this
    while (c is ContextWrapper) {
        if (c is FragmentActivity) return c
        c = c.baseContext
    }
    return null
}

/**
 * The authenticators a high-risk approval asks for: a strong biometric or the device's screen
 * lock. Before Android 11 a weak biometric or the screen lock: Android 9 and 10 refuse the strong
 * pair, and whether androidx.biometric accepts it on 8.x has changed between its versions (there
 * the fingerprint reader is the only biometric either way).
 */
private fun approvalAuthenticators(): Int =
    if (Build.VERSION.SDK_INT < Build.VERSION_CODES.R) {
        BIOMETRIC_WEAK or DEVICE_CREDENTIAL
    } else {
        BIOMETRIC_STRONG or DEVICE_CREDENTIAL
    }

/**
 * Asks the user to confirm [action] with a biometric or the screen lock; [onConfirmed] only on
 * success, [onRefused] with the reason otherwise (cancelled, no screen lock set, locked out).
 */
fun confirmWithBiometrics(
    activity: FragmentActivity,
    title: String,
    action: String,
    onConfirmed: () -> Unit,
    onRefused: (String) -> Unit,
) {
    val authenticators = approvalAuthenticators()
    val can = BiometricManager.from(activity).canAuthenticate(authenticators)
    if (can != BiometricManager.BIOMETRIC_SUCCESS) {
        onRefused("set up a screen lock or a fingerprint on this phone to approve high-risk actions")
        return
    }
    val info = BiometricPrompt.PromptInfo.Builder()
        .setTitle(title)
        .setSubtitle("High risk: confirm it is you")
        .setDescription(action.take(MAX_PROMPT_CHARS))
        .setAllowedAuthenticators(authenticators)
        .setConfirmationRequired(true)
        .build()
    val prompt = BiometricPrompt(
        activity,
        ContextCompat.getMainExecutor(activity),
        object : BiometricPrompt.AuthenticationCallback() {
            override fun onAuthenticationSucceeded(result: BiometricPrompt.AuthenticationResult) {
                onConfirmed()
            }

            override fun onAuthenticationError(errorCode: Int, errString: CharSequence) {
                onRefused("not approved: $errString")
            }
        },
    )
    prompt.authenticate(info)
}

private const val MAX_PROMPT_CHARS = 300
