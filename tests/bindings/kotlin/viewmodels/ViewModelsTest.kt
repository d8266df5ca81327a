// The app's view models (android/app/src/main/java/dev/deskhand/app/model) on the JVM, through the
// real generated bindings and the real library, against a real `deskhand serve` on loopback with
// relays and mDNS off: what the Compose screens will drive. Run by `scripts/binding-tests viewmodels`.
package dev.deskhand.app.model

import deskhand.mobile.Delivery
import deskhand.mobile.KeyProvider
import deskhand.mobile.MessageRole
import deskhand.mobile.PhoneSettings
import deskhand.mobile.PhoneSnapshot
import deskhand.mobile.Risk
import deskhand.mobile.TaskStatus
import deskhand.mobile.Verdict
import deskhand.mobile.initPlatform
import deskhand.mobile.newDeviceSecret
import java.io.File
import java.net.DatagramSocket
import java.net.InetAddress
import java.nio.file.Files
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.cancel
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test

const val WAIT_MS = 30_000L

/** Waits until the state satisfies [pred]; fails naming [what] and the last state otherwise. */
suspend fun <T> StateFlow<T>.until(what: String, pred: (T) -> Boolean): T = try {
    withTimeout(WAIT_MS) { first(pred) }
} catch (e: TimeoutCancellationException) {
    throw AssertionError("timed out after $WAIT_MS ms waiting for $what; last state: $value")
}

/** [v], or a failed test saying [what] when it is null. */
fun <T> need(v: T?, what: String = "a value"): T = v ?: throw AssertionError("expected $what, got null")

/** What the app's Keystore-backed provider does: create the secret once, hand it back after. */
class FileKeys(private val file: File) : KeyProvider {
    override fun deviceSecret(): ByteArray {
        if (!file.exists()) file.writeBytes(newDeviceSecret())
        return file.readBytes()
    }
}

/** A `deskhand serve` with its own HOME and data directory on a fixed loopback port. */
class Desktop(private val root: File) {
    val home = File(root, "home").apply { mkdirs() }
    private val data = File(root, "desk")
    private val port = DatagramSocket(0, InetAddress.getLoopbackAddress()).use { it.localPort }
    private val config = File(File(root, "etc").apply { mkdirs() }, "desk.toml")
        .apply { writeText("roots = [\"${home.path}\"]\n") }
    private var proc: Process? = null

    /** Starts it (again, on the same data and port); its pairing code. */
    fun start(): String {
        val bin = System.getenv("DESKHAND_BIN") ?: "target/debug/deskhand"
        val pb = ProcessBuilder(
            bin, "serve", "--data", data.path, "--listen", "127.0.0.1:$port", "--relay", "off",
            "--mdns", "off", "--name", "vm-desktop", "--config", config.path,
        ).redirectErrorStream(true)
        pb.environment().apply {
            put("HOME", home.path)
            put("XDG_CONFIG_HOME", File(home, ".config").path)
            put("XDG_DATA_HOME", File(home, ".local/share").path)
            put("DESKHAND_LOG", "warn")
            remove("DISPLAY")
        }
        val p = pb.start()
        proc = p
        val out = p.inputStream.bufferedReader()
        val seen = StringBuilder()
        var payload: String? = null
        while (payload == null) {
            val line = out.readLine() ?: throw IllegalStateException("deskhand serve exited:\n$seen")
            seen.appendLine(line)
            if (line.startsWith("pairing payload: ")) payload = line.removePrefix("pairing payload: ").trim()
        }
        // Keep draining its output so that it never blocks on a full pipe.
        Thread { runCatching { out.forEachLine { } } }.apply { isDaemon = true }.start()
        return payload
    }

    /** Stops it as a user would (SIGTERM), killing it if it does not end in 15 s. */
    fun stop() {
        val p = proc ?: return
        p.destroy()
        if (!p.waitFor(15, TimeUnit.SECONDS)) {
            p.destroyForcibly()
            p.waitFor()
        }
        proc = null
    }
}

class ViewModelsTest {
    private lateinit var root: File
    private lateinit var desk: Desktop
    private lateinit var payload: String
    private lateinit var scope: CoroutineScope
    private lateinit var session: PhoneSession

