package dev.deskhand.app

import android.app.Application
import android.net.ConnectivityManager
import android.net.Network
import androidx.lifecycle.AndroidViewModel
import dev.deskhand.app.model.ApprovalsModel
import dev.deskhand.app.model.ConversationModel
import dev.deskhand.app.model.DevicesModel
import dev.deskhand.app.model.PairingModel
import dev.deskhand.app.model.PhoneSession
import dev.deskhand.app.model.TaskModel
import kotlinx.coroutines.flow.StateFlow

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

    private val tasks = HashMap<String, TaskModel>()

    /**
     * The model of task [taskId]'s screen: one per task for the life of the process (each
     * keeps a derived state running, and the blobs it fetched).
     */
    fun task(taskId: String): TaskModel = synchronized(tasks) {
        tasks.getOrPut(taskId) { TaskModel(session, taskId) }
    }
}

/**
 * Hands the Android-free view models of the process's phone ([DeskhandApp.models]) to the UI,
 * and forwards network changes to the core while the app is on screen (in the background,
 * sync is off and wake-up pushes bring the changes).
 */
class AppModels(app: Application) : AndroidViewModel(app) {
    private val deskhand = app as DeskhandApp

    /** The models, once the phone is open. */
    val models: StateFlow<Models?> = deskhand.models

    /** Why the phone could not be opened (storage, key), in the core's words. */
    val openError: StateFlow<String?> = deskhand.openError

    private val network = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(net: Network) {
            if (deskhand.inForeground) deskhand.session.value?.onNetworkChanged()
        }

        override fun onLost(net: Network) {
            if (deskhand.inForeground) deskhand.session.value?.onNetworkChanged()
        }
    }

    init {
        app.getSystemService(ConnectivityManager::class.java).registerDefaultNetworkCallback(network)
    }

    override fun onCleared() {
        getApplication<Application>().getSystemService(ConnectivityManager::class.java)
            .unregisterNetworkCallback(network)
    }
}
