package dev.deskhand.app

import android.app.Application
import android.net.wifi.WifiManager
import android.os.Build
import android.util.Log
import deskhand.mobile.ApiException
import deskhand.mobile.LogLevel
import deskhand.mobile.LogSink
import deskhand.mobile.PhoneSettings
import deskhand.mobile.initPlatform
import dev.deskhand.app.model.PhoneSession
import dev.deskhand.app.model.userMessage
import dev.deskhand.app.push.LocalNotifications
import dev.deskhand.app.push.WakeUps
import java.io.File
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock

/** The library's log lines, in Logcat. */
private object LogcatSink : LogSink {
    override fun log(level: LogLevel, line: String) {
        when (level) {
            LogLevel.ERROR -> Log.e("deskhand", line)
            LogLevel.WARN -> Log.w("deskhand", line)
            LogLevel.INFO -> Log.i("deskhand", line)
            LogLevel.DEBUG, LogLevel.TRACE -> Log.d("deskhand", line)
        }
    }
}

/**
 * The process: opens the phone's core once (its redb file admits one opener), for the screens
 * and for the wake-up job alike, and owns the wake-up state ([wakeUps]). The core lives as long
 * as the process; [scope] is where its models run.
 */
class DeskhandApp : Application() {
    /** Where the phone's view models and the wake-up work run; lives as long as the process. */
    val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)

    private val openLock = Mutex()
    private val opened = MutableStateFlow<PhoneSession?>(null)
    private val failure = MutableStateFlow<String?>(null)

    private val openedModels = MutableStateFlow<Models?>(null)

    /** The phone once it is open. */
    val session: StateFlow<PhoneSession?> = opened

    /** The screens' view models of [session], made once per process. */
    val models: StateFlow<Models?> = openedModels

    /** Why the phone could not be opened (storage, key), in the core's words. */
    val openError: StateFlow<String?> = failure

    /**
     * An activity of the app is on screen (set by [MainActivity]). A wake-up sync then leaves
     * sync running, and nothing is notified: the user sees it.
     */
    @Volatile
    var inForeground: Boolean = false

    // Android's Wi-Fi drops multicast not addressed to the device unless an app holds this lock:
    // without it the core's mDNS never hears the desktop's answers. Counted: the screen and a
    // wake-up job each hold it while they sync. Null without Wi-Fi.
    private val multicastLock: WifiManager.MulticastLock? by lazy {
        getSystemService(WifiManager::class.java)?.createMulticastLock("deskhand-mdns")?.apply {
            setReferenceCounted(true)
        }
    }

    /**
     * Takes ([hold]) or gives back one hold on the Wi-Fi multicast lock (local-network discovery
     * of the desktop); only while syncing, as it costs battery.
     */
    fun holdMulticast(hold: Boolean) {
        val lock = multicastLock ?: return
        synchronized(lock) {
            if (hold) lock.acquire() else if (lock.isHeld) lock.release()
        }
    }

    /** UnifiedPush registration, the push subscription in the core, what was notified. */
    lateinit var wakeUps: WakeUps
        private set

    override fun onCreate() {
        super.onCreate()
        initPlatform("info", LogcatSink)
        LocalNotifications.createChannels(this)
        wakeUps = WakeUps(this)
        scope.launch {
            if (openPhone() != null) wakeUps.applySubscription()
        }
    }

    /**
     * The phone, opened on first use (it syncs with its desktop in the background at once if
     * paired); `null` when it cannot be opened, with the reason in [openError].
     */
    suspend fun openPhone(): PhoneSession? = openLock.withLock {
        opened.value?.let { return@withLock it }
        try {
            val settings = PhoneSettings(
                dataDir = File(filesDir, "phone").path,
                deviceName = Build.MODEL,
                platform = "android",
                listen = null,
                relay = null,
                mdns = null,
            )
            val keys = KeystoreKeyProvider(File(filesDir, "device-key.wrapped"))
            val session = PhoneSession.open(settings, keys, scope)
            if (!inForeground) session.onBackground()
            openedModels.value = Models(session)
            opened.value = session
            failure.value = null
            session
        } catch (e: ApiException) {
            failure.value = e.userMessage()
            null
        }
    }
}