    @BeforeEach
    fun setUp(): Unit = runBlocking {
        initPlatform("warn", null)
        root = Files.createTempDirectory("deskhand-vm-").toFile()
        desk = Desktop(root)
        payload = desk.start()
        scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
        val settings = PhoneSettings(
            dataDir = File(root, "phone").path, deviceName = "vm-phone", platform = "android",
            listen = "127.0.0.1:0", relay = "off", mdns = false,
        )
        session = PhoneSession.open(settings, FileKeys(File(root, "phone.key")), scope)
    }

    @AfterEach
    fun tearDown(): Unit = runBlocking {
        try {
            session.close()
        } finally {
            scope.cancel()
            desk.stop()
            root.deleteRecursively()
        }
    }

    /** Pairs through the pairing model, as the pair screen does with a scanned code. */
    private suspend fun pair(): PairingModel {
        val pairing = PairingModel(session)
        assertEquals("vm-desktop", pairing.pair(payload).await(), "pairing failed: ${pairing.error.value}")
        pairing.state.until("the workspace received") { it.ready }
        return pairing
    }

    @Test
    fun `pairs from a pasted code and shows the core's refusals`(): Unit = runBlocking {
        val pairing = PairingModel(session)
        val devices = DevicesModel(session)
        assertFalse(pairing.state.value.paired)
        assertEquals(DesktopPresence.NotPaired, devices.state.value.presence)

        // Sending before pairing: the core's refusal, nothing written.
        val conversation = ConversationModel(session)
        assertNull(conversation.send("too early").await())
        assertEquals("this phone is not paired with a desktop", conversation.error.value)

        // A mangled code: the core's own message, still unpaired.
        assertNull(pairing.pair("deskhand://pair?v=1&id=nonsense").await())
        val refusal = pairing.state.until("the refusal shown") { it.error != null }
        assertTrue(refusal.error!!.isNotBlank() && !refusal.error!!.startsWith("reason="), "error shown: $refusal")
        assertFalse(refusal.paired)

        // The real code, pasted with the whitespace a paste leaves around it.
        assertEquals("vm-desktop", pairing.pair("  $payload\n").await())
        val paired = pairing.state.until("paired and ready") { it.paired && it.ready }
        assertEquals("vm-desktop", paired.desktopName)
        assertNull(paired.error, "a success clears the error")
        val online = devices.state.until("the desktop online on the devices screen") { it.presence is DesktopPresence.Online }
        assertEquals(session.deviceId, online.deviceId)
        assertEquals("vm-desktop", online.desktopName)
        // The devices paired with the desktop: this phone, as the desktop registered it.
        val listed = devices.state.until("this phone among the paired devices") { it.pairedDevices.isNotEmpty() }
        assertEquals(
            listOf(Triple(session.deviceId, online.deviceName, true)),
            listed.pairedDevices.map { Triple(it.id, it.name, it.thisDevice) },
        )
        assertNull(listed.pairedDevices[0].revokedAtMs)

        // The same code a second time: the desktop refuses (single use), said in its words.
        val other = PhoneSession.open(
            PhoneSettings(
                dataDir = File(root, "phone2").path, deviceName = "vm-phone-2", platform = "android",
                listen = "127.0.0.1:0", relay = "off", mdns = false,
            ),
            FileKeys(File(root, "phone2.key")), scope,
        )
        try {
            val second = PairingModel(other)
            assertNull(second.pair(payload).await())
            val used = second.error.value ?: ""
            assertTrue("already used" in used, "reused code refused with: $used")
            assertFalse(second.state.value.paired)
        } finally {
            other.close()
        }
    }

