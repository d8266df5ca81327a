package dev.deskhand.app

import android.app.Application
import android.net.ConnectivityManager
import android.net.Network
import android.os.Build
import android.util.Log
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import deskhand.mobile.ApiException
import deskhand.mobile.LogLevel
import deskhand.mobile.LogSink
import deskhand.mobile.PhoneSettings
import deskhand.mobile.initPlatform
import dev.deskhand.app.model.ApprovalsModel
import dev.deskhand.app.model.ConversationModel
import dev.deskhand.app.model.DevicesModel
import dev.deskhand.app.model.PairingModel
import dev.deskhand.app.model.PhoneSession
import dev.deskhand.app.model.userMessage
import java.io.File
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.launch

/** The view models of one opened phone. */
class Models(
    /** The phone. */
    val session: PhoneSession,
) {
    /** Pair screen. */
    val pairing = PairingModel(session)

    /** Conversation screen. */
    val conversation = ConversationModel(session)

    /** Approvals screen. */
    val approvals = ApprovalsModel(session)

    /** Devices screen. */
    val devices = DevicesModel(session)
}

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
 * Opens the phone once per process (it survives rotation) and hands the Android-free view models
 * to the UI; forwards network changes to the core.
 */
class AppModels(app: Application) : AndroidViewModel(app) {
    private val opened = MutableStateFlow<Models?>(null)
    private val failure = MutableStateFlow<String?>(null)

    /** The models, once the phone is open. */
    val models: StateFlow<Models?> = opened

    /** Why the phone could not be opened (storage, key), in the core's words. */
    val openError: StateFlow<String?> = failure

    private val network = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(net: Network) {
            opened.value?.session?.onNetworkChanged()
        }

        override fun onLost(net: Network) {
            opened.value?.session?.onNetworkChanged()
        }
    }

    init {
        initPlatform("info", LogcatSink)
        viewModelScope.launch {
            try {
                val settings = PhoneSettings(
                    dataDir = File(app.filesDir, "phone").path,
                    deviceName = Build.MODEL,
                    platform = "android",
                    listen = null,
                    relay = null,
                    mdns = null,
                )
                val keys = KeystoreKeyProvider(File(app.filesDir, "device-key.wrapped"))
                opened.value = Models(PhoneSession.open(settings, keys, viewModelScope))
            } catch (e: ApiException) {
                failure.value = e.userMessage()
            }
        }
        app.getSystemService(ConnectivityManager::class.java).registerDefaultNetworkCallback(network)
    }

    override fun onCleared() {
        getApplication<Application>().getSystemService(ConnectivityManager::class.java)
            .unregisterNetworkCallback(network)
        // viewModelScope is cancelled now; the core closes on its own runtime.
        opened.value?.session?.phone?.stop()
    }
}