    @Test
    fun `sends a message and sees the desktop's reply`(): Unit = runBlocking {
        pair()
        val conversation = ConversationModel(session)
        conversation.state.until("the desktop online and healthy") {
            it.presence is DesktopPresence.Online && it.health != null && it.canSend
        }
        assertFalse(conversation.state.value.health!!.stale)

        assertNull(conversation.send("   ").await(), "blank text is refused")
        assertTrue(!conversation.error.value.isNullOrBlank())
        assertTrue(session.snapshot.value.messages.none { it.mine }, "nothing was written")

        val id = need(conversation.send("list ~").await())
        assertNull(conversation.error.value)
        val mine = conversation.state.until("the message shown") { s -> s.messages.any { it.id == id } }
            .messages.first { it.id == id }
        assertTrue(mine.mine && mine.role == MessageRole.USER && mine.text == "list ~")
        val tid = conversation.taskIdOf(id)
        val done = conversation.state.until("the agent's reply and the message delivered") { s ->
            s.messages.any { it.taskId == tid && it.role == MessageRole.AGENT } &&
                s.messages.first { it.id == id }.delivery == Delivery.SYNCED
        }
        val reply = done.messages.first { it.taskId == tid && it.role == MessageRole.AGENT }
        assertTrue(reply.text.startsWith("~:"), "reply: ${reply.text}")
        assertFalse(reply.mine)
        // A new desktop holds this week only: nothing older to load.
        assertEquals(0, done.olderWeeks)
        assertEquals(0, conversation.loadOlder().await())
        conversation.state.until("loading older messages over") { !it.loadingOlder }

        val task = TaskModel(session, tid)
        val state = task.state.until("the task done with its progress") { it.finished }
        assertEquals(TaskStatus.DONE, state.task!!.status)
        assertTrue(state.task!!.events.isNotEmpty())
        assertEquals("list ~", state.task!!.prompt)
    }

    @Test
    fun `approves from the approvals list, high risk only after biometrics`(): Unit = runBlocking {
        pair()
        val conversation = ConversationModel(session)
        val approvals = ApprovalsModel(session)

        // Medium risk: approved straight from the list.
        val target = File(desk.home, "file.txt").apply { writeText("bye\n") }
        val trash = conversation.taskIdOf(need(conversation.send("trash ~/file.txt").await()))
        val item = approvals.state.until("the trash request in the list") { s ->
            s.pending.any { it.request.taskId == trash }
        }.pending.first { it.request.taskId == trash }
        assertEquals("trash", item.request.tool)
        assertTrue("file.txt" in item.request.args, "the exact action: ${item.request.args}")
        assertEquals(Risk.MEDIUM, item.risk)
        assertFalse(item.needsBiometric)
        assertTrue(item.canApprove)
        assertTrue(target.exists(), "nothing may happen before the approval")
        assertEquals(true, approvals.approve(item.request.id).await())
        TaskModel(session, trash).state.until("the trash task done") { it.task?.status == TaskStatus.DONE }
        assertFalse(target.exists(), "the approved trash did not happen")
        val after = approvals.state.until("the request resolved") { s ->
            s.pending.none { it.request.id == item.request.id } && s.resolved.any { it.id == item.request.id }
        }
        assertEquals(deskhand.mobile.Verdict.APPROVE, after.resolved.first { it.id == item.request.id }.myVerdict)

        // High risk: refused without the biometric confirmation, run after it; its output is a blob.
        val run = conversation.taskIdOf(need(conversation.send("run seq 1 20000").await()))
        val high = approvals.state.until("the run request in the list") { s ->
            s.pending.any { it.request.taskId == run }
        }.pending.first { it.request.taskId == run }
        assertEquals(Risk.HIGH, high.risk)
        assertTrue(high.needsBiometric)
        assertEquals(false, approvals.approve(high.request.id).await())
        assertEquals(ApprovalsModel.BIOMETRIC_NEEDED, approvals.error.value)
        assertNull(session.snapshot.value.pendingApprovals.first { it.id == high.request.id }.myVerdict)
        val task = TaskModel(session, run)
        val waiting = task.state.until("the run waiting for its approval") { it.waitingApprovals.isNotEmpty() }
        assertEquals(TaskStatus.WAITING_APPROVAL, waiting.task?.status)
        assertEquals(listOf(high.request.id), waiting.waitingApprovals.map { it.id })
        assertEquals(true, approvals.approve(high.request.id, biometricConfirmed = true).await())
        assertNull(approvals.error.value)
        val done = task.state.until("the run's result with its blob") { it.finished && it.blobs.isNotEmpty() }
        assertEquals(TaskStatus.DONE, done.task!!.status)
        val (blob, notYet) = done.blobs.first()
        assertEquals(BlobState.NotFetched, notYet)
        val bytes = need(task.fetchBlob(blob.hash).await(), "fetch failed: ${task.error.value}")
        val expected = (1..20000).joinToString("") { "$it\n" }.toByteArray()
        assertTrue(bytes.contentEquals(expected), "blob of ${bytes.size} bytes differs")
        val shown = task.state.until("the blob shown as fetched") { s -> s.blobs.first().second is BlobState.Fetched }
        assertEquals(blob.size.toInt(), (shown.blobs.first().second as BlobState.Fetched).bytes.size)
        assertNull(task.fetchBlob("not-a-hash").await())
        assertTrue(task.blobStates.value["not-a-hash"] is BlobState.Failed)

        // Deciding again on a resolved request: the core's refusal.
        assertNull(approvals.deny(item.request.id).await())
        assertTrue(!approvals.error.value.isNullOrBlank())
    }

    @Test
    fun `presence goes offline and back, and a message written meanwhile is delivered`(): Unit = runBlocking {
        pair()
        val conversation = ConversationModel(session)
        val devices = DevicesModel(session)
        conversation.state.until("online") { it.presence is DesktopPresence.Online }

        desk.stop()
        val offline = conversation.state.until("presence offline after the desktop stopped") {
            it.presence is DesktopPresence.Offline
        }
        assertFalse(offline.inSync)

        val id = need(conversation.send("help").await(), "writing offline: ${conversation.error.value}")
        val pending = conversation.state.until("the offline message shown") { s -> s.messages.any { it.id == id } }
        assertEquals(Delivery.PENDING, pending.messages.first { it.id == id }.delivery)
        devices.state.until("the unsent count") { it.unsent >= 1 }
        // Forgetting now would lose the message: the core refuses and says so.
        assertEquals(null, devices.forgetDesktop().await())
        assertTrue(!devices.error.value.isNullOrBlank(), "forget refused with a reason")
        assertEquals("vm-desktop", session.snapshot.value.desktop?.name, "still paired")

        desk.start()
        session.onForeground()
        val tid = conversation.taskIdOf(id)
        val back = conversation.state.until("online again, the message delivered and answered") { s ->
            s.presence is DesktopPresence.Online &&
                s.messages.first { it.id == id }.delivery == Delivery.SYNCED &&
                s.messages.any { it.taskId == tid && it.role == MessageRole.AGENT }
        }
        assertTrue(back.messages.first { it.taskId == tid && it.role == MessageRole.AGENT }.text.startsWith("Commands"))
        devices.state.until("nothing unsent") { it.unsent == 0L }

        // In the background nothing is sent; coming to the foreground syncs before its job ends.
        session.onBackground()
        conversation.state.until("offline in the background") { it.presence !is DesktopPresence.Online }
        val later = need(conversation.send("list ~").await(), "writing in the background: ${conversation.error.value}")
        val shown = session.snapshot.until("the background message shown") { s -> s.messages.any { it.id == later } }
        assertEquals(Delivery.PENDING, shown.messages.first { it.id == later }.delivery)
        withTimeout(WAIT_MS) { session.onForeground().join() }
        // The core's state right after the job (the listener's copy may follow a moment later).
        assertEquals(Delivery.SYNCED, session.phone.snapshot().messages.first { it.id == later }.delivery,
            "onForeground's sync ended with the message still pending")

        // A network change reconnects too (after a stop, as when the app was in the background).
        session.onBackground()
        conversation.state.until("offline while stopped") { it.presence !is DesktopPresence.Online }
        session.onNetworkChanged()
        conversation.state.until("online after the network change") { it.presence is DesktopPresence.Online }
        devices.state.until("nothing unsent before forgetting") { it.unsent == 0L }

        // With nothing unsent, forgetting works.
        assertEquals(true, devices.forgetDesktop().await(), "forget: ${devices.error.value}")
        devices.state.until("not paired") { it.presence == DesktopPresence.NotPaired }
    }

    @Test
    fun `wake-up syncs notify a pending approval and a finished task once each`(): Unit = runBlocking {
        pair()
        val conversation = ConversationModel(session)
        val approvals = ApprovalsModel(session)
        val notifier = WakeUpNotifier()
        // The app was on screen while pairing: what exists now counts as seen.
        notifier.markSeen(session.phone.snapshot())

        val target = File(desk.home, "wake.txt").apply { writeText("bye\n") }
        val id = need(conversation.send("trash ~/wake.txt").await())
        conversation.state.until("the message delivered") { s -> s.messages.any { it.id == id && it.delivery == Delivery.SYNCED } }
        val tid = conversation.taskIdOf(id)

        // The app goes to the background; each push then runs one sync that leaves sync off.
        session.onBackground()
        val inBackground = { false }
        suspend fun wakeUntil(what: String, pred: (PhoneSnapshot) -> Boolean): PhoneSnapshot {
            val deadline = System.currentTimeMillis() + WAIT_MS
            while (true) {
                val failed = session.syncOnce(keepRunning = inBackground)
                val s = session.phone.snapshot()
                assertFalse(s.syncing, "a wake-up sync in the background must leave sync off")
                if (failed == null && pred(s)) return s
                if (System.currentTimeMillis() > deadline) {
                    throw AssertionError("timed out after $WAIT_MS ms of wake-up syncs waiting for $what; last error: $failed")
                }
                delay(100)
            }
        }

        val asking = wakeUntil("the trash request") { s -> s.pendingApprovals.any { it.taskId == tid } }
        val request = asking.pendingApprovals.first { it.taskId == tid }
        val first = notifier.notices(asking)
        assertEquals(1, first.size, "one notice for one new request: $first")
        val notice = first.single()
        assertEquals(NoticeChannel.APPROVALS, notice.channel)
        assertEquals(request.summary, notice.text)
        assertEquals("Approval needed · medium risk", notice.title)
        assertEquals(tid, notice.taskId)
        assertTrue(notice.detail!!.contains("trash") && notice.detail!!.contains("wake.txt"), "the exact action: ${notice.detail}")
        // The next push for the same state: nothing again.
        assertEquals(emptyList<Notice>(), notifier.notices(wakeUntil("a second sync") { true }))
        // What the app persists: a fresh notifier from it does not repeat the request either.
        assertEquals(emptyList<Notice>(), WakeUpNotifier(notifier.remembered).notices(asking))
        assertTrue(target.exists(), "nothing may happen before the approval")

        assertEquals(emptyList<Int>(), notifier.outdated(asking), "the request still waits")

        // Approved from the notification's screen; the task's end wakes the phone again.
        assertEquals(true, approvals.approve(request.id).await())
        assertEquals(listOf(notice.notificationId), notifier.outdated(session.phone.snapshot()), "decided here: withdrawn")
        val done = wakeUntil("the task done") { s -> s.tasks.any { it.id == tid && it.status == TaskStatus.DONE } }
        assertEquals(listOf(notice.notificationId), notifier.outdated(done), "resolved: withdrawn")
        val finished = notifier.notices(done)
        assertEquals(1, finished.size, "one notice for the finished task, none for the decided request: $finished")
        assertEquals(NoticeChannel.TASKS, finished.single().channel)
        assertEquals("Task done", finished.single().title)
        assertEquals("trash ~/wake.txt", finished.single().text)
        assertEquals(emptyList<Notice>(), notifier.notices(wakeUntil("a last sync") { true }))
        assertEquals(emptyList<Int>(), notifier.outdated(done), "a resolved request is forgotten once withdrawn")
        assertFalse(target.exists(), "the approved trash did not happen")

        // The same document seen other ways: another final state, another phone's task, an
        // unreceived workspace, a request this phone already decided.
        val task = done.tasks.first { it.id == tid }
        val failed = done.copy(tasks = listOf(task.copy(id = "t-failed", status = TaskStatus.FAILED)))
        assertEquals(listOf("Task failed"), notifier.notices(failed).map { it.title })
        val others = done.copy(tasks = listOf(task.copy(id = "t-other", mine = false)))
        assertEquals(emptyList<Notice>(), notifier.notices(others))
        val early = asking.copy(workspaceReceived = false)
        assertEquals(emptyList<Notice>(), WakeUpNotifier().notices(early))
        val decided = asking.copy(pendingApprovals = listOf(request.copy(myVerdict = Verdict.DENY)))
        assertEquals(emptyList<Notice>(), WakeUpNotifier().notices(decided))
        val fresh = WakeUpNotifier()
        fresh.markSeen(asking)
        assertEquals(emptyList<Notice>(), fresh.notices(asking), "seen on screen: not notified")
    }
}
